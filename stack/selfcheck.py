"""A trivial RQ job that proves a worker is alive: it imports project code and answers through Redis.

``python -m stack.selfcheck`` runs it once (exit code 0 when a worker answered), as the stack does at
start-up. ``--this-host`` only checks that a worker of this host is registered (alive) in Redis: the
rq-worker healthcheck in docker-compose.yml, which must not depend on a busy worker taking a ping.
"""

from __future__ import annotations

import argparse
import socket
import time

import redis
from rq import Queue, Worker

PING_QUEUE = "default"


def ping() -> str:
    """Runs inside the worker."""
    return "pong"


def check_worker(conn: redis.Redis, timeout: float = 60.0) -> float:
    """Enqueue :func:`ping` and wait for its result; returns the round trip in seconds."""
    started = time.monotonic()
    job = Queue(PING_QUEUE, connection=conn).enqueue("stack.selfcheck.ping", result_ttl=60, ttl=int(timeout))
    while time.monotonic() - started < timeout:
        status = job.get_status(refresh=True)
        if status == "finished" and job.return_value() == "pong":
            return time.monotonic() - started
        if status in ("failed", "stopped", "canceled"):
            result = job.latest_result()
            raise RuntimeError(f"the self-check job {job.id} {status}: {result.exc_string if result else ''}")
        time.sleep(0.2)
    raise TimeoutError(f"no worker ran the self-check job {job.id} within {timeout:.0f} s")


def worker_on_host(conn: redis.Redis, hostname: str) -> bool:
    """Whether a worker of ``hostname`` is registered; RQ drops a worker's key when its heartbeat stops."""
    return any(w.hostname == hostname for w in Worker.all(connection=conn))


def main(argv: list[str] | None = None) -> None:
    from jobqueue.connection import connect

    parser = argparse.ArgumentParser(
        prog="python -m stack.selfcheck",
        description="Check that an RQ worker runs jobs: enqueue a ping and wait for the answer.",
        epilog="example: REDIS_URL=redis://localhost:6379/0 python -m stack.selfcheck --timeout 30",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default: 60)")
    parser.add_argument("--this-host", action="store_true", help="only check a worker of this host is registered")
    args = parser.parse_args(argv)
    if args.this_host:
        if not worker_on_host(connect(), socket.gethostname()):
            raise SystemExit(f"no RQ worker of host {socket.gethostname()} is registered")
        print(f"an RQ worker of host {socket.gethostname()} is registered")
        return
    try:
        seconds = check_worker(connect(), args.timeout)
    except (RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"worker self-check failed: {exc}") from None
    print(f"worker self-check OK: stack.selfcheck.ping answered in {seconds:.1f} s")


if __name__ == "__main__":
    main()
