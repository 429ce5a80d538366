"""A stopped Redis (SIGSTOP: connections are accepted, nothing answers) must not hold the backend's requests.

A real ``python -m backend`` process and a real Redis server; times are taken by the client around
each HTTP request. Without socket timeouts ``GET /runs`` waited for as long as Redis was stopped.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobqueue.connection import EmbeddedRedis
from tests.support.backend import start_backend
from tests.support.processes import repo_env

pytestmark = pytest.mark.slow

BOUND_S = 2.0  # REDIS_TIMEOUT and REDIS_CONNECT_TIMEOUT default to 1 s


@pytest.fixture
def stopped_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server that the test freezes with SIGSTOP; continued and stopped at the end whatever happens."""
    server = EmbeddedRedis(tmp_path / "redis")
    try:
        yield server
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def _timed(method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.request(method, url, timeout=60, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def test_a_stopped_redis_gets_503_within_the_timeout(stopped_redis: EmbeddedRedis, tmp_path: Path) -> None:
    env = repo_env(
        REDIS_URL=stopped_redis.url, MODEL_DIR=str(tmp_path / "models"), LABEL_STUDIO_URL="http://127.0.0.1:9"
    )
    url, backend = start_backend(env, tmp_path / "backend.log")
    try:
        os.kill(stopped_redis.proc.pid, signal.SIGSTOP)  # before the backend's first connection
        response, seconds = _timed("GET", f"{url}/runs/1")
        assert response.status_code == 503 and "Redis did not answer in time" in response.json()["error"]
        assert seconds < BOUND_S, f"GET /runs took {seconds:.1f} s with Redis stopped before the first connection"

        os.kill(stopped_redis.proc.pid, signal.SIGCONT)
        assert httpx.get(f"{url}/runs/1", timeout=30).json()["training"] == {"state": "idle"}

        os.kill(stopped_redis.proc.pid, signal.SIGSTOP)  # now under an open connection
        webhook = {"json": {"action": "START_TRAINING", "project": {"id": 1}}}
        for method, path, kwargs in (("GET", "/runs/1", {}), ("POST", "/webhook", webhook)):
            response, seconds = _timed(method, f"{url}{path}", **kwargs)
            assert response.status_code == 503, response.text
            assert "Redis did not answer in time" in response.json()["error"], response.text
            assert seconds < BOUND_S, f"{method} {path} took {seconds:.1f} s with Redis stopped"
        health, seconds = _timed("GET", f"{url}/health")
        assert health.status_code == 200 and seconds < 1

        os.kill(stopped_redis.proc.pid, signal.SIGCONT)  # Redis back: the same server answers again
        assert httpx.get(f"{url}/runs/1", timeout=30).status_code == 200
    finally:
        backend.stop()
