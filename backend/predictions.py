"""``/predict``: Label Studio tasks in, one prediction per task out, from the project's published model."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable, Protocol

import numpy as np

from backend.labelstudio import MediaError
from backend.model_store import ModelCache
from backend.regions import ProjectTarget, task_regions

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    def fetch_image(self, url: str, task_id: Any = None) -> np.ndarray: ...


def project_id_of(payload: dict[str, Any]) -> int:
    """Label Studio sends ``"project": "<id>.<created-at timestamp>"``; tasks carry ``project`` too."""
    raw = payload.get("project")
    if isinstance(raw, dict):
        raw = raw.get("id")
    if raw is None:
        tasks = payload.get("tasks")
        if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
            raw = tasks[0].get("project")
    try:
        return int(str(raw).split(".")[0])
    except (TypeError, ValueError):
        raise ValueError(f"cannot tell the Label Studio project from project={raw!r}") from None


@functools.lru_cache(maxsize=32)
def project_target(label_config: str) -> ProjectTarget:
    """Parsed once per distinct config: Label Studio sends the full config with every request."""
    return ProjectTarget.from_label_config(label_config)


class PredictionService:
    """Tasks -> images (through Label Studio) -> the project's model -> regions, one result per task."""

    def __init__(self, cache: ModelCache, images: Callable[[], ImageSource], max_objects: int) -> None:
        self._cache = cache
        self._max_objects = max_objects
        self._images = images  # called per request, so a missing Label Studio config fails that request only
        # One forward pass at a time per process: concurrent passes on a few CPU cores only thrash.
        self._inference = threading.Lock()

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        tasks = payload.get("tasks") or []
        if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
            raise ValueError("'tasks' must be a list of Label Studio task objects ({\"id\": ..., \"data\": {...}})")
        if not isinstance(payload.get("label_config") or "", str):
            raise ValueError("'label_config' must be the project's labeling config as an XML string")
        project_id = project_id_of(payload)
        version, predictor = self._cache.get(project_id)
        if predictor is None or not tasks:
            # Label Studio stores nothing for an empty list, so untrained projects get no empty predictions.
            return {"results": [], "model_version": version}
        if not payload.get("label_config"):
            raise ValueError("the request has no label_config; Label Studio sends the project's labeling config")
        target = project_target(payload["label_config"])
        controls = target.schema.controls
        assert controls is not None
        images: list[np.ndarray | None] = []
        errors: list[str | None] = []
        source: ImageSource = self._images()
        for task in tasks:
            try:
                data = task.get("data")
                url = data.get(controls.image_value) if isinstance(data, dict) else None
                images.append(source.fetch_image(url, task.get("id")))
                errors.append(None)
            except MediaError as exc:
                log.warning("%s", exc)
                images.append(None)
                errors.append(str(exc))
        with self._inference:  # the predictor batches internally; a 100-task request is one call
            instances = predictor.predict([im for im in images if im is not None])
        results = []
        for image, error in zip(images, errors):
            if image is None:
                results.append({"result": [], "score": 0.0, "model_version": version, "error": error})
                continue
            found = sorted(instances.pop(0), key=lambda inst: -float(inst.score))[: self._max_objects]
            height, width = image.shape[:2]
            regions = task_regions(found, predictor.schema, target, width, height)
            scores = [r["score"] for r in regions if "parentID" not in r]  # object regions, not their points
            results.append(
                {"result": regions, "score": float(np.mean(scores)) if scores else 0.0, "model_version": version}
            )
        return {"results": results, "model_version": version}

