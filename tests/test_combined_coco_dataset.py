"""combined_coco.dataset: files read in the global keypoint layout, atomic writes, RLE forms, the left/right swap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from combined_coco.dataset import (
    global_layout,
    read_combined_coco,
    rle_area_bbox,
    rle_decode,
    rle_encode,
    rle_merge,
    swap_left_right,
    write_atomic,
    write_json,
)
from combined_coco.schema import Category, Schema

SCHEMA = Schema(
    (Category(1, "animal", ("eye_left", "eye_right", "nose")), Category(2, "plate", ("corner",))),
    ("eye_left", "eye_right", "nose", "corner"),
    flip_pairs=((0, 1),),
)
GLOBAL_KEYPOINTS = [10, 11, 2, 20, 21, 1, 15, 30, 2, 0, 0, 0]


def _coco(layout: str) -> dict:
    animal = GLOBAL_KEYPOINTS if layout == "global" else GLOBAL_KEYPOINTS[:9]
    plate = [0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 2] if layout == "global" else [5, 6, 2]
    return {
        "info": {"keypoint_layout": layout},
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}],
        "categories": SCHEMA.to_coco_categories(layout),  # type: ignore[arg-type]
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "keypoints": animal, "num_keypoints": 3},
            {"id": 2, "image_id": 1, "category_id": 2, "keypoints": plate, "num_keypoints": 1},
            {"id": 3, "image_id": 1, "category_id": 2, "keypoints": [], "num_keypoints": 0},
        ],
    }


def test_a_per_category_file_is_read_in_the_global_layout(tmp_path: Path) -> None:
    for layout in ("global", "per_category"):
        write_json(tmp_path / f"{layout}.json", _coco(layout))
    per_category, schema = read_combined_coco(tmp_path / "per_category.json")
    expected, _ = read_combined_coco(tmp_path / "global.json")
    assert schema == SCHEMA
    assert per_category["categories"] == expected["categories"] == SCHEMA.to_coco_categories("global")
    assert [a["keypoints"] for a in per_category["annotations"]] == [a["keypoints"] for a in expected["annotations"]]
    assert per_category["info"]["keypoint_layout"] == "global"


def test_reading_does_not_change_the_caller_dict_and_checks_keypoint_counts() -> None:
    coco = _coco("per_category")
    global_layout(coco, SCHEMA)
    assert coco == _coco("per_category")
    coco["annotations"][0]["keypoints"] = GLOBAL_KEYPOINTS  # 4 keypoints for a category that lists 3
    with pytest.raises(ValueError, match="annotation 1: 4 keypoints, but category 1 lists 3"):
        global_layout(coco, SCHEMA)


def test_swap_left_right_uses_the_schema_permutation() -> None:
    keypoints = np.asarray(GLOBAL_KEYPOINTS, float).reshape(4, 3)
    swapped = swap_left_right(keypoints, SCHEMA.flip_indices)
    assert swapped[0].tolist() == [20, 21, 1] and swapped[1].tolist() == [10, 11, 2]
    assert np.array_equal(swapped[2:], keypoints[2:])
    batch = swap_left_right(np.stack([keypoints, keypoints]), SCHEMA.flip_indices)  # [N, K, 3] as in training
    assert np.array_equal(batch[1], swapped)


def test_write_atomic_replaces_whole_files_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    write_atomic(target, b"first")
    write_atomic(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"second"

    def fail(f: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"second" and [p.name for p in target.parent.iterdir()] == ["file.bin"]
    write_json(target, {"name": "Zoë"})
    assert json.loads(target.read_bytes()) == {"name": "Zoë"}


def test_rle_helpers_take_either_counts_form() -> None:
    mask = np.zeros((6, 7), np.uint8)
    mask[1:4, 2:6] = 1
    rle = rle_encode(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [6, 7]
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    uncompressed = {"size": [6, 7], "counts": [13, 3, 3, 3, 3, 3, 3, 3, 8]}
    for form in (rle, as_bytes, uncompressed):
        assert np.array_equal(rle_decode(form), mask)
        assert rle_area_bbox(form) == (12.0, [2.0, 1.0, 4.0, 3.0])
    assert rle_merge([rle, as_bytes]) == rle
