"""A task's prediction does not depend on the tasks sent with it.

Label Studio sends ``/predict`` one task when an annotator opens it; the pre-annotation after training
sends 16. Both go through ``PredictionService.predict``; batched forward passes pad images to one
size, which moved a real model's proposals (and so its regions, candidate counts and empty reasons)
with the company a task kept. A real untrained checkpoint through the engine's own loader, images of
different sizes from a real HTTP media server.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from backend.labelstudio import LabelStudioClient
from backend.model_store import ModelCache, ModelStore
from backend.predictions import PredictionService, predictor_loader
from backend.settings import Settings
from tests.backend.backend_fakes import GENERIC, TOKEN
from tests.support.backend import MediaServer, random_checkpoint

SIZES = [(224, 160), (480, 320), (160, 240), (640, 200)]


def _png(width: int, height: int, seed: int) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("threshold", [0.5, 0.05])
def test_alone_or_in_a_batch_a_task_gets_the_same_regions_and_reason(tmp_path: Path, threshold: float) -> None:
    files = {f"/data/upload/1/{i}.png": _png(w, h, i) for i, (w, h) in enumerate(SIZES)}
    media = MediaServer(TOKEN, files)
    try:
        settings = Settings(
            label_studio_url=media.url, label_studio_api_key=TOKEN, model_dir=tmp_path / "models",
            score_threshold=threshold, max_objects=50,
        )  # fmt: skip
        store = ModelStore(settings.model_dir)
        store.publish(1, random_checkpoint(tmp_path / "random.pt", seed=1), {})
        service = PredictionService(
            ModelCache(store, predictor_loader(settings)), lambda: LabelStudioClient(settings), settings
        )
        tasks = [{"id": i, "project": 1, "data": {"image": path}} for i, path in enumerate(files)]

        def predict(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return service.predict({"tasks": batch, "project": "1.1700000000", "label_config": GENERIC})["results"]

        together = predict(tasks)
        alone = [predict([task])[0] for task in tasks]
    finally:
        media.stop()
    assert any(item["result"] for item in together) or all("empty_reason" in item for item in together)
    for one, batched in zip(alone, together, strict=True):
        assert one.get("empty_reason") == batched.get("empty_reason")
        assert _without_ids(one["result"]) == _without_ids(batched["result"])


def _without_ids(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regions with their random ids replaced by positions (``parentID`` -> the parent's index)."""
    index = {region["id"]: i for i, region in enumerate(result)}
    return [
        {
            **{k: v for k, v in region.items() if k not in ("id", "parentID")},
            "parent": index.get(region.get("parentID")),
        }
        for region in result
    ]
