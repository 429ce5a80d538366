"""The training run, executed by an RQ worker on the ``train`` queue.

One run: export the project's annotated tasks from Label Studio -> download their images through
Label Studio -> convert to combined COCO -> (optionally) augment -> train the multi-task model ->
publish the checkpoint as a new model version. Progress, the published version and any error are
written to the run status in Redis (``GET /runs/<project>`` on the server) and to the worker log.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.labelstudio import LabelStudioClient
from backend.model_store import ModelStore
from backend.preannotation import preannotate_after_publish
from backend.runs import Runs
from backend.settings import Settings
from combined_coco.schema import Schema
from jobqueue.connection import connect

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # status writes per run stay cheap even at hundreds of steps per minute


class TrainingError(RuntimeError):
    """The project cannot be trained yet; the message tells the user what to label or fix."""


def train_project_job(project_id: int) -> dict[str, Any]:
    """RQ entry point. Trains while triggers are pending (coalesced), then marks the project idle."""
    settings = Settings.from_env()
    runs = Runs(connect(), settings.train_job_timeout)
    store = ModelStore(settings.model_dir)
    version = None
    try:
        while runs.consume_pending(project_id):
            runs.update_status(project_id, state="running", started_at=time.time(), rerun_pending=False, error=None)
            version, meta = train_once(project_id, settings, store, runs)
            preannotation = preannotate_after_publish(project_id, version, settings, store, runs)
            runs.update_status(project_id, state="succeeded", phase="finished", finished_at=time.time(),
                               model_version=version, result=meta, preannotation=preannotation)  # fmt: skip
    except Exception as exc:
        runs.release(project_id)
        runs.update_status(project_id, state="failed", finished_at=time.time(), error=str(exc))
        log.exception("project %s: training failed", project_id)
        raise
    return {"project": project_id, "model_version": version}


def train_once(project_id: int, settings: Settings, store: ModelStore, runs: Runs) -> tuple[str, dict[str, Any]]:
    """One complete run; returns the published version and its metadata."""
    ls = LabelStudioClient(settings)
    schema = Schema.from_label_config(ls.label_config(project_id))
    tasks = ls.export_tasks(project_id)
    log.info("project %s: %d annotated task(s) exported", project_id, len(tasks))

    from combined_coco.converter import convert_tasks  # after the Label Studio calls: a dead LS fails fast
    from multitask.train import TrainConfig, train
    conversion = convert_tasks(tasks, schema)
    for issue in conversion.issues:
        log.warning("project %s: %s", project_id, issue)
    coco = conversion.coco
    if not coco["annotations"]:
        raise TrainingError(
            f"project {project_id} has no usable annotations ({len(tasks)} annotated task(s), "
            f"{len(conversion.issues)} issue(s)); draw at least one polygon and its keypoints, then start training again"
        )
    with tempfile.TemporaryDirectory(prefix=f"lsmt-train-{project_id}-") as tmp:
        work = Path(tmp)
        image_root = work / "images"
        _download_images(ls, coco, image_root)
        dataset = work / "dataset.json"
        dataset.write_text(json.dumps(coco))
        if settings.train_augment_copies > 0:
            from augmentation import augment_dataset

            runs.update_status(project_id, phase="augmenting")
            dataset = augment_dataset(
                dataset, image_root, work / "augmented", copies=settings.train_augment_copies, seed=settings.train_seed
            )
            image_root = dataset.parent / "images"
        runs.update_status(project_id, phase="training", step=0, total=settings.train_steps)
        config = TrainConfig(
            dataset=str(dataset),
            image_root=str(image_root),
            output_dir=str(work / "model"),
            backbone=settings.train_backbone,
            steps=settings.train_steps,
            batch_size=settings.train_batch_size,
            lr=settings.train_lr,
            min_size=settings.train_min_size,
            max_size=settings.train_max_size,
            seed=settings.train_seed,
            device=settings.train_device,
            warmup_steps=min(100, max(1, settings.train_steps // 5)),  # short CI runs still reach the full lr
        )
        checkpoint = train(config, on_progress=_ProgressReporter(project_id, runs))
        runs.update_status(project_id, phase="evaluating")
        fit = _training_set_fit(checkpoint, work / "dataset.json", work / "images", settings)
        meta = {
            "project": project_id,
            "tasks": len(tasks),
            "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "issues": len(conversion.issues),
            "backbone": settings.train_backbone,
            "steps": settings.train_steps,
            "augment_copies": settings.train_augment_copies,
            "checkpoint_model_version": fit.pop("model_version"),
            "training_set_fit": fit,
        }
        version = store.publish(project_id, checkpoint, meta)
    return version, meta


def _training_set_fit(checkpoint: Path, dataset: Path, image_root: Path, settings: Settings) -> dict[str, Any]:
    """AP of the new model on the annotated images themselves.

    Not a measure of accuracy on new images (there is no held-out split of a handful of labels), but
    cheap, and a near-zero value says the run did not learn (too few steps, or broken labels).
    """
    from multitask.evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(checkpoint, dataset, image_root, device=settings.train_device)
    fit = {f"{kind}_AP": results[kind].get("AP") for kind in ("bbox", "segm", "keypoints") if kind in results}
    return {**fit, "model_version": results["model_version"]}


def _download_images(ls: LabelStudioClient, coco: dict, image_root: Path) -> None:
    """Each COCO image from the task's URL, through Label Studio (same SSRF and size rules as /predict)."""
    image_root.mkdir(parents=True, exist_ok=True)
    for image in coco["images"]:
        target = (image_root / image["file_name"]).resolve()
        if target.parent != image_root.resolve():  # file names come from task URLs: stay inside the folder
            raise TrainingError(f"task {image.get('ls_task_id')}: unusable image file name {image['file_name']!r}")
        target.write_bytes(ls.fetch_bytes(image["ls_image"], image.get("ls_task_id")))


class _ProgressReporter:
    """``on_progress`` hook: step and losses into the run status, at most every few seconds."""

    def __init__(self, project_id: int, runs: Runs) -> None:
        self.project_id, self.runs, self._last = project_id, runs, 0.0

    def __call__(self, step: int, total: int, losses: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_S and step < total:
            return
        self._last = now
        rounded = {k: round(float(v), 4) for k, v in losses.items()}
        self.runs.update_status(self.project_id, step=step, total=total, losses=rounded)
        log.info("project %s: step %d/%d %s", self.project_id, step, total, rounded)
