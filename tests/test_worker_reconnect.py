"""A worker whose Redis went away runs jobs again soon after Redis is back, and a running job survives it.

A real ``python -m jobqueue.worker`` and a real Redis server, SIGKILLed and restarted on the same socket
and data (as the stack's supervisor does); the time from the restart to a job's round trip is taken by
the test. RQ alone pauses 1, 2, 4, 8 ... 60 s between attempts, so after 8 s without Redis its worker
looked again only 7 s after Redis was back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from jobqueue.connection import EmbeddedRedis, connect
from stack.selfcheck import check_worker
from tests.support.processes import repo_env, start_worker

pytestmark = pytest.mark.slow

DOWN_S = 8.0  # Redis restarted a few times in a row: the stack's supervisor waits 1, 2, 4 ... s each time


def test_worker_runs_a_job_within_seconds_of_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    worker = start_worker(repo_env(REDIS_URL=server.url), tmp_path / "worker.log", "default")
    try:
        check_worker(connect(server.url), timeout=120)
        server.proc.kill()
        server.proc.wait()
        time.sleep(DOWN_S)
        server = EmbeddedRedis(tmp_path / "redis")
        restarted = time.monotonic()
        check_worker(connect(server.url), timeout=60)
        seconds = time.monotonic() - restarted
        print(f"a job ran {seconds:.2f} s after Redis came back (down {DOWN_S:.0f} s)")
        assert worker.poll() is None, "the worker must ride through a Redis restart"
        assert seconds < 3
    finally:
        worker.kill()
        worker.wait()
        server.stop()


def test_a_job_carries_on_through_a_redis_restart_during_the_workers_heartbeat(tmp_path: Path) -> None:
    """While a job runs, the worker writes RQ's heartbeats every 30 s. Plain RQ quits on a Redis error
    there, and its horse (which now dies with the worker) would take the job with it; the worker must log
    it and carry on, and the job finish."""
    server = EmbeddedRedis(tmp_path / "redis")
    worker = start_worker(repo_env(REDIS_URL=server.url), tmp_path / "worker.log", "default")
    try:
        job = Queue("default", connection=connect(server.url)).enqueue("time.sleep", 45, job_timeout=300)
        while job.get_status(refresh=True) != JobStatus.STARTED:
            time.sleep(0.2)
        time.sleep(20)
        server.proc.kill()
        server.proc.wait()
        time.sleep(18)  # over the worker's heartbeat 30 s into the job
        server = EmbeddedRedis(tmp_path / "redis")
        conn = connect(server.url)
        deadline = time.monotonic() + 60
        while Job.fetch(job.id, connection=conn).get_status() != JobStatus.FINISHED:
            assert worker.poll() is None, "the worker quit on the Redis restart"
            assert time.monotonic() < deadline, Job.fetch(job.id, connection=conn).get_status()
            time.sleep(0.5)
        assert "RQ heartbeat not written" in (tmp_path / "worker.log").read_text()
    finally:
        worker.kill()
        worker.wait()
        server.stop()
