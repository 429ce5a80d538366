"""No duplicate objects and no redundant regions in what a barely trained model pre-draws, at any score threshold.

The oracle rasterises the returned percent points itself (a pixel is inside when its centre is, by even-odd ray
casting written in this file), never with the project's geometry code.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from backend.regions import task_regions
from backend.settings import Settings
from combined_coco.config_from_description import config_from_description
from combined_coco.geometry import suppress_overlaps
from combined_coco.schema import Schema
from multitask import defaults
from multitask.inference import TorchvisionPredictor, distinct_masks
from multitask.synthetic import SCENE_SCHEMA, synthetic_coco, write_synthetic_dataset
from multitask.train import TrainConfig, train

SIZE = 128


def _square(x: int, y: int, side: int) -> np.ndarray:
    mask = np.zeros((100, 100), bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_mask_nms_keeps_the_higher_score_of_same_label_overlaps() -> None:
    a, b = _square(10, 10, 40), _square(14, 10, 40)  # IoU 36/44 = 0.82
    c = _square(30, 10, 40)  # IoU with a: 20/60 = 0.33
    assert distinct_masks([1, 1], [0.6, 0.9], [a, b], 0.5) == [1]
    assert distinct_masks([1, 2], [0.6, 0.9], [a, b], 0.5) == [0, 1]  # another label: another object
    assert distinct_masks([1, 1], [0.9, 0.6], [a, c], 0.5) == [0, 1]
    assert distinct_masks([1, 1], [0.9, 0.6], [a, b], None) == [0, 1]
    assert distinct_masks([1, 1], [0.9, 0.6], [a, b], 0.9) == [0, 1]
    empty = np.zeros((100, 100), bool)
    assert distinct_masks([1, 1, 1], [0.9, 0.8, 0.7], [empty, empty, a], 0.5) == [0, 1, 2]


def test_suppression_is_greedy_by_score() -> None:
    """A suppressed item suppresses nothing: 0 drops 1, so 2 (which overlaps only 1) stays."""
    overlaps = {(0, 1): 0.8, (1, 2): 0.8, (0, 2): 0.1}

    def iou(i: int, j: int) -> float:
        return overlaps[min(i, j), max(i, j)]

    assert suppress_overlaps(["x"] * 3, [0.9, 0.8, 0.7], iou, 0.5) == [0, 2]


def test_the_backend_and_the_cli_default_to_the_same_mask_nms() -> None:
    assert Settings().mask_nms_iou == defaults.MASK_NMS_IOU == 0.5
    assert Settings.from_env({"MASK_NMS_IOU": "1"}).mask_nms_iou == 1.0
    with pytest.raises(ValueError, match="MASK_NMS_IOU"):
        Settings.from_env({"MASK_NMS_IOU": "0"})


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 steps from random weights on synthetic scenes: many overlapping low-score detections."""
    root = tmp_path_factory.mktemp("barely-trained")
    dataset = write_synthetic_dataset(root / "data", num_images=8, size=SIZE, seed=0, scenes=True)
    config = TrainConfig(
        dataset=str(dataset), output_dir=str(root / "run"), steps=40, batch_size=2, lr=0.01, warmup_steps=8,
        min_size=SIZE, max_size=SIZE, init="none", checkpoint_every=10**6, device="cpu",
    )  # fmt: skip
    return train(config)


def _raster(points: list[list[float]]) -> np.ndarray:
    """The polygon's mask: pixels whose centre is inside it (even-odd ray casting, written here)."""
    xy = np.asarray(points, float) / 100 * SIZE
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    inside = np.zeros((SIZE, SIZE), bool)
    for (x1, y1), (x2, y2) in zip(xy, np.roll(xy, -1, 0)):
        if y1 == y2:
            continue
        crosses = (y1 > ys) != (y2 > ys)
        inside ^= crosses & (xs < x1 + (ys - y1) * (x2 - x1) / (y2 - y1))
    return inside


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _same_label_overlaps(regions: list[dict]) -> list[float]:
    polygons = [r for r in regions if r["type"] == "polygonlabels"]
    return [
        _iou(_raster(a["value"]["points"]), _raster(b["value"]["points"]))
        for a, b in itertools.combinations(polygons, 2)
        if a["value"]["polygonlabels"] == b["value"]["polygonlabels"]
    ]


@pytest.mark.slow
def test_no_duplicates_and_no_rectangles_under_polygons_at_threshold_0_05(barely_trained: Path) -> None:
    """A config with RectangleLabels for every label (as the shipped ones): no rectangle is sent for an object
    with a polygon, and no two same-label polygons overlap by IoU > 0.5; without mask NMS they would."""
    categories = {c.name: list(c.keypoints) for c in SCENE_SCHEMA.categories}
    project = Schema.from_label_config(
        config_from_description({"title": "t", "rectangles": True, "categories": categories})
    )
    assert project.controls is not None and project.controls.rectangle_labels == project.controls.polygon_labels
    _, pixels = synthetic_coco(6, SIZE, seed=77, scenes=True)
    tolerance = Settings().polygon_tolerance_px
    polygons = 0
    for nms, expect_duplicates in ((defaults.MASK_NMS_IOU, False), (None, True)):
        predictor = TorchvisionPredictor.from_checkpoint(barely_trained, score_threshold=0.05, mask_nms_iou=nms)
        overlaps = []
        for image in pixels:
            instances = predictor.predict([image])[0]
            if nms is not None:  # the predictor's own output (`multitask predict`): masks
                for a, b in itertools.combinations(instances, 2):
                    assert a.label != b.label or _iou(a.mask, b.mask) <= nms
            regions = task_regions(instances, predictor.schema, project, SIZE, SIZE, tolerance, nms)
            assert not [r for r in regions if r["type"] == "rectanglelabels"]
            polygons += sum(r["type"] == "polygonlabels" for r in regions)
            overlaps += _same_label_overlaps(regions)
        assert (max(overlaps, default=0.0) > 0.5) == expect_duplicates, (nms, sorted(overlaps)[-5:])
    assert polygons > 30  # a model that returns nothing proves nothing
