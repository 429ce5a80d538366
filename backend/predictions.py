"""``/predict``: Label Studio tasks in, one prediction per task out, from the project's published model."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from backend.labelstudio import MediaError
from backend.model_store import ModelCache, PredictorLoader, load_multitask_predictor
from backend.regions import task_regions
from backend.settings import Settings
from combined_coco.schema import Schema

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    def fetch_image(self, url: object, task_id: Any = None) -> np.ndarray: ...


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


def predictor_loader(settings: Settings) -> PredictorLoader:
    """The real model loader with the thresholds of ``settings`` (server and pre-annotation worker alike)."""
    return functools.partial(
        load_multitask_predictor,
        score_threshold=settings.score_threshold,
        mask_threshold=settings.mask_threshold,
        keypoint_threshold=settings.keypoint_threshold,
        max_objects=settings.max_objects,
        mask_nms_iou=settings.mask_nms_iou,
    )


NO_VERSION_REASON = (
    "no model version yet: label a few tasks, then press Start Training (Settings > Model, the model's menu); "
    "predictions appear once the run publishes a version (GET /runs/<project> shows it)"
)


def empty_reason(detections: Sequence[Any], score_threshold: float) -> str:
    """Why one image got no regions, in words that say what to do.

    ``detections`` is the predictor's list for the image; ``multitask.inference.Detections`` also
    carries ``candidates``, the detections before the score threshold.
    """
    if detections:
        return (
            f"{len(detections)} detection(s) above SCORE_THRESHOLD={score_threshold:g} but none could be drawn "
            "(labels missing from the labeling config, or masks empty at MASK_THRESHOLD) -- "
            "check the labeling config or retrain"
        )
    candidates = getattr(detections, "candidates", None)
    if candidates is None:
        return f"no detection above SCORE_THRESHOLD={score_threshold:g} -- train longer or lower the threshold"
    if candidates == 0:
        return "the model found no object candidates at all -- train longer or label more images"
    return (
        f"0 of {candidates} detections above SCORE_THRESHOLD={score_threshold:g} -- train longer or lower the threshold"
    )


def image_regions(
    detections: Sequence[Any],
    model_schema: Schema,
    project_schema: Schema,
    width: int,
    height: int,
    settings: Settings,
    vertex_medians: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The regions of one image as the backend sends them (``/predict``, pre-annotation, the held-out edit cost):
    highest scores first, at most ``MAX_OBJECTS_PER_IMAGE``, outlines simplified (to about ``vertex_medians``,
    see :func:`labelled_vertices`) and duplicates suppressed."""
    found = sorted(detections, key=lambda inst: -float(inst.score))[: settings.max_objects]
    return task_regions(
        found,
        model_schema,
        project_schema,
        width,
        height,
        settings.polygon_tolerance_px,
        settings.mask_nms_iou,
        vertex_medians,
    )


def labelled_vertices(predictor: object) -> Mapping[str, float] | None:
    """Label -> median vertex count of its labelled polygons, as the predictor's run recorded it
    (:mod:`multitask.taught`); None for checkpoints from before it and for stand-in predictors."""
    taught = getattr(predictor, "taught", None)
    return taught.polygon_vertices if taught is not None else None


@functools.lru_cache(maxsize=32)
def project_schema(label_config: str) -> Schema:
    """Parsed once per distinct config: Label Studio sends the full config with every request."""
    return Schema.from_label_config(label_config)


class PredictionService:
    """Tasks -> images (through Label Studio) -> the project's model -> regions, one result per task.

    The one builder of prediction results: ``/predict`` and the pre-annotation after training
    (``backend.preannotation``) both call :meth:`predict`. A task whose image got no regions carries
    ``empty_reason`` (Label Studio ignores the extra key); the reason is also logged. Before the first
    version the answer holds no prediction at all, with :data:`NO_VERSION_REASON` as ``empty_reason``.
    """

    def __init__(self, cache: ModelCache, images: Callable[[], ImageSource], settings: Settings) -> None:
        self._cache = cache
        self._settings = settings
        self._images = images  # called per request, so a missing Label Studio config fails that request only
        # One forward pass at a time per process: concurrent passes on a few CPU cores only thrash.
        self._inference = threading.Lock()

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        tasks = payload.get("tasks") or []
        if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
            raise ValueError('\'tasks\' must be a list of Label Studio task objects ({"id": ..., "data": {...}})')
        if not isinstance(payload.get("label_config") or "", str):
            raise ValueError("'label_config' must be the project's labeling config as an XML string")
        project_id = project_id_of(payload)
        version, predictor = self._cache.get(project_id)
        if predictor is None:
            # Label Studio 1.23 reads each item of "results" as one prediction or as a list of a task's
            # predictions (ml/models.py): an empty list per task stores nothing and logs nothing, where a bare
            # "results": [] makes it log "results field must be a list with at least one item" for every
            # task an annotator opens. Nothing is stored, so the next open asks again.
            if tasks:
                log.info("project %s: %d task(s) get no prediction: %s", project_id, len(tasks), NO_VERSION_REASON)
            return {"results": [[] for _ in tasks], "model_version": version, "empty_reason": NO_VERSION_REASON}
        if not tasks:
            return {"results": [], "model_version": version}
        if not payload.get("label_config"):
            raise ValueError("the request has no label_config; Label Studio sends the project's labeling config")
        schema = project_schema(payload["label_config"])
        controls = schema.controls
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
                images.append(None)
                errors.append(str(exc))
        _log_some(logging.WARNING, f"project {project_id}: no usable image", [e for e in errors if e], len(tasks))
        with self._inference:
            # One image per forward pass: a batch pads its images to a common size, which moves the proposals
            # near the border, so a task's regions and its empty_reason would depend on the tasks it came with
            # (Label Studio sends one when a task is opened, the pre-annotation 16).
            instances = [predictor.predict([image])[0] for image in images if image is not None]
        vertex_medians = labelled_vertices(predictor)
        results = []
        empty: list[str] = []
        for task, image, error in zip(tasks, images, errors, strict=True):
            if image is None:
                results.append({"result": [], "score": 0.0, "model_version": version, "error": error})
                continue
            detections = instances.pop(0)
            height, width = image.shape[:2]
            regions = image_regions(detections, predictor.schema, schema, width, height, self._settings, vertex_medians)
            scores = [r["score"] for r in regions if "parentID" not in r]  # object regions, not their points
            item = {"result": regions, "score": float(np.mean(scores)) if scores else 0.0, "model_version": version}
            if not regions:
                item["empty_reason"] = empty_reason(detections, self._settings.score_threshold)
                empty.append(f"task {task.get('id')}: {item['empty_reason']}")
            results.append(item)
        _log_some(logging.INFO, f"project {project_id}: model {version} predicts nothing", empty, len(tasks))
        return {"results": results, "model_version": version}


LOGGED_EXAMPLES = 10  # per log line; each task's own message is in its result


def _log_some(level: int, what: str, problems: list[str], tasks: int) -> None:
    """One log line per request, however many tasks share a problem: a request of a million tasks
    with broken images must not write a million lines (each task's own message is in its result)."""
    if problems:
        shown = "; ".join(problems[:LOGGED_EXAMPLES]) + ("; ..." if len(problems) > LOGGED_EXAMPLES else "")
        log.log(level, "%s for %d of %d task(s): %s", what, len(problems), tasks, shown)
