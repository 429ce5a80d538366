"""The real loader: a multitask checkpoint served with the backend's thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from backend.model_store import load_multitask_predictor
from multitask.inference import TorchvisionPredictor
from tests.support.backend import random_checkpoint


def test_loader_drops_low_scores_inside_the_model(tmp_path: Path) -> None:
    checkpoint = random_checkpoint(tmp_path / "random.pt", min_size=64, max_size=96)
    predictor = load_multitask_predictor(checkpoint, score_threshold=0.3, max_objects=7)
    assert isinstance(predictor, TorchvisionPredictor)
    heads: Any = predictor.model.roi_heads  # torchvision's RoIHeads (torchvision is untyped)
    assert heads.score_thresh == 0.3
    assert heads.detections_per_img == 7
    [instances] = predictor.predict([np.full((80, 96, 3), 128, np.uint8)])
    assert len(instances) <= 7 and all(inst.score >= 0.3 for inst in instances)
