"""COCO evaluation: ground truth fed back as detections scores 1.0, perturbed predictions less."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from combined_coco.dataset import decode_segmentation
from multitask.evaluate import coco_evaluate, format_table, oks_sigmas
from multitask.synthetic import SCHEMA


def _as_detections(coco: dict, shift: float = 0.0) -> list[dict]:
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    dets = []
    for ann in coco["annotations"]:
        height, width = sizes[ann["image_id"]]
        mask = decode_segmentation(ann["segmentation"], height, width)
        mask = np.roll(mask, int(shift), axis=1)
        rle = mask_utils.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        x, y, w, h = ann["bbox"]
        keypoints = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        keypoints[:, 0] += shift * (keypoints[:, 2] > 0)
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "score": 1.0,
                "bbox": [x + shift, y, w, h],
                "segmentation": rle,
                "keypoints": keypoints.ravel().tolist(),
            }
        )
    return dets


@pytest.fixture
def coco(synthetic_json: Path) -> dict:
    return json.loads(synthetic_json.read_text())


def test_ground_truth_as_predictions_scores_one(coco: dict) -> None:
    results = coco_evaluate(coco, _as_detections(coco), SCHEMA)
    for iou_type in ("bbox", "segm", "keypoints"):
        assert results[iou_type]["AP"] == pytest.approx(1.0), iou_type
    assert results["oks_sigmas"] == {"left": 0.05, "right": 0.05, "top": 0.05}
    table = format_table(results)
    assert "keypoint OKS sigma: 0.05 for all keypoints" in table


def test_perturbed_predictions_score_less_and_sigma_matters(coco: dict) -> None:
    shifted = _as_detections(coco, shift=4.0)
    narrow = coco_evaluate(coco, shifted, SCHEMA, sigmas=0.025)
    wide = coco_evaluate(coco, shifted, SCHEMA, sigmas={"left": 0.2, "right": 0.2, "top": 0.2})
    for iou_type in ("bbox", "segm", "keypoints"):
        assert narrow[iou_type]["AP"] < 1.0, iou_type
    assert wide["keypoints"]["AP"] > narrow["keypoints"]["AP"]
    assert json.dumps(narrow)  # saved as JSON as is


def test_sigma_forms() -> None:
    assert oks_sigmas(SCHEMA).tolist() == [0.05] * 3
    assert oks_sigmas(SCHEMA, [0.1, 0.2, 0.3]).tolist() == [0.1, 0.2, 0.3]
    assert oks_sigmas(SCHEMA, {"top": 0.1}).tolist() == [0.05, 0.05, 0.1]
    with pytest.raises(ValueError, match="unknown keypoints"):
        oks_sigmas(SCHEMA, {"nose": 0.1})
    with pytest.raises(ValueError, match="2 OKS sigmas for 3"):
        oks_sigmas(SCHEMA, [0.1, 0.2])
