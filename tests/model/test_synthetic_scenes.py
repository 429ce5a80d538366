"""The benchmark's synthetic scenes: a valid combined COCO with every class, keypoints on the outlines."""

from __future__ import annotations

import numpy as np

from combined_coco.validate import validate_coco
from multitask.synthetic import SCENE_SCHEMA, synthetic_coco


def test_scenes_are_valid_combined_coco_with_three_classes_on_texture() -> None:
    coco, pixels = synthetic_coco(6, 192, seed=3, scenes=True)
    assert validate_coco(coco) == []
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}
    assert len(coco["annotations"]) >= 3 * len(coco["images"])
    triangle = SCENE_SCHEMA.category("triangle")
    for ann in coco["annotations"]:
        kps = np.asarray(ann["keypoints"]).reshape(-1, 3)
        named = {SCENE_SCHEMA.keypoint_names[i] for i in np.flatnonzero(kps[:, 2] > 0)}
        assert named == set(SCENE_SCHEMA.category_by_id(ann["category_id"]).keypoints)
        if ann["category_id"] == triangle.id:  # the keypoints are the outline's corners, left of right
            corners = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
            assert np.allclose(kps[3:6, :2], corners, atol=0.01)
            assert kps[4, 0] < kps[5, 0]
    background = pixels[0][:, :, 1].astype(float)
    assert background.std() > 20  # texture and clutter, not a flat grey


def test_scenes_are_reproducible_and_leave_the_plain_sample_unchanged() -> None:
    a, pa = synthetic_coco(2, 128, seed=5, scenes=True)
    b, pb = synthetic_coco(2, 128, seed=5, scenes=True)
    assert a == b and all(np.array_equal(x, y) for x, y in zip(pa, pb))
    plain, _ = synthetic_coco(2, 128, seed=5)
    assert {c["name"] for c in plain["categories"]} == {"disc", "plate"}
