"""``python -m jobqueue.worker``: an RQ worker on this project's queues, connected like every other piece.

Two things differ from RQ's stock :class:`rq.Worker` (see :class:`ProjectWorker`): a work-horse dies
with its worker, and a lost Redis is retried every second instead of with RQ's growing back-off.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import signal
import sys

import redis
from redis.client import Pipeline
from rq import Queue, Worker
from rq.job import Job

from jobqueue.connection import QUEUES, connect

# Job modules imported once in the worker before it forks a process per job, so each job skips
# their import time (albumentations alone takes seconds).
PRELOAD = {"augment": "augmentation.jobs"}

# Longest pause between two attempts to reach a lost Redis. RQ doubles its pause from 1 s up to 60 s,
# so a worker that saw Redis down for a few seconds (a restart) slept up to 16 s more before it
# looked again: a new job waited 20 s after Redis was back.
RECONNECT_MAX_S = 1.0

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``).

    Called first thing in a work-horse. RQ puts the horse in its own process group, so a worker killed
    on its own (``kill -9`` of the worker, the OOM killer picking it) used to leave the horse training
    as an orphan of pid 1: nobody marked the job failed, its heartbeat kept the run "running", and the
    restarted worker started a second training beside it. ``parent_pid`` closes the race of a parent
    that died between the fork and this call. Elsewhere than Linux there is no such call; the horse
    then outlives a killed worker, as with plain RQ.
    """
    if _LIBC is None:
        return
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent_pid:  # the worker is already gone: nobody would report this job
        os._exit(1)


class ProjectWorker(Worker):
    """RQ's forking worker, with its horse tied to it and a steady reconnect to a restarted Redis."""

    max_connection_wait_time = RECONNECT_MAX_S

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """Runs in the forked horse; ``self.pid`` is still the worker's pid (set before the fork)."""
        die_with_parent(self.pid or os.getppid())
        super().main_work_horse(job, queue)

    # While a horse works the worker writes RQ's heartbeats every 30 s. Stock RQ quits on a Redis
    # error there; the horse, which dies with its worker, would take the run with it. A Redis restart
    # must not end a run (the job's own heartbeat rides through it), so the worker logs and goes on.
    def maintain_heartbeats(self, job: Job) -> None:
        try:
            super().maintain_heartbeats(job)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.log.warning("Worker %s: RQ heartbeat not written, Redis unreachable (%s)", self.name, exc)

    def set_current_job_working_time(self, current_job_working_time: float, pipeline: Pipeline | None = None) -> None:
        try:
            super().set_current_job_working_time(current_job_working_time, pipeline)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.log.warning("Worker %s: working time not written, Redis unreachable (%s)", self.name, exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run an RQ worker for augmentation and training jobs.",
        epilog="example: REDIS_URL=redis://localhost:6379/0 python -m jobqueue.worker --queues augment,train",
    )
    parser.add_argument("--queues", default=",".join(QUEUES), help="comma-separated queue names, in priority order")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's host.pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conn = connect()
    names = [q for q in args.queues.split(",") if q]
    for module in (PRELOAD[q] for q in names if q in PRELOAD):
        try:
            importlib.import_module(module)
        except ImportError as exc:  # that extra is not installed here; its jobs will fail with the reason
            logging.warning("not preloading %s: %s", module, exc)
    queues = [Queue(q, connection=conn) for q in names]
    ProjectWorker(queues, connection=conn, name=args.name).work(burst=args.burst, with_scheduler=False)


if __name__ == "__main__":
    main()
