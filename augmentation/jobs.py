"""Augmentation runs on Redis + RQ: one job per shard (a range of source images) on queue "augment",
and a merge job that RQ starts only when every shard job succeeded (``depends_on``).

Run state lives in Redis under ``augment:run:<id>`` (parameters, shard ranges, current job id per
shard, per-shard progress, per-image failures, result path) so any machine that reaches the same
Redis can ask for status. Shards write their images with atomic renames and their part of the
dataset to ``<out_dir>/.augment-<id>/shard-<k>.json``; the merge writes ``<out_dir>/annotations.json``
with a rename (on S3: one PUT), so the dataset appears whole or not at all. The dataset, the image
root and the output are local folders all workers reach, or ``s3://`` URLs
(:mod:`jobqueue.object_storage`) for workers that share no disk.

A shard killed with its worker is *abandoned*: its job still says "started" but its heartbeat key
(refreshed after every image) has expired. :func:`resubmit` re-runs failed and abandoned shards;
since every sample's seed derives from (run seed, image id, copy), the result is byte-identical to
an uninterrupted run.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import cv2
import redis
from rq import Queue, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from augmentation.dataset_augment import (
    IMAGES_DIR,
    OUTPUT_JSON,
    AugmentationFailed,
    Options,
    Shard,
    augment_range,
    merge_shards,
)
from augmentation.pipelines import build_pipeline, read_pipeline
from combined_coco.dataset import json_bytes, read_combined_coco
from combined_coco.schema import Schema
from jobqueue.liveness import job_state
from jobqueue.object_storage import Location, location

QUEUE = "augment"
JOB_TIMEOUT = 3600  # seconds per shard; a shard of 50 large images with the heavy preset stays far below
KEEP_SECONDS = 7 * 24 * 3600  # job results and failures stay inspectable for a week
HEARTBEAT_SECONDS = 60  # a started shard whose heartbeat is older than this is abandoned

_FAILED_SHARD = {"failed", "abandoned", "missing", "canceled", "stopped"}


def _key(run_id: str, part: str = "") -> str:
    return f"augment:run:{run_id}" + (f":{part}" if part else "")


def _meta(conn: redis.Redis, run_id: str) -> dict[str, str]:
    # redis-py types every result as ``Awaitable | value`` (one signature for the sync and asyncio clients);
    # this client is synchronous, so the casts in this module only name the value.
    raw = cast(dict[bytes, bytes], conn.hgetall(_key(run_id)))
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    if not meta:
        raise KeyError(f"no augmentation run {run_id!r} in this Redis (wrong REDIS_URL, or a typo?)")
    return meta


def _tmp_dir(out_dir: Location, run_id: str) -> Location:
    return out_dir / f".augment-{run_id}"


# ---- submitting -----------------------------------------------------------------------------
def submit_run(
    conn: redis.Redis,
    coco_path: str | Path | Location,
    image_root: str | Path | Location,
    out_dir: str | Path | Location,
    *,
    pipeline: str | Path = "medium",
    copies: int = 4,
    seed: int = 0,
    shard_size: int = 50,
    keep_originals: bool = True,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
) -> str:
    """Split the dataset into shards of ``shard_size`` source images and enqueue them; returns the run id.

    Paths must be reachable from the workers (absolute paths, or ``s3://`` URLs, are stored). The
    pipeline is read and checked here, so a bad pipeline fails at submit time, not on a worker.
    """
    pipeline_dict = read_pipeline(pipeline)
    build_pipeline(pipeline_dict)
    n_images = len(json.loads(location(coco_path).read_bytes())["images"])
    shards = [[s, min(s + shard_size, n_images)] for s in range(0, n_images, shard_size)]
    run_id = uuid.uuid4().hex[:12]
    options = Options(pipeline_dict, copies=copies, seed=seed, keep_originals=keep_originals)
    params = {
        "coco_path": location(coco_path).url,
        "image_root": location(image_root).url,
        "out_dir": location(out_dir).url,
        "pipeline_name": str(pipeline),
        "options": options.to_dict(),
        "heartbeat_seconds": heartbeat_seconds,
    }
    conn.hset(
        _key(run_id),
        mapping={"params": json.dumps(params), "shards": json.dumps(shards), "created": time.time(), "attempt": 0},
    )
    _enqueue(conn, run_id, list(range(len(shards))), attempt=0, also_wait_for=[])
    return run_id


def _enqueue(conn: redis.Redis, run_id: str, shard_indices: list[int], attempt: int, also_wait_for: list[str]) -> None:
    """Enqueue shard jobs and a merge that depends on them (and on ``also_wait_for``). The job ids
    are recorded first, so a status request never sees a shard without its job."""
    shard_ids = {k: f"augment-{run_id}-shard{k}-try{attempt}" for k in shard_indices}
    merge_id = f"augment-{run_id}-merge-try{attempt}"
    conn.hset(_key(run_id), mapping={**{f"job:{k}": j for k, j in shard_ids.items()}, "merge_job": merge_id})
    queue = Queue(QUEUE, connection=conn)
    common = {"job_timeout": JOB_TIMEOUT, "result_ttl": KEEP_SECONDS, "failure_ttl": KEEP_SECONDS}
    # A shard may finish before the merge is enqueued: RQ then checks the dependencies' status.
    jobs = [queue.enqueue(run_shard, run_id, k, job_id=job_id, **common) for k, job_id in shard_ids.items()]
    queue.enqueue(merge_run, run_id, job_id=merge_id, depends_on=[j.id for j in jobs] + also_wait_for or None, **common)


def resubmit(conn: redis.Redis, run_id: str, *, force: bool = False) -> list[int]:
    """Re-run the failed and abandoned shards of a failed run (with ``force``: every unfinished shard
    of any unfinished run) and a new merge that waits for them and for shards still running.
    Returns the re-run shard indices."""
    status = run_status(conn, run_id)
    if status["state"] == "finished" or (status["state"] != "failed" and not force):
        return []
    unfinished = [s for s in status["shards"] if s["state"] != "finished"]
    redo = [s["index"] for s in unfinished if force or s["state"] in _FAILED_SHARD]
    still_running = [s["job_id"] for s in unfinished if s["index"] not in redo]
    meta = _meta(conn, run_id)
    try:
        Job.fetch(meta["merge_job"], connection=conn).cancel()
    except (NoSuchJobError, InvalidJobOperation):  # already gone or over: the new merge replaces it
        pass
    attempt = int(meta["attempt"]) + 1
    conn.hset(_key(run_id), "attempt", str(attempt))
    for k in redo:
        conn.hdel(_key(run_id, "failures"), k)
        conn.hset(_key(run_id, "done"), str(k), "0")
    _enqueue(conn, run_id, redo, attempt, also_wait_for=still_running)
    return redo


def cancel(conn: redis.Redis, run_id: str) -> None:
    """Take the run's unfinished jobs off the queue (someone else does its work now). A shard already
    running finishes into its run folder, which nobody reads any more."""
    meta = _meta(conn, run_id)
    for job_id in [v for k, v in meta.items() if k.startswith("job:")] + [meta["merge_job"]]:
        try:
            Job.fetch(job_id, connection=conn).cancel()
        except (NoSuchJobError, InvalidJobOperation):  # gone, finished or already cancelled
            pass


# ---- what the workers run ---------------------------------------------------------------------
def _load_params(conn: redis.Redis, run_id: str) -> tuple[dict[str, Any], list[list[int]]]:
    meta = _meta(conn, run_id)
    return json.loads(meta["params"]), json.loads(meta["shards"])


def _job_connection() -> redis.Redis:
    """The Redis connection of the RQ job being run: the worker functions below run only as RQ jobs."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_shard and merge_run run only inside an RQ job")
    return job.connection


def run_shard(run_id: str, index: int) -> int:
    """RQ job: augment one shard. Fails (after trying every image) if any image failed."""
    conn = _job_connection()
    params, shards = _load_params(conn, run_id)
    start, end = shards[index]
    alive = _key(run_id, f"alive:{index}")
    ttl = int(params["heartbeat_seconds"])

    def beat(done: int) -> None:
        conn.hset(_key(run_id, "done"), str(index), str(done))
        conn.set(alive, 1, ex=ttl)

    beat(0)
    cv2.setNumThreads(1)  # one core per worker: scale out with workers, not threads
    coco, schema = _read_dataset(params["coco_path"])
    out_dir = location(params["out_dir"])
    shard = augment_range(
        coco, schema, params["image_root"], out_dir, Options.from_dict(params["options"]), start, end, beat
    )
    conn.delete(alive)
    if shard.failures:
        conn.hset(_key(run_id, "failures"), str(index), json.dumps(shard.failures))
        raise AugmentationFailed(shard.failures)
    (_tmp_dir(out_dir, run_id) / f"shard-{index:05d}.json").write_bytes(json_bytes(asdict(shard)))
    return len(shard.images)


def _read_dataset(url: str) -> tuple[dict, Schema]:
    """A combined COCO file, local or in object storage (in the global keypoint layout)."""
    source = location(url)
    local = source.local_path()
    if local is not None:
        return read_combined_coco(local)
    with tempfile.TemporaryDirectory(prefix="lsmt-augment-") as tmp:
        source.download(Path(tmp) / OUTPUT_JSON)
        return read_combined_coco(Path(tmp) / OUTPUT_JSON)


def merge_run(run_id: str) -> str:
    """RQ job (after all shards): merge shard files into the output dataset; returns its path."""
    conn = _job_connection()
    params, shards = _load_params(conn, run_id)
    out_dir = location(params["out_dir"])
    tmp = _tmp_dir(out_dir, run_id)
    parts = []
    for k in range(len(shards)):
        path = tmp / f"shard-{k:05d}.json"
        try:
            parts.append(Shard(**json.loads(path.read_bytes())))
        except FileNotFoundError:
            raise FileNotFoundError(f"shard {k} of run {run_id} has no output ({path}); resubmit the run") from None
    coco, _ = _read_dataset(params["coco_path"])
    merged = merge_shards(coco, parts, Options.from_dict(params["options"]), params["pipeline_name"])
    result = out_dir / OUTPUT_JSON
    result.write_bytes(json_bytes(merged))
    conn.hset(_key(run_id), "result", result.url)
    tmp.remove_tree()
    if (images := (out_dir / IMAGES_DIR).local_path()) is not None:
        for leftover in images.rglob(".*.tmp"):  # half-written by a killed worker (an S3 PUT leaves nothing)
            leftover.unlink(missing_ok=True)
    return result.url


# ---- watching ---------------------------------------------------------------------------------
def run_status(conn: redis.Redis, run_id: str) -> dict[str, Any]:
    """``{"run_id", "state", "done", "total", "failures", "result", "shards", "merge"}``.

    ``state``: queued | running | finished | failed. ``failed`` means some shard failed or was
    abandoned (its worker died) or the merge failed; :func:`resubmit` continues such a run.
    """
    meta = _meta(conn, run_id)
    shards = json.loads(meta["shards"])
    done = {int(k): int(v) for k, v in cast(dict[bytes, bytes], conn.hgetall(_key(run_id, "done"))).items()}
    failures = [f for v in cast(list[bytes], conn.hvals(_key(run_id, "failures"))) for f in json.loads(v)]
    heartbeat = float(json.loads(meta["params"])["heartbeat_seconds"])
    shard_rows = []
    for k, (start, end) in enumerate(shards):
        job_id = meta[f"job:{k}"]
        state = job_state(conn, job_id, (_key(run_id, f"alive:{k}"), heartbeat))
        shard_rows.append(
            {
                "index": k,
                "images": [start, end],
                "job_id": job_id,
                "state": state,
                "done": end - start if state == "finished" else done.get(k, 0),
            }
        )
    merge_state = job_state(conn, meta["merge_job"])
    if meta.get("result"):
        state = "finished"
    elif merge_state in _FAILED_SHARD or any(s["state"] in _FAILED_SHARD for s in shard_rows):
        state = "failed"
    elif any(s["state"] != "queued" or s["done"] for s in shard_rows) or merge_state == "running":
        state = "running"
    else:
        state = "queued"
    return {
        "run_id": run_id,
        "state": state,
        "done": sum(s["done"] for s in shard_rows),
        "total": sum(end - start for start, end in shards),
        "failures": sorted(failures, key=lambda f: f["image_id"]),
        "result": meta.get("result"),
        "shards": shard_rows,
        "merge": merge_state,
    }


def wait(
    conn: redis.Redis,
    run_id: str,
    timeout: float | None = None,
    *,
    poll: float = 0.5,
    on_status: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll until the run is finished or failed; raises TimeoutError after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = run_status(conn, run_id)
        if on_status is not None:
            on_status(status)
        if status["state"] in ("finished", "failed"):
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"augmentation run {run_id} not done after {timeout} s: {status['done']}/{status['total']} images"
            )
        time.sleep(poll)
