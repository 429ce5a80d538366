"""Fixtures for the converter tests: the project's labeling configs as parsed schemas, and a one-task
conversion shortcut so each test states only the regions it is about."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from combined_coco.converter import ConversionResult, convert_tasks
from combined_coco.labelstudio import task
from combined_coco.schema import Schema

CONFIGS = Path(__file__).resolve().parents[2] / "labeling_configs"


@pytest.fixture(scope="session")
def generic() -> Schema:
    return Schema.from_label_config((CONFIGS / "generic.xml").read_text())


@pytest.fixture
def convert_one(generic: Schema) -> Callable[..., ConversionResult]:
    """Convert one task (id 7) holding ``results`` with the generic config."""

    def run(results: list[dict], schema: Schema | None = None, **kwargs) -> ConversionResult:
        return convert_tasks([task(7, "/data/upload/1/1a2b3c4d-img.jpg", results)], schema or generic, **kwargs)

    return run
