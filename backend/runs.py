"""Training runs per project: enqueue on the ``train`` queue, coalesce triggers, record status in Redis.

At most one training job per project is queued or running. Two Redis keys make that so:

- ``pending``: "train again with the latest annotations" (set by every trigger),
- ``active``: the id of the project's job (set, in one transaction with the enqueue, by the trigger
  that finds no job).

A trigger sets ``pending`` and enqueues only if ``active`` is empty. The job loops: it consumes
``pending`` and trains; when ``pending`` is empty it clears ``active`` in the same Lua script, so a
trigger arriving while a run is in progress causes exactly one more run after it, however many
arrive, and no trigger can fall between "nothing pending" and "no job active".

A job can die without running its own error handling: its work-horse SIGKILLed (the OOM killer; RQ
then marks the job failed), its whole worker killed, or Redis restarted under it. So the slot is tied
to the job's real state: while it runs, the job refreshes a short ``alive`` key from a background
thread, and every trigger and every status read first *settles* a dead run (RQ says failed, stopped,
canceled or gone, or started with no heartbeat for ``heartbeat_seconds``): the run is reported
failed with the reason and the slot is freed, or, when a trigger arrived during that run, handed to
a new job that runs it (see :meth:`Runs.fail`). A job still waiting in the queue for a worker is not
dead. ``active`` also expires after the job timeout, as a last resort.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from jobqueue.liveness import job_state

log = logging.getLogger(__name__)

TRAIN_QUEUE = "train"
TRAIN_JOB = "backend.training.train_project_job"
HEARTBEAT_SECONDS = 60  # a started run whose heartbeat is older than this is dead
_PREFIX = "lsmt:backend"

# The job's turn: stop if the slot is no longer its own (the run was settled as dead); else consume
# a pending trigger, or (atomically, when there is none) mark the project idle.
_CONSUME = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
"""

# The job's status update, if the slot is still its own.
_REPORT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
"""

# Count annotation events; at the threshold reset the counter and report a trigger.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if tonumber(ARGV[1]) > 0 and n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], 0)
  return -n
end
return n
"""


def _key(project_id: int, name: str) -> str:
    return f"{_PREFIX}:{int(project_id)}:{name}"


def _new_job_id(project_id: int) -> str:
    return f"train-{int(project_id)}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class TriggerResult:
    enqueued: bool  # False: a run is queued or running and will run once more afterwards
    job_id: str | None


class Runs:
    """Scheduling and status of training runs, shared by the web server and the jobs."""

    def __init__(self, conn: redis.Redis, job_timeout: int, heartbeat_seconds: int = HEARTBEAT_SECONDS) -> None:
        self.conn = conn
        self.job_timeout = job_timeout
        self.heartbeat_seconds = heartbeat_seconds

    def request_training(self, project_id: int, reason: str) -> TriggerResult:
        """Ask for a run with the project's current annotations; never blocks on the run itself.

        Redis errors propagate: the server answers them in one place (503 with the reason)."""
        self.settle(project_id)
        job_id = _new_job_id(project_id)
        enqueued = self._claim_and_enqueue(project_id, job_id, reason)
        if not enqueued:
            log.info(
                "project %s: training requested (%s) while a run is active; it will run once more", project_id, reason
            )
            return TriggerResult(False, None)
        log.info("project %s: training job %s queued (%s)", project_id, job_id, reason)
        return TriggerResult(True, job_id)

    def _claim_and_enqueue(self, project_id: int, job_id: str, reason: str) -> bool:
        """One transaction: the slot names the job exactly when the job exists in RQ (so a job that is
        missing from Redis really is gone, never "about to be enqueued")."""
        active, pending = _key(project_id, "active"), _key(project_id, "pending")
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(active)
                    busy = pipe.exists(active)
                    pipe.multi()
                    pipe.set(pending, reason)
                    if busy:
                        self._write_status(pipe, project_id, {"rerun_pending": True}, replace=False)
                    else:
                        self._enqueue(pipe, project_id, job_id, reason, {})
                    pipe.execute()
                    return not busy
                except redis.WatchError:  # the job finished (or another trigger won) meanwhile: look again
                    continue

    def _enqueue(
        self, pipe: redis.client.Pipeline, project_id: int, job_id: str, reason: str, status: dict[str, Any]
    ) -> None:
        """Queue ``job_id`` and give it the slot, inside the caller's transaction ``pipe``."""
        pipe.set(_key(project_id, "active"), job_id, ex=self.job_timeout + 300)
        # status in the same transaction: a fast worker may report "running" at once
        status = {"state": "queued", "job_id": job_id, "reason": reason, "queued_at": time.time(), **status}
        self._write_status(pipe, project_id, status, replace=True)
        queue = Queue(TRAIN_QUEUE, connection=self.conn)
        job = queue.create_job(
            TRAIN_JOB,
            args=(project_id,),
            job_id=job_id,
            timeout=self.job_timeout,
            result_ttl=7 * 24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description=f"train Label Studio project {project_id} ({reason})",
        )
        queue.enqueue_job(job, pipeline=pipe)

    def consume_pending(self, project_id: int, job_id: str) -> bool:
        """For job ``job_id``: True means train (again); False means stop (project idle, or the slot
        was taken from this job because it was presumed dead)."""
        keys = [_key(project_id, "pending"), _key(project_id, "active")]
        return bool(self.conn.eval(_CONSUME, 2, *keys, str(self.job_timeout + 300), job_id))

    def fail(self, project_id: int, job_id: str, error: str) -> bool:
        """The run of ``job_id`` failed: report ``error`` and free the slot. False (nothing written) if
        the slot is no longer this job's (a late report of an old job must not touch the next run).

        A trigger that arrived during the failed run ("it will run once more") is not dropped: in the
        same transaction a new job takes the slot, queued with the failure under ``previous_failure``.
        """
        active, pending = _key(project_id, "active"), _key(project_id, "pending")
        failed_at, rerun_id = time.time(), _new_job_id(project_id)
        with self.conn.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(active, pending)
                    if cast(bytes | None, pipe.get(active)) != job_id.encode():
                        pipe.reset()
                        return False
                    rerun = cast(bytes | None, pipe.get(pending))
                    pipe.multi()
                    if rerun is None:
                        pipe.delete(active)
                        fields = {"state": "failed", "error": error, "finished_at": failed_at, "rerun_pending": False}
                        self._write_status(pipe, project_id, fields, replace=False)
                    else:
                        failure = {"job_id": job_id, "error": error, "finished_at": failed_at}
                        self._enqueue(pipe, project_id, rerun_id, rerun.decode(), {"previous_failure": failure})
                    pipe.execute()
                except redis.WatchError:  # a trigger or the job changed the slot meanwhile: look again
                    continue
                if rerun is not None:
                    log.info("project %s: run %s failed; the run requested during it is queued as %s",
                             project_id, job_id, rerun_id)  # fmt: skip
                return True

    # ---- liveness ----------------------------------------------------------------------------
    @contextmanager
    def heartbeat(self, project_id: int, job_id: str) -> Iterator[None]:
        """For the job: keep the ``alive`` key fresh from a thread while the body runs.

        A thread, not the training loop, so that long steps (a slow export, evaluation) never look
        like death; the thread dies with the process, which is the point.
        """
        key, stop = _key(project_id, f"alive:{job_id}"), threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.conn.set(key, job_id, ex=self.heartbeat_seconds)
                except redis.RedisError as exc:  # Redis restarting: the next beat may reach it again
                    log.warning("project %s: training heartbeat not written (%s)", project_id, exc)
                if stop.wait(self.heartbeat_seconds / 4):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            try:
                self.conn.delete(key)
            except redis.RedisError:  # it expires on its own
                pass

    def settle(self, project_id: int) -> str | None:
        """If the project's job is dead, report its run failed and free the slot; returns the reason."""
        # redis-py types every result as ``Awaitable | value`` (one signature for the sync and asyncio
        # clients); this client is synchronous, so the casts here only name the value.
        raw = cast(bytes | None, self.conn.get(_key(project_id, "active")))
        if raw is None:
            return None
        job_id = raw.decode()
        reason = self._death(project_id, job_id)
        if reason is None or not self.fail(project_id, job_id, reason):
            return None
        log.warning("project %s: training job %s is dead: %s", project_id, job_id, reason)
        return reason

    def _death(self, project_id: int, job_id: str) -> str | None:
        """Why the job can no longer finish its run, or None while it waits in the queue or is alive."""
        state = job_state(self.conn, job_id, (_key(project_id, f"alive:{job_id}"), self.heartbeat_seconds))
        if state in ("queued", "running"):
            return None  # a queued job waits for a worker, however long that takes
        if state == "missing":
            return f"the training job {job_id} is gone from Redis (Redis restarted without its data?); start training again"
        if state == "abandoned":
            return (
                f"the training worker stopped responding (no heartbeat for {self.heartbeat_seconds} s: the worker "
                "was killed, ran out of memory, or lost Redis); start training again"
            )
        try:
            latest = Job.fetch(job_id, connection=self.conn).latest_result()
        except NoSuchJobError:
            latest = None
        if latest is not None and latest.exc_string:
            detail = latest.exc_string.strip().splitlines()[-1].rstrip("; ")
        else:
            detail = state
        return f"the training worker died ({detail}; killed, or out of memory?); start training again"

    def count_annotation_event(self, project_id: int, retrain_every: int) -> bool:
        """Count one annotation change; True when this one reached ``retrain_every`` (0: never)."""
        n = int(cast(int, self.conn.eval(_COUNT, 1, _key(project_id, "new_annotations"), str(retrain_every))))
        return n < 0

    def new_annotations(self, project_id: int) -> int:
        return int(cast(bytes | None, self.conn.get(_key(project_id, "new_annotations"))) or 0)

    # ---- status ------------------------------------------------------------------------------
    # A hash of JSON values: the server (rerun flag, failure of a dead job) and the job (progress)
    # update fields without overwriting each other's.
    def status(self, project_id: int) -> dict[str, Any]:
        """The run status; reading it first settles a dead run, so nobody is shown "running" forever."""
        self.settle(project_id)
        raw = cast(dict[bytes, bytes], self.conn.hgetall(_key(project_id, "status")))
        return {k.decode(): json.loads(v) for k, v in raw.items()} or {"state": "idle"}

    def report(self, project_id: int, job_id: str, **fields: Any) -> bool:
        """For job ``job_id``: update its run's status, only while the slot is still its own (a job
        presumed dead must not overwrite the next run's status). Best effort: a Redis restart is
        logged, not raised, so a long training run carries on through it."""
        args = [job_id] + [item for k, v in fields.items() for item in (k, json.dumps(v))]
        try:
            return bool(self.conn.eval(_REPORT, 2, _key(project_id, "active"), _key(project_id, "status"), *args))
        except redis.RedisError as exc:
            log.warning("project %s: run status not written (%s)", project_id, exc)
            return False

    @staticmethod
    def _write_status(pipe: redis.client.Pipeline, project_id: int, fields: dict[str, Any], *, replace: bool) -> None:
        key = _key(project_id, "status")
        if replace:
            pipe.delete(key)
        pipe.hset(key, mapping={k: json.dumps(v) for k, v in fields.items()})
