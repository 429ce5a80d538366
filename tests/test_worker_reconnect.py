"""A worker whose Redis went away runs jobs again soon after Redis is back.

A real ``python -m jobqueue.worker`` and a real Redis server, SIGKILLed and restarted on the same socket
and data (as the stack's supervisor does); the time from the restart to a job's round trip is taken by
the test. RQ alone pauses 1, 2, 4, 8 ... 60 s between attempts, so after 8 s without Redis its worker
looked again only 7 s after Redis was back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
