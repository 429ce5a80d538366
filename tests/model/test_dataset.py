"""Combined COCO reading: global K, crowd skipped, RLE and polygons decoded, flips with the schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from multitask.dataset import CombinedCocoDataset, hflip
from multitask.synthetic import SCHEMA


def test_targets_follow_the_file(synthetic_json: Path) -> None:
    dataset = CombinedCocoDataset(synthetic_json)
    coco = json.loads(synthetic_json.read_text())
    image, target = dataset[1]
    anns = [a for a in coco["annotations"] if a["image_id"] == 2]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert target["labels"].tolist() == [1, 2]
    assert target["keypoints"].shape == (2, SCHEMA.num_keypoints, 3)
    assert target["keypoints"][1].abs().sum() == 0  # the plate has no keypoints
    # polygon (disc) and RLE (plate) both decode to their stated areas
    for mask, ann in zip(target["masks"], anns):
        assert abs(int(mask.sum()) - ann["area"]) <= 1
    x, y, w, h = anns[1]["bbox"]
    assert target["boxes"][1].tolist() == [x, y, x + w, y + h]


def test_crowd_and_per_category_layout(synthetic_json: Path, tmp_path: Path) -> None:
    coco = json.loads(synthetic_json.read_text())
    coco["categories"] = SCHEMA.to_coco_categories("per_category")
    coco["annotations"][0]["iscrowd"] = 1
    for ann in coco["annotations"]:
        if ann["category_id"] == 2:
            ann["keypoints"] = []
    path = tmp_path / "per_category.json"
    path.write_text(json.dumps(coco))
    for info in coco["images"]:
        (tmp_path / info["file_name"]).symlink_to(synthetic_json.parent / info["file_name"])
    dataset = CombinedCocoDataset(path)
    _, first = dataset[0]
    assert len(first["boxes"]) == 0 and first["keypoints"].shape == (0, 3, 3)
    _, second = dataset[1]
    expected = np.asarray(coco["annotations"][1]["keypoints"], np.float32).reshape(-1, 3)
    assert np.allclose(second["keypoints"][0].numpy(), expected)


def test_hflip_mirrors_geometry_and_swaps_left_right(synthetic_json: Path) -> None:
    image, target = CombinedCocoDataset(synthetic_json)[1]
    flipped_image, flipped = hflip(image, target, SCHEMA.flip_indices)
    width = image.shape[-1]
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.allclose(flipped["boxes"][:, 0], width - target["boxes"][:, 2])
    left, right, top = target["keypoints"][0]
    f_left, f_right, f_top = flipped["keypoints"][0]
    # the point that was "right" is now on the left side, and is called "left"
    assert torch.allclose(f_left[:2], torch.stack([width - right[0], right[1]]))
    assert torch.allclose(f_right[:2], torch.stack([width - left[0], left[1]]))
    assert torch.allclose(f_top[:2], torch.stack([width - top[0], top[1]]))
    assert flipped["keypoints"][1].abs().sum() == 0  # unlabeled stays (0, 0, 0)
    # masks and boxes still agree: the flipped mask's columns lie inside the flipped box
    cols = torch.nonzero(flipped["masks"][0])[:, 1]
    assert flipped["boxes"][0, 0] <= cols.min() + 0.5 and cols.max() + 0.5 <= flipped["boxes"][0, 2]
    twice_image, twice = hflip(flipped_image, flipped, SCHEMA.flip_indices)
    assert torch.equal(twice_image, image) and torch.allclose(twice["keypoints"], target["keypoints"])
