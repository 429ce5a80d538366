"""Training runs per project: enqueue on the ``train`` queue, coalesce triggers, record status in Redis.

At most one training job per project is queued or running. Two Redis keys make that so:

- ``pending``: "train again with the latest annotations" (set by every trigger),
- ``active``: a job for the project exists (set with NX by the trigger that enqueues it).

A trigger sets ``pending`` and enqueues only if it wins ``active``. The job loops: it consumes
``pending`` and trains; when ``pending`` is empty it clears ``active`` in the same Lua script, so a
trigger arriving while a run is in progress causes exactly one more run after it, however many
arrive, and no trigger can fall between "nothing pending" and "no job active".
``active`` expires after the job timeout, so a worker killed mid-run does not block the project forever.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue

from jobqueue.connection import RedisUnavailable

log = logging.getLogger(__name__)

TRAIN_QUEUE = "train"
_PREFIX = "lsmt:backend"

# Consume a pending trigger, or (atomically, when there is none) mark the project idle.
_CONSUME = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
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


@dataclass(frozen=True)
class TriggerResult:
    enqueued: bool  # False: a run is queued or running and will run once more afterwards
    job_id: str | None


class Runs:
    """Scheduling and status of training runs, shared by the web server and the jobs."""

    def __init__(self, conn: redis.Redis, job_timeout: int) -> None:
        self.conn = conn
        self.job_timeout = job_timeout

    def request_training(self, project_id: int, reason: str) -> TriggerResult:
        """Ask for a run with the project's current annotations; never blocks on the run itself."""
        try:
            pipe = self.conn.pipeline()
            pipe.set(_key(project_id, "pending"), reason)
            pipe.set(_key(project_id, "active"), "1", nx=True, ex=self.job_timeout + 300)
            _, won = pipe.execute()
            if not won:
                self.update_status(project_id, rerun_pending=True)
                log.info("project %s: training requested (%s) while a run is active; it will run once more", project_id, reason)
                return TriggerResult(False, None)
            job_id = f"train-{int(project_id)}-{uuid.uuid4().hex[:8]}"
            # status first: a fast worker may already report "running" before enqueue() returns
            self.set_status(project_id, {"state": "queued", "job_id": job_id, "reason": reason, "queued_at": time.time()})
            Queue(TRAIN_QUEUE, connection=self.conn).enqueue(
                "backend.training.train_project_job",
                project_id,
                job_id=job_id,
                job_timeout=self.job_timeout,
                result_ttl=7 * 24 * 3600,
                failure_ttl=7 * 24 * 3600,
                description=f"train Label Studio project {project_id} ({reason})",
            )
        except redis.RedisError as exc:
            raise RedisUnavailable(f"Redis is not reachable, training was not started ({exc})") from None
        log.info("project %s: training job %s queued (%s)", project_id, job_id, reason)
        return TriggerResult(True, job_id)

    def consume_pending(self, project_id: int) -> bool:
        """For the job: True means train (again); False means the project is now idle."""
        keys = [_key(project_id, "pending"), _key(project_id, "active")]
        return bool(self.conn.eval(_CONSUME, 2, *keys, self.job_timeout + 300))

    def release(self, project_id: int) -> None:
        """For a failed job: drop the flags so the next trigger starts a fresh run."""
        self.conn.delete(_key(project_id, "pending"), _key(project_id, "active"))

    def count_annotation_event(self, project_id: int, retrain_every: int) -> bool:
        """Count one annotation change; True when this one reached ``retrain_every`` (0: never)."""
        try:
            n = int(self.conn.eval(_COUNT, 1, _key(project_id, "new_annotations"), retrain_every))
        except redis.RedisError as exc:
            raise RedisUnavailable(f"Redis is not reachable, the annotation event was not counted ({exc})") from None
        return n < 0

    def new_annotations(self, project_id: int) -> int:
        return int(self.conn.get(_key(project_id, "new_annotations")) or 0)

    # ---- status ------------------------------------------------------------------------------
    # A hash of JSON values: the server (rerun flag) and the job (progress) update fields without
    # overwriting each other's.
    def status(self, project_id: int) -> dict[str, Any]:
        raw = self.conn.hgetall(_key(project_id, "status"))
        return {k.decode(): json.loads(v) for k, v in raw.items()} or {"state": "idle"}

    def set_status(self, project_id: int, status: dict[str, Any]) -> None:
        key = _key(project_id, "status")
        pipe = self.conn.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping={k: json.dumps(v) for k, v in status.items()})
        pipe.execute()

    def update_status(self, project_id: int, **fields: Any) -> None:
        self.conn.hset(_key(project_id, "status"), mapping={k: json.dumps(v) for k, v in fields.items()})
