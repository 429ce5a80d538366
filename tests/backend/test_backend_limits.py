"""Resource limits: auth and body size are checked before a body is read; /health never waits for /predict."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import uvicorn

from backend.request_guard import MAX_JSON_DEPTH, json_shape
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import GENERIC, FakePredictor, animal, make_backend, predict_payload
from tests.support.processes import free_port


async def _call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, int]:
    """Drive the ASGI app directly; returns (status, body, how many body chunks the app pulled)."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), pulled


def test_an_anonymous_body_is_refused_before_it_is_read(settings: Settings, schema: Schema) -> None:
    secured = Settings(**{**settings.__dict__, "bearer_token": "tok"})
    app = make_backend(secured, FakePredictor(schema)).client.app
    body = b'{"tasks": [' + b'{"data": {}},' * 1000 + b"{}]}"
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    status, answer, pulled = anyio.run(_call, app, "POST", "/predict", headers, body)
    assert status == 401 and "authentication required" in json.loads(answer)["error"]
    assert pulled == 0  # the body was never read, let alone parsed


def test_a_declared_oversized_body_is_a_413_before_it_is_read(settings: Settings, schema: Schema) -> None:
    app = make_backend(Settings(**{**settings.__dict__, "max_request_bytes": 1000}), FakePredictor(schema)).client.app
    headers = {"content-type": "application/json", "content-length": str(10**9)}
    status, answer, pulled = anyio.run(_call, app, "POST", "/predict", headers, b"{}")
    assert status == 413 and "MAX_REQUEST_BYTES=1000" in json.loads(answer)["error"] and pulled == 0


def test_an_undeclared_oversized_body_is_cut_off_at_the_limit(settings: Settings, schema: Schema) -> None:
    client = make_backend(Settings(**{**settings.__dict__, "max_request_bytes": 1000}), FakePredictor(schema)).client
    chunks = (b" " * 600 for _ in range(5))  # streamed without Content-Length
    response = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "MAX_REQUEST_BYTES=1000" in response.json()["error"]
    assert client.post("/setup", json={"project": "1.1"}).status_code == 200


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_a_400(backend: Any, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = opener * 100_000 + "1" + closer * 100_000
    response = backend.client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and f"deeper than {MAX_JSON_DEPTH}" in response.json()["error"]


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_shape(json.dumps({"label_config": "[" * 1000 + '\\"{' * 100}).encode()).depth == 1
    assert json_shape(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode()).depth == MAX_JSON_DEPTH + 1


@dataclass
class BlockingPredictor(FakePredictor):
    """A predictor that holds its forward pass until released: the slowest model there is."""

    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)

    def predict(self, images: list[np.ndarray]) -> list[list[Any]]:
        self.entered.set()
        assert self.release.wait(60), "the test never released the predictor"
        return super().predict(images)


@pytest.fixture
def served(settings: Settings, schema: Schema, backend_redis_url: str) -> Iterator[tuple[str, BlockingPredictor]]:
    """The real app under a real uvicorn server (one event loop, one thread pool, as in production)."""
    predictor = BlockingPredictor(schema, [animal(schema)])
    backend = make_backend(Settings(**{**settings.__dict__, "predict_queue": 4}), predictor, backend_redis_url)
    backend.publish(1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(backend.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url, predictor
    predictor.release.set()
    server.should_exit = True
    thread.join(30)


def test_health_answers_at_once_while_predictions_queue_and_the_overflow_gets_503(
    served: tuple[str, BlockingPredictor],
) -> None:
    url, predictor = served
    requests = 60  # more than the default thread pool (40): sync endpoints would all wait for a thread

    def predict(_: int) -> httpx.Response:
        return httpx.post(f"{url}/predict", json=predict_payload(), timeout=90)

    with ThreadPoolExecutor(requests) as pool:
        futures = [pool.submit(predict, i) for i in range(requests)]
        assert predictor.entered.wait(30)
        time.sleep(0.5)  # let every request reach the server
        started = time.perf_counter()
        health = httpx.get(f"{url}/health", timeout=5)
        health_s = time.perf_counter() - started
        started = time.perf_counter()
        setup = httpx.post(f"{url}/setup", json={"project": "1.1", "schema": GENERIC}, timeout=5)
        setup_s = time.perf_counter() - started
        answered_while_blocked = [f.result() for f in futures if f.done()]  # the 503s do not wait
        predictor.release.set()
        responses = [f.result() for f in futures]
    assert health.status_code == 200 and health_s < 1.0, health_s
    assert setup.status_code == 200 and setup_s < 1.0, setup_s
    print(f"/health {1000 * health_s:.0f} ms, /setup {1000 * setup_s:.0f} ms with {requests} predicts in flight")
    overflow = [r for r in responses if r.status_code == 503]
    assert len(overflow) == requests - 4 and len(answered_while_blocked) >= requests - 4
    assert all(r.headers["retry-after"].isdigit() and "PREDICT_QUEUE=4" in r.json()["error"] for r in overflow)
    assert sorted(r.status_code for r in responses if r.status_code != 503) == [200] * 4
