"""Several image entries may share one photo, but never with different content (issue 12, item 2)."""

from __future__ import annotations

import copy

from combined_coco.validate import validate_coco
from tests.converter.test_validate import GOOD


def _with_second_entry(**fields) -> dict:
    coco = copy.deepcopy(GOOD)
    coco["images"].append({**coco["images"][0], "id": 2, **fields})
    return coco


def test_two_entries_of_one_photo_with_the_same_size_are_valid() -> None:
    """Two tasks on one file, or two Label Studio annotations of one task."""
    assert validate_coco(_with_second_entry(ls_annotation_id=7)) == []


def test_two_originals_kept_by_augmentation_are_valid() -> None:
    coco = _with_second_entry(source_image_id=2, aug_copy=0)
    coco["images"][0].update(source_image_id=1, aug_copy=0)
    assert validate_coco(coco) == []


def test_one_file_with_two_sizes_is_refused() -> None:
    problems = validate_coco(_with_second_entry(width=50))
    assert problems == [
        "images 1, 2 share file_name 'a.jpg' but give different sizes (1: 100x80, 2: 50x80); one file has one size"
    ]


def test_augmented_copies_sharing_a_file_are_refused() -> None:
    coco = _with_second_entry(source_image_id=9, aug_copy=1)
    coco["images"][0].update(source_image_id=8, aug_copy=1)
    (problem,) = validate_coco(coco)
    assert problem.startswith("images 1, 2 share file_name 'a.jpg' and at least one is an augmented copy")
