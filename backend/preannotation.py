"""After a version is published: its predictions, written to the project's tasks that nobody annotated yet.

Annotators then open a task and find the pre-annotation already there, and *Settings > Predictions*
lists the version, without anyone pressing "Retrieve Predictions". The results come from the same
:class:`backend.predictions.PredictionService` that answers ``/predict`` (one builder), are written
in batches through Label Studio's import-predictions API tagged with the version, and the project's
prelabeling version is moved to the new one (unless someone chose a version we did not publish).
Each task written gets exactly one prediction of ours, the new version's: the predictions earlier
versions left there are deleted, and a version that finds nothing writes an empty one, so no
annotator starts from a previous version's false positives.

Pre-annotation is a courtesy of the run, not part of it: any failure is logged and reported in the
run status (``GET /runs/<project>`` -> ``training.preannotation``), and the version stays published.
``PREANNOTATE_AFTER_TRAINING=false`` turns it off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from backend.labelstudio import LabelStudioClient
from backend.model_store import ModelCache, ModelStore
from backend.predictions import PredictionService, predictor_loader
from backend.settings import Settings

log = logging.getLogger(__name__)

BATCH_TASKS = 16  # tasks per forward pass and per import request: a few MB of JSON at most
MAX_REASONS = 20  # empty-prediction reasons kept in the run status; the log has them all

# Data Manager filter: tasks without a (non-cancelled) annotation.
_UNANNOTATED = json.dumps({"filters": {"conjunction": "and", "items": [
    {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
]}})  # fmt: skip


def preannotate_after_publish(
    project_id: int, version: str, settings: Settings, store: ModelStore, report: Callable[..., bool]
) -> dict[str, Any]:
    """Write ``version``'s predictions to the unannotated tasks; returns the summary for the run status."""
    if not settings.preannotate_after_training:
        return {"state": "off"}
    report(phase="preannotating")
    try:
        summary = _preannotate(project_id, version, settings, store, report)
    except Exception as exc:  # noqa: BLE001 -- never fails the published version; the reason goes to the status
        log.exception("project %s: pre-annotating tasks with %s failed", project_id, version)
        return {
            "state": "failed",
            "error": f"pre-annotation failed ({exc}); the version is published, "
            "use Retrieve Predictions in the Data Manager instead",
        }
    log.info("project %s: pre-annotation with %s: %s", project_id, version, summary)
    return summary


def _preannotate(
    project_id: int, version: str, settings: Settings, store: ModelStore, report: Callable[..., bool]
) -> dict[str, Any]:
    ls = LabelStudioClient(settings)
    config = ls.label_config(project_id)
    tasks = list(_unannotated_tasks(ls, project_id))
    service = PredictionService(ModelCache(store, predictor_loader(settings)), lambda: ls, settings)
    summary: dict[str, Any] = {"state": "running", "tasks": len(tasks), "done": 0, "written": 0, "empty": 0,
                               "failed": 0, "reasons": []}  # fmt: skip
    for start in range(0, len(tasks), BATCH_TASKS):
        batch = tasks[start : start + BATCH_TASKS]
        response = service.predict({"tasks": batch, "project": project_id, "label_config": config})
        if response["model_version"] != version:
            raise RuntimeError(f"version {response['model_version']} replaced {version} while pre-annotating")
        predictions = []
        for task, item in zip(batch, response["results"]):
            reason = item.get("error") or item.get("empty_reason")
            if reason and len(summary["reasons"]) < MAX_REASONS:
                summary["reasons"].append(f"task {task['id']}: {reason}")
            if item.get("error"):  # the version never saw this image: it has nothing to say about the task
                summary["failed"] += 1
                continue
            # An empty result is written too: "this version found nothing here" replaces the last draft.
            predictions.append({"task": task["id"], "result": item["result"], "score": item["score"],
                                "model_version": version})  # fmt: skip
            summary["empty"] += not item["result"]
        if predictions:
            _delete_our_predictions(ls, [p["task"] for p in predictions], set(store.versions(project_id)))
            # SDK typing gap: typed as its pydantic PredictionRequest models, it serializes plain dicts the same.
            ls.sdk.projects.import_predictions(id=project_id, request=predictions)  # type: ignore[arg-type]
            summary["written"] += len(predictions)
        summary["done"] += len(batch)
        report(preannotation=summary)
    if summary["written"]:
        _prelabel_with(ls, project_id, version, store)
    return {**summary, "state": "done"}


def _delete_our_predictions(ls: LabelStudioClient, task_ids: list[int], ours: set[str]) -> None:
    """Delete the predictions of this backend's versions (``ours``) on these tasks before the new ones are written.

    Label Studio keeps every prediction of a task, and its editor opened from the Data Manager pre-fills
    the one whose ``model_version`` is the project's prelabeling source, else the *first* one: with the
    source set to the backend's title (what connecting it does), that is the oldest version's. A version
    that found nothing would then leave its predecessor's false positives as the draft. Predictions of
    other models or imported by people carry other ``model_version`` names and stay. Deleting first means
    an interrupted run leaves a task without a prediction of ours, never a stale one.
    """
    for task_id in task_ids:
        for prediction in ls.sdk.predictions.list(task=task_id):
            if prediction.model_version in ours and prediction.id is not None:
                ls.sdk.predictions.delete(id=prediction.id)


def _unannotated_tasks(ls: LabelStudioClient, project_id: int) -> Iterator[dict[str, Any]]:
    """``{"id", "project", "data"}`` of each task without annotations, paged by the SDK."""
    # SDK typing gap: tasks.list() is typed SyncPagerExt[Never]; its items are the SDK's task models.
    pager: Iterable[Any] = ls.sdk.tasks.list(project=project_id, query=_UNANNOTATED, fields="task_only", page_size=100)
    for task in pager:
        if not task.total_annotations:  # the filter already says so; a task annotated meanwhile is skipped
            yield {"id": task.id, "project": project_id, "data": task.data}


def _prelabel_with(ls: LabelStudioClient, project_id: int, version: str, store: ModelStore) -> None:
    """Make the new version the one annotators see, unless the project shows another source on purpose.

    Label Studio pre-fills a task from the predictions of ``project.model_version``. An empty value or
    a version this backend published earlier is moved to the new one; the title of a connected ML
    backend (live predictions, which find the stored ones of the current version) or any other
    version someone picked in *Settings > Annotation* is left alone.
    """
    current = ls.sdk.projects.get(id=project_id).model_version or ""
    if current == version or (current and current not in store.versions(project_id)):
        return
    ls.sdk.projects.update(id=project_id, model_version=version)
    log.info("project %s: annotators now see pre-annotations of %s (was %r)", project_id, version, current)
