"""validate_coco names the image/annotation at fault and catches what pycocotools would choke on."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from combined_coco.validate import validate_coco

GOOD = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
    "categories": [{"id": 1, "name": "gear", "keypoints": ["center", "tooth_ref"], "skeleton": [[1, 2]]}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [[10, 10, 50, 10, 50, 40]],
            "bbox": [10, 10, 40, 30],
            "area": 600.0,
            "keypoints": [30, 20, 2, 0, 0, 0],
            "num_keypoints": 1,
        }
    ],
}


def broken(path: str, value) -> dict:
    coco = copy.deepcopy(GOOD)
    *keys, last = path.split(".")
    target: Any = coco
    for k in keys:
        target = target[int(k)] if k.isdigit() else target[k]
    target[int(last) if last.isdigit() else last] = value
    return coco


def test_good_file_is_valid() -> None:
    assert validate_coco(GOOD) == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("images.0.width", 0, "image 1: width/height must be positive"),
        ("annotations.0.category_id", 5, "annotation 1 (image 1): category_id 5 is not a category"),
        ("annotations.0.segmentation", [], "annotation 1 (image 1): segmentation must be a non-empty list"),
        ("annotations.0.segmentation", [[1, 2, 3, 4]], "polygon 0 must be a flat list of >= 3"),
        ("annotations.0.bbox", [10, 10, 20, 30], "does not contain all polygon points"),
        ("annotations.0.bbox", [10, 10, 95, 30], "leaves the 100x80 image"),
        ("annotations.0.area", 5000.0, "exceeds its bbox area"),
        ("annotations.0.keypoints", [30, 20, 2], "keypoints must be 6 numbers"),
        ("annotations.0.keypoints", [30, 20, 3, 0, 0, 0], "keypoint 0 has visibility 3"),
        ("annotations.0.keypoints", [30, 20, 2, 5, 5, 0], "keypoint 1 is unlabeled (v=0) but has coordinates"),
        ("annotations.0.num_keypoints", 2, "num_keypoints is 2 but 1 keypoints are labeled"),
        ("categories.0.skeleton", [[1, 3]], "category 1: skeleton edge [1, 3]"),
        ("categories.0.id", 2, "categories[0]: ids must be 1..N"),
        ("annotations.0.segmentation", {"size": [80, 100], "counts": "xx"}, "not a valid compressed COCO RLE"),
        ("annotations.0.segmentation", {"size": [80, 100], "counts": [10, 20]}, "runs sum to 30, not 80 x 100"),
        ("annotations.0.segmentation", {"size": [100, 80], "counts": "xx"}, "RLE size [100, 80] is not [height,"),
    ],
)
def test_problems_name_the_culprit(path: str, value, message: str) -> None:
    problems = validate_coco(broken(path, value))
    assert any(message in p for p in problems), problems


def _rle_of_shape(h: int, w: int) -> str:
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.ones((h, w), dtype=np.uint8)))["counts"].decode()


_ZIGZAG = [c for i in range(40_002) for c in ((0.0, 80 * i / 40_002) if i % 2 else (100.0, 80 * i / 40_002))]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("images.0.width", 1e9, "image 1: 1e+09x80 exceeds 40000 px a side"),
        ("images.0.height", 40_001, "image 1: 100x40001 exceeds 40000 px a side"),
        ("images.0.width", float("inf"), "width/height must be positive numbers, got inf"),
        # Runs longer than the image: pycocotools' decoder would write past its buffer.
        (
            "annotations.0.segmentation",
            {"size": [80, 100], "counts": _rle_of_shape(200, 200)},
            "RLE runs sum to 40000, not 80 x 100",
        ),
        (
            "annotations.0.segmentation",
            {"size": [80, 100], "counts": [8000, 10**6]},
            "runs must be ints between 0 and height x width",
        ),
        ("annotations.0.segmentation", {"size": [80, 100], "counts": [4000, 4000, 1]}, "RLE runs sum to 8001"),
        ("annotations.0.segmentation", {"size": [80, 100], "counts": "0" * 3 + "o"}, "ends in the middle"),
        # Rasterizing walks 5 points per pixel of outline: 4 M px would be hundreds of MB in pycocotools.
        ("annotations.0.segmentation", [_ZIGZAG], "has an outline of 4000200 px (limit 4000000)"),
    ],
)
def test_refuses_what_pycocotools_cannot_take(path: str, value, message: str) -> None:
    problems = validate_coco(broken(path, value))
    assert any(message in p for p in problems), problems


def test_not_a_coco_dict() -> None:
    assert validate_coco([]) == ["top level must be an object, got list"]
    assert validate_coco({"images": []}) == ["'categories' must be a list", "'annotations' must be a list"]
