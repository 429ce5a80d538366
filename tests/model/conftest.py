"""Shared fixtures for the model tests: a tiny synthetic dataset and a small light-backbone model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multitask.model import ModelConfig, build_model
from multitask.synthetic import SCHEMA, write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_images=3, size=128)


@pytest.fixture
def small_config() -> ModelConfig:
    """Light backbone on 128 px images; every box kept, at most 5 per image (stable counts in tests)."""
    return ModelConfig.for_schema(SCHEMA, min_size=128, max_size=128, box_score_thresh=0.0, detections_per_img=5)


@pytest.fixture
def small_model(small_config: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(small_config)
