"""The torchvision engine: the project's own multi-task Mask/Keypoint R-CNN (``multitask.train``,
``multitask.evaluate``, ``multitask.inference``) behind the engine interface of :mod:`multitask.engines`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from combined_coco.schema import Schema
from multitask import defaults
from multitask.checkpoint import Checkpoint, save_checkpoint
from multitask.engines import ProgressCallback, Sigmas
from multitask.evaluate import evaluate_checkpoint
from multitask.inference import TorchvisionPredictor
from multitask.model import BACKBONES, ModelConfig, build_model
from multitask.taught import record as record_taught
from multitask.train import TrainConfig, pick_device
from multitask.train import train as _train

NAME = "torchvision"


def check(config: TrainConfig) -> None:
    if config.backbone not in BACKBONES:
        raise ValueError(f"backbone {config.backbone!r} unknown; choose one of {list(BACKBONES)}")
    if config.engine_opts:
        raise ValueError(f"engine_opts {config.engine_opts} are for other engines; the torchvision engine takes none")


def train(config: TrainConfig, on_progress: ProgressCallback | None = None) -> Path:
    check(config)
    checkpoint = _train(config, on_progress)
    record_taught(checkpoint, config.dataset, config.image_root, str(pick_device(config.device)))
    return checkpoint


def evaluate(
    checkpoint: str | Path,
    dataset: str | Path,
    image_root: str | Path | None = None,
    sigmas: Sigmas = None,
    device: str = "cpu",
    score_threshold: float = defaults.BOX_SCORE_FLOOR,
    max_detections: int | None = None,
) -> dict:
    return evaluate_checkpoint(checkpoint, dataset, image_root, sigmas, device, score_threshold, max_detections)


def load_predictor(
    checkpoint: str | Path, device: str = "cpu", score_threshold: float = defaults.SCORE_THRESHOLD, **options: Any
) -> TorchvisionPredictor:
    return TorchvisionPredictor.from_checkpoint(checkpoint, device=device, score_threshold=score_threshold, **options)


def random_checkpoint(
    schema: Schema, path: str | Path, backbone: str, min_size: int, max_size: int, seed: int = 0
) -> Path:
    torch.manual_seed(seed)
    config = ModelConfig.for_schema(schema, backbone=backbone, min_size=min_size, max_size=max_size)
    return save_checkpoint(Checkpoint("random-init", schema, config, build_model(config).state_dict()), path)
