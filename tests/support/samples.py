"""Where the tests' real sample data lives: inside the repository, so a plain clone runs every test."""

from __future__ import annotations

from pathlib import Path

# The quokka photo with hand-made annotations and a depth map, from imgaug 0.4.0 (MIT): see its README.md.
QUOKKA = Path(__file__).resolve().parents[1] / "data" / "quokka"
