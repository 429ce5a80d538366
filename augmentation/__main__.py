"""``python -m augmentation``: see :mod:`augmentation.cli`."""

from augmentation.cli import main

main()
