"""Whether an RQ job can still finish: RQ's own status plus a heartbeat key the job refreshes itself.

RQ marks a job failed when its work-horse dies under a live worker ("work-horse terminated
unexpectedly"), but when the whole worker dies, or the job's process is lost with Redis, the job stays
"started" until RQ's registry maintenance notices, minutes later. A job that keeps a short-lived key
fresh while it works is *abandoned* as soon as that key is gone. Augmentation shards and training
runs both use it.
"""

from __future__ import annotations

import time
from datetime import UTC

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus


def job_state(conn: redis.Redis, job_id: str, heartbeat: tuple[str, float] | None = None) -> str:
    """queued | running | finished | failed | abandoned | missing | canceled | stopped.

    ``heartbeat``: (key, seconds); a started job is abandoned when its key is gone and it started
    longer ago than that (the key is first set once the job has imported its modules)."""
    try:
        job = Job.fetch(job_id, connection=conn)
        status = job.get_status()
    except NoSuchJobError:
        return "missing"
    if status == JobStatus.STARTED and heartbeat is not None and not conn.exists(heartbeat[0]):
        started = job.started_at.replace(tzinfo=UTC).timestamp() if job.started_at else time.time()
        if time.time() - started > heartbeat[1]:
            return "abandoned"
    renamed = {JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued", JobStatus.STARTED: "running"}
    return renamed.get(status, JobStatus(status).value)
