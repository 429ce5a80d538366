"""The project's own synthetic datasets pass the project's own validate (issue 12, item 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from combined_coco.validate import validate_coco
from multitask.synthetic import synthetic_coco, write_parts_dataset


@pytest.mark.parametrize(("images", "size", "seed"), [(4, 128, 0), (12, 64, 1), (6, 320, 2)])
def test_multitask_synthetic_is_valid(images: int, size: int, seed: int) -> None:
    coco, _ = synthetic_coco(images, size, seed)
    assert validate_coco(coco) == []


def test_augmentation_synthetic_is_valid(tmp_path: Path) -> None:
    path = write_parts_dataset(tmp_path, n_images=3, width=320, height=180, n_objects=8)
    assert validate_coco(json.loads(path.read_text())) == []
