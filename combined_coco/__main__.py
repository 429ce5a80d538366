"""``python -m combined_coco ...``: same as the ``combined-coco`` console script."""

from combined_coco.cli import main

raise SystemExit(main())
