"""``stack.selfcheck``: the stack's start-up ping and the rq-worker healthcheck of docker-compose.yml."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from jobqueue.connection import connect
from stack.selfcheck import check_worker, worker_on_host
from stack.services import REPO


def _selfcheck(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "stack.selfcheck", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_ping_runs_on_a_real_worker_and_healthcheck_sees_it(redis_url: str, worker_factory) -> None:
    conn = connect(redis_url)
    worker_factory("default")
    assert check_worker(conn, timeout=60) < 60
    assert worker_on_host(conn, socket.gethostname())
    healthcheck = _selfcheck(redis_url, "--this-host")
    assert healthcheck.returncode == 0, healthcheck.stderr
    ping = _selfcheck(redis_url, "--timeout", "30")
    assert ping.returncode == 0 and "self-check OK" in ping.stdout, ping.stderr


def test_healthcheck_fails_without_a_worker_of_this_host(redis_url: str) -> None:
    conn = connect(redis_url)
    assert not worker_on_host(conn, "no-such-host")
