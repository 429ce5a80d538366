"""Protocol-test fixtures: the real app with a stand-in predictor, a real HTTP media server, real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import GENERIC, TOKEN, Backend, FakePredictor, animal, make_backend, png_bytes
from tests.support.backend import MediaServer


@pytest.fixture(scope="session")
def media_server() -> Iterator[MediaServer]:
    server = MediaServer(TOKEN, {"/data/upload/1/cat.png": png_bytes()})
    yield server
    server.stop()


@pytest.fixture
def schema() -> Schema:
    return Schema.from_label_config(GENERIC)


@pytest.fixture
def backend_redis_url(redis_url: str) -> str:
    """Database 7 of the session Redis: jobs queued here are never picked up by other tests' workers."""
    url = f"{redis_url}{'&' if '?' in redis_url else '?'}db=7"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def settings(tmp_path: Path, media_server: MediaServer) -> Settings:
    return Settings(label_studio_url=media_server.url, label_studio_api_key=TOKEN, model_dir=tmp_path / "models")


@pytest.fixture
def backend(settings: Settings, schema: Schema, backend_redis_url: str) -> Backend:
    return make_backend(settings, FakePredictor(schema, [animal(schema)]), backend_redis_url)
