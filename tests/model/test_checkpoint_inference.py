"""Checkpoint round trip and the Predictor API the backend uses."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from combined_coco.geometry import mask_to_polygons
from combined_coco.images import read_image
from multitask.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from multitask.defaults import BOX_SCORE_FLOOR
from multitask.inference import DetectedInstance, TorchvisionPredictor
from multitask.model import ModelConfig
from multitask.synthetic import SCHEMA


@pytest.fixture
def checkpoint_path(small_model: torch.nn.Module, small_config: ModelConfig, tmp_path: Path) -> Path:
    state = Checkpoint("multitask-test-v1", SCHEMA, small_config, small_model.state_dict(), step=7)
    return save_checkpoint(state, tmp_path / "ck" / "last.pt")


def test_round_trip_keeps_outputs_schema_and_version(
    checkpoint_path: Path, small_model: torch.nn.Module, synthetic_json: Path
) -> None:
    assert [p.name for p in checkpoint_path.parent.iterdir()] == ["last.pt"]  # no temporary left behind
    loaded = load_checkpoint(checkpoint_path)
    assert loaded.schema == SCHEMA and loaded.model_version == "multitask-test-v1" and loaded.step == 7
    image = torch.from_numpy(read_image(synthetic_json.parent / "img_001.png")).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        expected = small_model.eval()([image])[0]
        got = loaded.build()([image])[0]
    assert len(expected["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks", "keypoints"):
        assert torch.allclose(expected[key], got[key]), key


def test_predictor_api(checkpoint_path: Path, synthetic_json: Path) -> None:
    predictor = TorchvisionPredictor.from_checkpoint(checkpoint_path, device="cpu", score_threshold=0.0)
    assert predictor.schema == SCHEMA and predictor.model_version == "multitask-test-v1"
    big = np.zeros((90, 160, 3), np.uint8)
    results = predictor.predict([read_image(synthetic_json.parent / "img_000.png"), big, big])
    assert len(results) == 3 and all(len(r) == 5 for r in results)
    inst = results[1][0]
    assert isinstance(inst, DetectedInstance)
    assert inst.mask.shape == (90, 160) and inst.mask.dtype == bool
    assert inst.keypoints.shape == (3, 3) and inst.keypoint_present.shape == (3,)
    x1, y1, x2, y2 = inst.box
    assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 90
    for instance in (i for r in results for i in r):
        applicable = SCHEMA.category_by_id(instance.category_id).keypoints
        assert instance.keypoint_present.tolist() == [n in applicable for n in SCHEMA.keypoint_names]
        assert instance.label == SCHEMA.category_by_id(instance.category_id).name
    assert TorchvisionPredictor.from_checkpoint(checkpoint_path, score_threshold=1.01).predict([big]) == [[]]


def test_an_empty_result_counts_the_candidates_under_the_threshold(checkpoint_path: Path) -> None:
    big = np.zeros((90, 160, 3), np.uint8)
    [everything] = TorchvisionPredictor.from_checkpoint(checkpoint_path, score_threshold=BOX_SCORE_FLOOR).predict([big])
    [none] = TorchvisionPredictor.from_checkpoint(checkpoint_path, score_threshold=1.01).predict([big])
    assert none == [] and none.candidates == len(everything) > 0
    assert everything.candidates == len(everything)


def test_limits_apply_inside_the_model_and_keep_the_same_objects(checkpoint_path: Path, synthetic_json: Path) -> None:
    """Stopping low scores in RoIHeads must not change which objects come back, only the time."""
    image = read_image(synthetic_json.parent / "img_000.png")
    everything = TorchvisionPredictor.from_checkpoint(checkpoint_path, score_threshold=0.0).predict([image])[0]
    cut = sorted(i.score for i in everything)[len(everything) // 2]
    fast = TorchvisionPredictor.from_checkpoint(checkpoint_path, score_threshold=cut, max_detections=2)
    heads: Any = fast.model.roi_heads  # torchvision's RoIHeads (torchvision is untyped)
    assert heads.score_thresh == cut and heads.detections_per_img == 2
    image.setflags(write=False)  # images decoded by PIL/cv2 may be read-only: no torch warning, no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fast.predict([image])[0]
    expected = [i for i in everything if i.score >= cut][:2]
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a.category_id == b.category_id
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert np.allclose(a.box, b.box, atol=1e-3)


def _rasterize(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)


def test_polygons_trace_the_outer_pixel_boundary() -> None:
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:40] = True
    mask[30:34, 5:9] = True
    polygons = mask_to_polygons(mask)
    assert sorted(sorted(zip(p[0::2], p[1::2])) for p in polygons) == [
        [(5.0, 30.0), (5.0, 34.0), (9.0, 30.0), (9.0, 34.0)],
        [(20.0, 10.0), (20.0, 20.0), (40.0, 10.0), (40.0, 20.0)],
    ]
    assert np.array_equal(_rasterize(polygons, 40, 60), mask)


def test_polygon_round_trip_on_a_rotated_ellipse() -> None:
    mask = np.zeros((100, 100), np.uint8)
    cv2.ellipse(mask, (50, 50), (30, 12), 30, 0, 360, 1, -1)
    mask = mask.astype(bool)
    back = _rasterize(mask_to_polygons(mask), 100, 100)
    assert (back & mask).sum() / (back | mask).sum() > 0.97


class _RunsCode:
    """A pickle that runs code on load (here: creates a file) — what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_not_executed(checkpoint_path: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = torch.load(checkpoint_path, weights_only=True)
    payload["training"] = {"hook": _RunsCode(marker)}
    planted = tmp_path / "planted.pt"
    torch.save(payload, planted)
    with pytest.raises(ValueError, match="objects other than tensors and plain values"):
        load_checkpoint(planted)
    assert not marker.exists()


def test_checkpoints_with_the_old_numpy_rng_state_still_load(checkpoint_path: Path, tmp_path: Path) -> None:
    payload = torch.load(checkpoint_path, weights_only=True)
    payload["training"] = {"rng": {"numpy": np.random.get_state()}}  # what training saved before
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert load_checkpoint(old).training["rng"]["numpy"][0] == "MT19937"
