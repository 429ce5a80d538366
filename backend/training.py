"""The training run, executed by an RQ worker on the ``train`` queue.

One run: export the project's annotated tasks from Label Studio -> download their images through
Label Studio -> convert to combined COCO -> (optionally) augment -> train the multi-task model ->
publish the checkpoint as a new model version. Progress, the published version and any error are
written to the run status in Redis (``GET /runs/<project>`` on the server) and to the worker log.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Worker, get_current_job
from rq.job import Job

from backend.labelstudio import LabelStudioClient
from backend.model_store import UNTRAINED, ModelStore
from backend.preannotation import preannotate_after_publish
from backend.runs import Runs
from backend.settings import Settings
from combined_coco.data_url import is_data_url
from combined_coco.dataset import write_json
from combined_coco.schema import Schema
from jobqueue.connection import connect
from jobqueue.object_storage import Location, location

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # status writes per run stay cheap even at hundreds of steps per minute
LOSS_POINTS = 200  # the loss history in the run status (the dashboard's plot) stays this short however long the run


class TrainingError(RuntimeError):
    """The project cannot be trained yet; the message tells the user what to label or fix."""


def train_project_job(project_id: int) -> dict[str, Any]:
    """RQ entry point. Trains while triggers are pending (coalesced), then marks the project idle.

    The run's heartbeat (see :class:`backend.runs.Runs`) beats for as long as this process lives, so
    a work-horse killed here is reported failed by the server within ``TRAIN_HEARTBEAT_SECONDS``.
    """
    settings = Settings.from_env()
    runs = Runs(connect(), settings.train_job_timeout, settings.train_heartbeat_seconds)
    job = get_current_job()
    if job is None:
        raise RuntimeError("train_project_job runs only inside an RQ job")
    job_id = job.id
    store = ModelStore(settings.model_dir)
    version = None
    with runs.heartbeat(project_id, job_id):
        try:
            report = functools.partial(runs.report, project_id, job_id)
            while runs.consume_pending(project_id, job_id):
                # a coalesced rerun starts in the same status hash: clear the previous run's progress
                report(state="running", started_at=time.time(), rerun_pending=False, error=None, phase="exporting",
                       step=None, total=None, loss_history=[], training_started_at=None)  # fmt: skip
                version, meta = train_once(project_id, settings, store, report)
                preannotation = preannotate_after_publish(project_id, version, settings, store, report)
                report(state="succeeded", phase="finished", finished_at=time.time(),
                       model_version=version, result=meta, preannotation=preannotation)  # fmt: skip
        except redis.ConnectionError as exc:
            log.error("project %s: Redis connection lost during the run: %s", project_id, exc)
            _report_failure(
                runs, project_id, job_id, "lost the connection to Redis during the run; start training again"
            )
            raise
        except Exception as exc:
            _report_failure(runs, project_id, job_id, failure_text(exc))
            raise
    return {"project": project_id, "model_version": version}


def failure_text(exc: Exception) -> str:
    """What ``/runs`` shows for a failed run: the exception's message, but an ``OSError`` without its file
    name (a server path; the worker log has the traceback)."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'operating system error'} (the worker log names the file)"
    return str(exc)


def _report_failure(runs: Runs, project_id: int, job_id: str, error: str) -> None:
    """Best effort: with Redis down the server reports the run failed once the heartbeat expires."""
    log.error("project %s: training failed: %s", project_id, error)
    try:
        runs.fail(project_id, job_id, error)
    except redis.RedisError as exc:
        log.warning("project %s: the failure could not be recorded (%s)", project_id, exc)


def train_once(
    project_id: int, settings: Settings, store: ModelStore, report: Callable[..., bool]
) -> tuple[str, dict[str, Any]]:
    """One complete run; returns the published version and its metadata. ``report(**fields)``
    updates the run status (:meth:`backend.runs.Runs.report`)."""
    ls = LabelStudioClient(settings)
    schema = Schema.from_label_config(ls.label_config(project_id))
    tasks = ls.export_tasks(project_id)
    log.info("project %s: %d annotated task(s) exported", project_id, len(tasks))

    from combined_coco.converter import convert_tasks  # after the Label Studio calls: a dead LS fails fast

    # Where reviewers marked a ground-truth annotation, train on it alone; elsewhere on every annotation.
    conversion = convert_tasks(tasks, schema, annotations="ground_truth_first")
    for issue in conversion.issues:
        log.warning("project %s: %s", project_id, issue)
    if not conversion.coco["annotations"]:
        raise TrainingError(
            f"project {project_id} has no usable annotations ({len(tasks)} annotated task(s), "
            f"{len(conversion.issues)} issue(s)); draw at least one polygon and its keypoints, then start training again"
        )
    counts = {"tasks": len(tasks), "issues": len(conversion.issues)}
    return train_and_publish(
        project_id,
        conversion.coco,
        ls.fetch_bytes,
        counts,
        settings,
        store,
        report,
        conversion.write_embedded_images,
        project_schema=schema,
    )


ImageFetcher = Callable[[str, Any], bytes]  # (image URL, task id) -> bytes; LabelStudioClient.fetch_bytes


def train_and_publish(
    project_id: int,
    coco: dict,
    fetch: ImageFetcher,
    counts: dict[str, int],
    settings: Settings,
    store: ModelStore,
    report: Callable[..., bool],
    write_embedded: Callable[[Path], object] = lambda folder: None,
    project_schema: Schema | None = None,
) -> tuple[str, dict[str, Any]]:
    """Train on a project's combined COCO and publish the version; returns it and its metadata.

    ``fetch`` downloads an image entry's file; ``write_embedded`` writes the images that tasks held as
    ``data:`` URLs (:meth:`ConversionResult.write_embedded_images`), which have no URL to fetch.
    ``project_schema`` is the project's labeling config, needed to score the held-out edit cost (the regions
    the backend would send it); None leaves that score out with the reason.

    A share of the tasks is held out of training once ``counts["tasks"]`` (annotated tasks) reaches
    ``holdout_min_tasks`` (see :func:`holdout_split`); the run starts from the current version when
    it can (see :func:`_start_point`). The version is published whether or not it beat the previous
    one; its metadata says which.
    """
    from multitask import engines
    from multitask.train import TrainConfig

    engine = engines.get(settings.train_engine)  # not installed: fail before any download, saying how to install
    _set_threads(settings.train_threads)
    heldout = None
    if counts["tasks"] >= settings.holdout_min_tasks:
        training, heldout = holdout_split(coco, settings.holdout_share)
        if not heldout["images"] or not training["annotations"]:  # every photo fell on one side
            heldout = None
        else:
            coco = training
    if heldout is not None:
        log.info(
            "project %s: %d image(s) of %d task(s) held out for scoring, %d image(s) train",
            project_id, len(heldout["images"]), _task_count(heldout), len(coco["images"]),
        )  # fmt: skip
    start = _start_point(project_id, store, Schema.from_coco_categories(coco["categories"]), settings)
    with tempfile.TemporaryDirectory(prefix=f"lsmt-train-{project_id}-") as tmp:
        work = Path(tmp)
        image_root = work / "images"
        write_embedded(image_root)  # tasks holding their image as a data: URL
        _download_images(fetch, coco, image_root)
        dataset = write_json(work / "dataset.json", coco)
        if heldout is not None:
            _download_images(fetch, heldout, image_root)
            write_json(work / "heldout.json", heldout)
        if settings.train_augment_copies > 0:
            dataset, image_root = _augment(project_id, dataset, image_root, work / "augmented", settings, report)
        report(phase="training", step=0, total=start.steps, training_started_at=time.time())
        config = TrainConfig(
            dataset=str(dataset),
            image_root=str(image_root),
            output_dir=str(work / "model"),
            engine=settings.train_engine,
            backbone=settings.train_backbone,
            init=settings.train_init,
            finetune_from=start.finetune_from,
            steps=start.steps,
            batch_size=settings.train_batch_size,
            lr=start.lr,
            min_size=settings.train_min_size,
            max_size=settings.train_max_size,
            seed=settings.train_seed,
            device=settings.train_device,
            warmup_steps=min(100, max(1, start.steps // 5)),  # short CI runs still reach the full lr
        )
        engine.check(config)
        began = time.monotonic()
        checkpoint = engine.train(config, on_progress=_ProgressReporter(project_id, report))
        train_seconds = round(time.monotonic() - began, 1)
        report(phase="evaluating")
        fit_set = _fit_subset(coco)
        fit = _scores(checkpoint, write_json(work / "fit.json", fit_set), work / "images", settings)
        scores = previous_scores = None
        edit_cost: dict[str, Any] = {"ratio": None, "reason": "no held-out tasks"}
        if heldout is not None:
            digest = _set_digest(heldout)
            scores = {"tasks": _task_count(heldout), "images": len(heldout["images"]), "set": digest}
            scores |= _scores(checkpoint, work / "heldout.json", work / "images", settings)
            previous_scores = _previous_heldout(project_id, store, work / "heldout.json", digest, settings)
            edit_cost = _heldout_edit_cost(checkpoint, heldout, work / "images", project_schema, settings)
        model_version, transfers, taught = _checkpoint_record(checkpoint)
        meta = {
            "project": project_id,
            "tasks": counts["tasks"],
            "images": len(coco["images"]),
            "annotations": len(coco["annotations"]),
            "issues": counts["issues"],
            "engine": settings.train_engine,
            "backbone": settings.train_backbone,
            "started_from": start.started_from,
            "transferred_from": start.transferred_from,
            "transfers": transfers,
            "steps": start.steps,
            "lr": start.lr,
            "augment_copies": settings.train_augment_copies,
            "train_seconds": train_seconds,
            "checkpoint_model_version": model_version,
            "training_set_fit": fit,
            "heldout": scores,
            "heldout_edit_cost": edit_cost,
            "previous_on_heldout": previous_scores,
            "beat_previous": _beats(scores, previous_scores),
            "taught": taught,
        }
        version = store.publish(project_id, checkpoint, meta)
    return version, meta


AUGMENT_PIPELINE = "light"  # what a training run's augmentation applies, on workers or in-process


class _ShardsLost(RuntimeError):
    """The augmentation workers did not finish the shards: the training job augments them itself."""


def _augment(
    project_id: int, dataset: Path, image_root: Path, out_dir: Path, settings: Settings, report: Callable[..., bool]
) -> tuple[Path, Path]:
    """``TRAIN_AUGMENT_COPIES`` copies of every training image; returns the augmented dataset and its images.

    With augmentation workers running (others than this job's own), the images go as shard jobs to
    them (:mod:`augmentation.jobs`), through ``AUGMENT_DIR`` (a folder they all reach, or object
    storage), one shard per worker; otherwise, or outside RQ, in this process. Workers that die (or
    a killed worker still registered, which takes nothing) do not hold the run: shards that fail
    without an image's error, or that nobody works on for ``TRAIN_HEARTBEAT_SECONDS``, are augmented
    in this process instead (every sample's seed is (run seed, image, copy): the same images either
    way). The run status's ``augmentation`` field (and the worker log) says which.
    """
    job = get_current_job()
    workers = _augmentation_workers(job) if job is not None else 0
    if job is None or not workers:
        return _augment_here(
            project_id, dataset, image_root, out_dir, settings, report, "no augmentation worker is running"
        )
    shared = location(settings.augment_dir) / f"train-{project_id}-{job.id}"
    try:
        return _augment_on_workers(
            project_id, job.connection, workers, dataset, image_root, out_dir, shared, settings, report
        )
    except _ShardsLost as lost:
        return _augment_here(project_id, dataset, image_root, out_dir, settings, report, str(lost))
    finally:
        shared.remove_tree()


def _augment_here(
    project_id: int,
    dataset: Path,
    image_root: Path,
    out_dir: Path,
    settings: Settings,
    report: Callable[..., bool],
    why: str,
) -> tuple[Path, Path]:
    from augmentation import augment_dataset

    note = f"in-process: {why}"
    log.info("project %s: augmenting %s", project_id, note)
    report(phase="augmenting", augmentation=note)
    result = augment_dataset(
        dataset, image_root, out_dir, pipeline=AUGMENT_PIPELINE,
        copies=settings.train_augment_copies, seed=settings.train_seed,
    )  # fmt: skip
    return result, result.parent / "images"


def _augment_on_workers(
    project_id: int,
    conn: redis.Redis,
    workers: int,
    dataset: Path,
    image_root: Path,
    out_dir: Path,
    shared: Location,
    settings: Settings,
    report: Callable[..., bool],
) -> tuple[Path, Path]:
    """Raises :class:`_ShardsLost` (with the run's jobs cancelled) when the workers do not finish it."""
    from augmentation import jobs
    from augmentation.dataset_augment import IMAGES_DIR, OUTPUT_JSON

    images = sorted({image["file_name"] for image in json.loads(dataset.read_bytes())["images"]})
    (shared / "source" / OUTPUT_JSON).upload(dataset)
    for name in images:
        (shared / "source" / IMAGES_DIR / name).upload(image_root / name)
    run_id = jobs.submit_run(
        conn, shared / "source" / OUTPUT_JSON, shared / "source" / IMAGES_DIR, shared / "augmented",
        pipeline=AUGMENT_PIPELINE, copies=settings.train_augment_copies, seed=settings.train_seed,
        shard_size=max(1, math.ceil(len(images) / workers)), heartbeat_seconds=settings.train_heartbeat_seconds,
    )  # fmt: skip
    note = f"on {workers} augmentation worker(s): run {run_id}"
    log.info("project %s: augmenting %s", project_id, note)
    report(phase="augmenting", augmentation=note)
    stall = _StallWatch(settings.train_heartbeat_seconds)

    def progress(status: dict[str, Any]) -> None:
        report(augmented=status["done"], augment_total=status["total"])
        if stall.stalled(status):
            raise _ShardsLost(f"no augmentation worker took run {run_id} for {settings.train_heartbeat_seconds} s")

    try:
        status = jobs.wait(conn, run_id, settings.train_job_timeout, poll=1.0, on_status=progress)
        if status["state"] != "finished" and not status["failures"]:
            raise _ShardsLost(f"the augmentation workers stopped during run {run_id}")
    except _ShardsLost:
        jobs.cancel(conn, run_id)
        raise
    if status["state"] != "finished":
        failures = "; ".join(f"image {f['image_id']}: {f['error']}" for f in status["failures"][:3])
        raise TrainingError(f"the augmentation run {run_id} failed ({failures}); start training again")
    result = location(status["result"])
    result.download(out_dir / OUTPUT_JSON)
    for image in json.loads((out_dir / OUTPUT_JSON).read_bytes())["images"]:
        (shared / "augmented" / IMAGES_DIR / image["file_name"]).download(out_dir / IMAGES_DIR / image["file_name"])
    return out_dir / OUTPUT_JSON, out_dir / IMAGES_DIR


class _StallWatch:
    """An augmentation run is stalled when nothing of it runs and nothing changes for ``seconds``: no live
    worker takes its jobs (a shard whose worker dies while running it is *abandoned*, a failure)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last: tuple[Any, ...] | None = None
        self.since = time.monotonic()

    def stalled(self, status: dict[str, Any]) -> bool:
        snapshot = (status["done"], tuple(shard["state"] for shard in status["shards"]))
        running = status["merge"] == "running" or any(shard["state"] == "running" for shard in status["shards"])
        if snapshot != self.last or running:
            self.last, self.since = snapshot, time.monotonic()
            return False
        return time.monotonic() - self.since > self.seconds


def _augmentation_workers(job: Job) -> int:
    """Workers listening on the augmentation queue, other than the one running ``job`` (which waits)."""
    from augmentation.jobs import QUEUE

    listening = Worker.all(connection=job.connection, queue=Queue(QUEUE, connection=job.connection))
    return sum(1 for worker in listening if worker.name != job.worker_name)


def holdout_split(coco: dict, share: float) -> tuple[dict, dict]:
    """``(train, heldout)``: about ``share`` of the tasks held out, the same ones in every run.

    A task is held out when a hash of its id falls below ``share``, so adding tasks never moves an
    existing one to the other side, and scores of versions are measured on growing, never shrinking,
    held-out sets. Tasks showing the same photo (same image URL) are one group, decided by its
    lowest task id, so a photo is never on both sides.
    """
    first_task: dict[str, int] = {}
    for image in coco["images"]:
        url, task = image.get("ls_image", image["file_name"]), int(image.get("ls_task_id", image["id"]))
        first_task[url] = min(task, first_task.get(url, task))
    held = {url for url, task in first_task.items() if _task_hash(task) < share}
    return _images_subset(coco, held, False), _images_subset(coco, held, True)


def _task_hash(task_id: int) -> float:
    """A task id's fixed place in [0, 1) (not Python's ``hash``, which changes between processes)."""
    return int.from_bytes(hashlib.sha256(f"task {task_id}".encode()).digest()[:8], "big") / 2**64


def _images_subset(coco: dict, urls: set[str], inside: bool) -> dict:
    return _images_by_id(
        coco, {im["id"] for im in coco["images"] if (im.get("ls_image", im["file_name"]) in urls) == inside}
    )


def _task_count(coco: dict) -> int:
    return len({im.get("ls_task_id", im["id"]) for im in coco["images"]})


@dataclass(frozen=True)
class _Start:
    finetune_from: str | None  # the current version's checkpoint, when there is one
    steps: int
    lr: float
    started_from: str  # "version v0003-...", or the init setting (coco, imagenet, none, a path)
    transferred_from: str | None  # version whose fitting tensors were transferred (classes/keypoints changed)


def _start_point(project_id: int, store: ModelStore, schema: Schema, settings: Settings) -> _Start:
    """Continue from the current version (``RETRAIN_STEPS``, ``RETRAIN_LR``) when its engine, classes,
    keypoints and backbone are unchanged; otherwise start from ``TRAIN_INIT`` (``TRAIN_STEPS``,
    ``TRAIN_LR``) with the version's tensors that still fit on top (none when the engine changed)."""
    from multitask.engines import read_summary

    current = store.current_version(project_id)
    if current == UNTRAINED:
        return _Start(None, settings.train_steps, settings.train_lr, settings.train_init, None)
    path = store.checkpoint(project_id, current)
    try:
        previous = read_summary(path)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning(
            "project %s: version %s cannot be read (%s); starting from %s",
            project_id,
            current,
            exc,
            settings.train_init,
        )
        return _Start(None, settings.train_steps, settings.train_lr, settings.train_init, None)
    if previous.continued_by(settings.train_engine, schema, settings.train_backbone):
        log.info("project %s: continuing from version %s (same classes and keypoints)", project_id, current)
        return _Start(str(path), settings.retrain_steps, settings.retrain_learning_rate, f"version {current}", None)
    if previous.engine != settings.train_engine:
        log.info(
            "project %s: version %s was trained by the %s engine, this run uses %s; starting from %s",
            project_id, current, previous.engine, settings.train_engine, settings.train_init,
        )  # fmt: skip
        return _Start(None, settings.train_steps, settings.train_lr, settings.train_init, None)
    log.info(
        "project %s: classes, keypoints or backbone changed since version %s; starting from %s and transferring"
        " the tensors of %s that still fit (class-dependent layers start fresh)",
        project_id, current, settings.train_init, current,
    )  # fmt: skip
    return _Start(str(path), settings.train_steps, settings.train_lr, settings.train_init, f"version {current}")


def _checkpoint_record(checkpoint: Path) -> tuple[str, list[str], dict | None]:
    """The checkpoint's model version, what its weight transfers loaded (one summary line per source), and
    what the run was taught (:mod:`multitask.taught`: keypoints labelled, their thresholds, polygon vertices)."""
    from multitask.engines import read_summary

    summary = read_summary(checkpoint)
    return summary.model_version, summary.transfers, summary.taught


FIT_IMAGES = 10  # the training-set fit is a did-it-learn check; more images only cost time


def _fit_subset(coco: dict) -> dict:
    """The training images the training-set fit is measured on: the first :data:`FIT_IMAGES` by id
    (the same ones in every run while the project does not change)."""
    ids = sorted(im["id"] for im in coco["images"])[:FIT_IMAGES]
    return _images_by_id(coco, set(ids))


def _images_by_id(coco: dict, ids: set[int]) -> dict:
    return {
        **coco,
        "images": [im for im in coco["images"] if im["id"] in ids],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in ids],
    }


def _set_digest(coco: dict) -> str:
    """A fingerprint of a held-out set (its images and annotations): equal digests mean two versions
    were scored on exactly the same ground truth, so a score can be reused instead of recomputed."""
    canonical = json.dumps([coco["images"], coco["annotations"]], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _scoring_cap(dataset: Path) -> int:
    """Detections per image kept while scoring: three times the most objects one image holds, at
    least 20, at most the model's 100. A barely trained model otherwise sends 100 low-score boxes
    per image through the mask and keypoint heads, which made scoring slower than a retrain; the
    lowest-ranked extra detections can change AP only by matching objects the higher ones missed."""
    coco = json.loads(dataset.read_bytes())
    per_image: dict[int, int] = {}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    return min(100, max(20, 3 * max(per_image.values(), default=0)))


def _scores(checkpoint: Path, dataset: Path, image_root: Path, settings: Settings) -> dict[str, float | None]:
    """COCO AP (bbox, segm, keypoints) of ``checkpoint`` on ``dataset``.

    On the training images this is the training-set fit: not a measure of accuracy on new photos,
    but cheap, and a near-zero value says the run did not learn (too few steps, or broken labels).
    """
    from multitask import engines

    results = engines.evaluate(
        checkpoint, dataset, image_root=image_root, device=settings.train_device, max_detections=_scoring_cap(dataset)
    )
    return {f"{kind}_AP": results[kind].get("AP") for kind in ("bbox", "segm", "keypoints") if kind in results}


def _heldout_edit_cost(
    checkpoint: Path, heldout: dict, image_root: Path, project_schema: Schema | None, settings: Settings
) -> dict[str, Any]:
    """Actions an annotator needs to turn this version's pre-annotations of the held-out images into their
    annotations (:mod:`backend.edit_cost`), against drawing them from scratch; the regions are the ones
    ``/predict`` would send with this backend's settings."""
    if project_schema is None:
        return {"ratio": None, "reason": "the project's labeling config is unknown"}
    from backend.edit_cost import dataset_edit_cost
    from backend.predictions import predictor_loader

    predictor = predictor_loader(settings)(checkpoint)
    return dataset_edit_cost(predictor, heldout, image_root, project_schema, settings).as_dict()


def _previous_heldout(
    project_id: int, store: ModelStore, heldout: Path, digest: str, settings: Settings
) -> dict[str, Any] | None:
    """The previous version's scores on *this* run's held-out tasks (None: no previous version, or its
    classes/keypoints differ), so that both versions are compared on the same photos. Taken from the
    version's metadata when it was scored on the same set (same ``digest``), else scored again."""
    current = store.current_version(project_id)
    if current == UNTRAINED:
        return None
    recorded = next((s.get("heldout") for s in store.version_summaries(project_id) if s["version"] == current), None)
    if isinstance(recorded, dict) and recorded.get("set") == digest:
        return {
            "version": current,
            **{k: recorded.get(k) for k in ("bbox_AP", "segm_AP", "keypoints_AP") if k in recorded},
        }
    try:
        scores = _scores(store.checkpoint(project_id, current), heldout, heldout.parent / "images", settings)
    except (OSError, ValueError, RuntimeError) as exc:
        log.info("project %s: version %s not scored on the held-out tasks (%s)", project_id, current, exc)
        return None
    return {"version": current, **scores}


def _beats(new: dict[str, Any] | None, previous: dict[str, Any] | None) -> bool | None:
    """True when the mean held-out AP (bbox, segm, keypoints) is higher than the previous version's
    on the same tasks; None when either side has no held-out score."""
    if not new or not previous:
        return None
    kinds = [
        k for k in ("bbox_AP", "segm_AP", "keypoints_AP") if new.get(k) is not None and previous.get(k) is not None
    ]
    if not kinds:
        return None
    return sum(new[k] for k in kinds) > sum(previous[k] for k in kinds)


def _set_threads(threads: int) -> None:
    """Torch threads for this job process: ``TRAIN_THREADS``, or every core the worker may use.

    Set deliberately in the job (RQ runs each job in a forked work horse): torch's default counts the
    machine's cores, this counts the CPUs the worker may run on (its affinity, e.g. a container's
    cpuset); set ``TRAIN_THREADS`` under a CPU quota or when several workers share a machine. Images
    are decoded in the training process between steps, so OpenCV gets one thread.
    """
    import cv2
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    cv2.setNumThreads(1)


def _download_images(fetch: ImageFetcher, coco: dict, image_root: Path) -> None:
    """Each COCO image file from the task's URL, through Label Studio (same SSRF and size rules as /predict).

    Once per file: the image entries of several annotations of one task share it.
    """
    image_root.mkdir(parents=True, exist_ok=True)
    fetched: dict[str, str] = {}  # file name -> URL
    for image in coco["images"]:
        if is_data_url(image["ls_image"]):  # written by the conversion; the COCO file holds no URL for it
            continue
        if image["file_name"] in fetched:
            if fetched[image["file_name"]] != image["ls_image"]:
                raise TrainingError(
                    f"task {image.get('ls_task_id')}: two different images are named "
                    f"{image['file_name']!r}; rename one of them in the storage"
                )
            continue
        target = (image_root / image["file_name"]).resolve()
        if target.parent != image_root.resolve():  # file names come from task URLs: stay inside the folder
            raise TrainingError(f"task {image.get('ls_task_id')}: unusable image file name {image['file_name']!r}")
        target.write_bytes(fetch(image["ls_image"], image.get("ls_task_id")))
        fetched[image["file_name"]] = image["ls_image"]


class _ProgressReporter:
    """``on_progress`` hook: step, losses and the loss history into the run status, at most every few seconds.

    The history keeps every step's total loss until it holds :data:`LOSS_POINTS` points; then the
    stride doubles (only steps divisible by it stay, and only those are added from then on), so a
    long run's whole curve fits in a bounded status.
    """

    def __init__(self, project_id: int, report: Callable[..., bool]) -> None:
        self.project_id, self.report, self._last = project_id, report, 0.0
        self.history: list[tuple[int, float]] = []
        self._stride = 1

    def __call__(self, step: int, total: int, losses: dict[str, float]) -> None:
        loss = float(losses.get("loss", sum(losses.values())))
        if step % self._stride == 0 or step == total:
            self.history.append((step, round(loss, 4)))
            if len(self.history) > LOSS_POINTS:
                self._stride *= 2
                self.history = [p for p in self.history if p[0] % self._stride == 0 or p[0] == total]
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_S and step < total:
            return
        self._last = now
        rounded = {k: round(float(v), 4) for k, v in losses.items()}
        self.report(step=step, total=total, losses=rounded, loss_history=self.history)
        log.info("project %s: step %d/%d %s", self.project_id, step, total, rounded)
