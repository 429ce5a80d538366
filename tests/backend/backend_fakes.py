"""Stand-ins for the backend protocol tests: a fake predictor, a real HTTP media server, app builder.

The stand-in predictor exists only for the protocol tests (``/predict`` shapes, parentID wiring,
coordinates); everything model-related end to end is tested with the real model in
``tests/integration/test_backend_e2e.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from backend.app import create_app
from backend.model_store import ModelStore
from backend.settings import Settings
from combined_coco.schema import Schema
from multitask.engines import Predictor

REPO = Path(__file__).resolve().parents[2]
GENERIC = (REPO / "labeling_configs" / "generic.xml").read_text()
TOKEN = "media-test-token"


@dataclass
class FakeInstance:
    label: str
    score: float
    box: tuple[float, float, float, float]
    polygons: list[list[float]]
    keypoints: np.ndarray
    keypoint_present: np.ndarray
    category_id: int = 0
    mask: np.ndarray | None = None


@dataclass
class FakePredictor:
    """Same interface as ``multitask.engines.Predictor``; returns ``instances`` for every image."""

    schema: Schema
    instances: list[FakeInstance] = field(default_factory=list)
    calls: int = 0

    def predict(self, images: list[np.ndarray]) -> list[list[FakeInstance]]:
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        self.calls += 1
        return [list(self.instances) for _ in images]


def animal(schema: Schema, present: set[str] | None = None) -> FakeInstance:
    """An 'animal' square (32..96 px) with every keypoint at a known place, given a 128x64 image."""
    k = schema.num_keypoints
    keypoints = np.array([[40.0 + 4 * i, 16.0 + i, 0.9] for i in range(k)])
    flags = np.array([present is None or name in present for name in schema.keypoint_names])
    return FakeInstance(
        label="animal",
        score=0.8,
        box=(32.0, 16.0, 96.0, 48.0),
        polygons=[[32, 16, 96, 16, 96, 48, 32, 48], [0, 0, 2, 0, 2, 2]],
        keypoints=keypoints,
        keypoint_present=flags.astype(bool),
        category_id=1,
    )


def png_bytes(width: int = 128, height: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Backend:
    client: TestClient
    predictor: FakePredictor
    store: ModelStore
    loads: list[Path]

    def publish(self, project_id: int = 1) -> str:
        checkpoint = Path(self.store.root.url) / "fake.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"weights")
        return self.store.publish(project_id, checkpoint, {"note": "protocol test"})


def make_backend(settings: Settings, predictor: FakePredictor, redis_url: str | None = None) -> Backend:
    loads: list[Path] = []

    def loader(path: Path) -> Predictor:
        loads.append(path)
        return cast(Predictor, predictor)  # a stand-in: the same calls, FakeInstance for DetectedInstance

    app = create_app(settings, loader=loader, redis_url=redis_url or "unix:///nonexistent/redis.sock")
    return Backend(TestClient(app, raise_server_exceptions=False), predictor, ModelStore(settings.model_dir), loads)


def predict_payload(
    image: str = "/data/upload/1/cat.png", project: str = "1.1700000000", config: str = GENERIC
) -> dict:
    return {
        "tasks": [{"id": 11, "project": 1, "data": {"image": image}}],
        "project": project,
        "label_config": config,
        "params": {"login": None, "password": None, "context": None},
    }
