"""Denial-of-service attacks (issue 19) against a real ``python -m backend`` on 127.0.0.1.

Each attack is bounded in count and time. The oracles are outside the code under test: latencies and
disconnects seen by the client, the server's memory from ``/proc/<pid>/status``, its log file's size,
and ``json``'s own parser for the depth scan. ``/health`` is probed throughout every attack and must
answer within 1 s (Label Studio's timeout for it).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.model_store import ModelStore
from backend.request_guard import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH, JsonShape, json_shape
from backend.settings import Settings
from tests.backend.backend_fakes import GENERIC
from tests.support.backend import Process, random_checkpoint, start_backend
from tests.support.processes import repo_env

REQUEST_TIMEOUT_S = 3.0  # the only setting changed from its default: 20 s would make the slow-client test slow
HEALTH_LIMIT_S = 1.0
JSON = {"content-type": "application/json"}  # FastAPI parses no body without it
JSON_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def parsed_shape(value: Any) -> JsonShape:
    """Depth and number of dicts and lists ``json.loads`` built: the oracle for :func:`json_shape`."""
    if not isinstance(value, (dict, list)):
        return JsonShape(0, 0)
    children = [parsed_shape(v) for v in (value.values() if isinstance(value, dict) else value)]
    return JsonShape(1 + max((c.depth for c in children), default=0), 1 + sum(c.containers for c in children))


tricky_text = st.text(alphabet=st.sampled_from(list('[]{}"\\/ab é\u2028\U0001f600\n')), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, ensure_ascii=st.booleans(), encoding=st.sampled_from(JSON_ENCODINGS))
def test_the_depth_scan_agrees_with_the_parser(value: Any, ensure_ascii: bool, encoding: str) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode(encoding)
    assert json_shape(body) == parsed_shape(json.loads(body))


@pytest.mark.parametrize("chunk_edge", [1 << 20, (1 << 20) - 1, (1 << 20) + 1])
def test_the_depth_scan_carries_string_state_across_chunks(chunk_edge: int) -> None:
    """Strings, escapes and brackets that straddle the scan's 1 MB chunks (the parser is the oracle)."""
    for tail in ["\\\\", '\\"[[[', "[[[{", '\\\\\\"']:  # JSON string content: \\  \"[[[  [[[{  \\\"
        text = '{"a": "' + "x" * (chunk_edge - 8) + tail + '", "b": [[[1]]]}'
        value = json.loads(text)
        assert json_shape(text.encode()) == parsed_shape(value)


class HealthProbe:
    """Polls ``/health`` from its own thread while an attack runs; keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.failures: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        self._ready.wait(10)  # polling before the attack starts: a quick attack must not outrun the probe's set-up
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.count > 0
        print(f"[/health slowest {1000 * self.slowest:.0f} ms over {self.count} probes]", end=" ")
        assert not self.failures, self.failures[:3]
        assert self.slowest < HEALTH_LIMIT_S, f"/health took {self.slowest:.2f} s during the attack"

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            self._ready.set()
            while True:  # at least one probe, however short the attack
                started = time.perf_counter()
                try:
                    status = client.get(f"{self.url}/health").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                else:
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.count += 1
                if self._stop.wait(0.1):
                    break


class Served:
    def __init__(self, url: str, process: Process, model_dir: Path) -> None:
        self.url, self.process, self.model_dir = url, process, model_dir

    def memory_kb(self, field: str = "VmRSS") -> int:
        """From the kernel, not from the server: ``VmRSS`` now or ``VmHWM``, the peak so far."""
        for line in Path(f"/proc/{self.process.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc status")


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``python -m backend`` with default settings (but REQUEST_TIMEOUT) and a published model for project 1."""
    root = tmp_path_factory.mktemp("attacks")
    store = ModelStore(root / "models")
    store.publish(1, random_checkpoint(root / "random.pt", min_size=64, max_size=96), {})
    env = repo_env(
        LABEL_STUDIO_URL="http://127.0.0.1:9",  # never reached: the attacks carry no image
        LABEL_STUDIO_API_KEY="unused",
        REDIS_URL=redis_url,
        MODEL_DIR=str(store.root),
        REQUEST_TIMEOUT=str(REQUEST_TIMEOUT_S),
    )
    url, process = start_backend(env, root / "backend.log")
    yield Served(url, process, Path(store.root.url))
    process.stop()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def test_a_body_of_escaped_quotes_is_answered_at_once(served: Served) -> None:
    """The regex the scan replaced took 29.4 s on this 100 KB body, and /health waited as long."""
    body = b'{"tasks": ' + b"[" * 70 + b'"' + b'\\"' * 50_000
    with HealthProbe(served.url), httpx.Client(timeout=60) as client:
        for _ in range(5):
            response, seconds = timed(lambda: client.post(f"{served.url}/predict", content=body, headers=JSON))
            assert response.status_code == 400 and f"deeper than {MAX_JSON_DEPTH}" in response.json()["error"]
            assert seconds < 1.0, seconds
        print(f"hostile 100 KB body: 400 in {1000 * seconds:.0f} ms")
        # escaped quotes without depth: valid-looking strings up to the size limit are scanned in time too
        long_string = b'{"project": "1.1", "note": "' + b'\\"' * 4_000_000 + b'"}'
        response, seconds = timed(lambda: client.post(f"{served.url}/setup", content=long_string, headers=JSON))
        assert response.status_code == 200 and seconds < 5.0, (response.text[:200], seconds)


@pytest.mark.parametrize("encoding", [e for e in JSON_ENCODINGS if e != "utf-8"])
def test_other_json_encodings_get_the_same_depth_limit(served: Served, encoding: str) -> None:
    """json.loads accepts UTF-16/32 bodies, so they used to skip the (byte-level) depth check."""
    deep = json.dumps({"project": "1.1", "schema": "", "x": json.loads("[" * 900 + "]" * 900)})
    response = httpx.post(f"{served.url}/setup", content=deep.encode(encoding), headers=JSON, timeout=30)
    assert response.status_code == 400 and f"deeper than {MAX_JSON_DEPTH}" in response.json()["error"], encoding
    shallow = json.dumps({"project": "1.1", "x": [[[1]]]}).encode(encoding)
    assert httpx.post(f"{served.url}/setup", content=shallow, headers=JSON, timeout=30).status_code == 200, encoding


def test_a_body_that_does_not_decode_in_its_encoding_is_a_400(served: Served) -> None:
    broken = '{"project": "1.1"}'.encode("utf-16-le") + b"\x00\xd8"  # a lone high surrogate
    response = httpx.post(f"{served.url}/setup", content=broken, headers=JSON, timeout=30)
    assert response.status_code == 400 and "UTF-16-LE" in response.json()["error"]


@pytest.mark.parametrize(
    ("tasks", "reason"),
    [(2_500_000, f"more than {MAX_JSON_CONTAINERS} objects and arrays"), (400_000, "MAX_PREDICT_TASKS=1000")],
)
def test_many_tiny_tasks_are_refused_without_memory_or_log_growth(served: Served, tasks: int, reason: str) -> None:
    """Before: 200 with an 840 MB answer, RSS 85 MB -> 5 GB, one log line per task, /health 5.1 s."""
    body = (
        json.dumps({"project": "1.1700000000", "label_config": GENERIC})[:-1].encode()
        + b', "tasks": ['
        + b"{}," * (tasks - 1)
        + b"{}]}"
    )
    assert len(body) < Settings().max_request_bytes
    log_before = served.process.log.stat().st_size
    rss_before = served.memory_kb()
    with HealthProbe(served.url):
        response, seconds = timed(lambda: httpx.post(f"{served.url}/predict", content=body, headers=JSON, timeout=120))
    assert response.status_code == 413 and reason in response.json()["error"], response.text[:300]
    assert len(response.content) < 1000
    time.sleep(0.5)  # let the log flush
    log_growth = served.process.log.stat().st_size - log_before
    peak_growth_mb = (served.memory_kb("VmHWM") - rss_before) / 1024
    assert log_growth < 2000, log_growth
    assert peak_growth_mb < 300, peak_growth_mb
    print(f"{tasks} tasks: 413 in {seconds:.2f} s, peak RSS +{peak_growth_mb:.0f} MB, log +{log_growth} B")


def test_a_full_batch_of_tasks_without_images_logs_one_line(served: Served) -> None:
    """MAX_PREDICT_TASKS tasks, none with an image: each result names its task, the log gets one line, not 1000."""
    payload = {
        "project": "1.1700000000",
        "label_config": GENERIC,
        "tasks": [{"id": i, "data": {}} for i in range(Settings().max_predict_tasks)],
    }
    # the first request loads the model (imports torch, which holds the GIL for a while): not this attack
    warm = httpx.post(f"{served.url}/predict", json={**payload, "tasks": payload["tasks"][:1]}, timeout=120)
    assert warm.status_code == 200, warm.text[:300]
    log_before = served.process.log.stat().st_size
    with HealthProbe(served.url):
        response = httpx.post(f"{served.url}/predict", json=payload, timeout=120)
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    assert [r["error"].split(":")[0] for r in results] == [f"task {i}" for i in range(len(results))]
    time.sleep(0.5)
    log = served.process.log.read_bytes()[log_before:].decode()
    assert log.count("no usable image for 1000 of 1000 task(s)") == 1 and len(log) < 5000, log[-2000:]


def test_slow_clients_are_cut_off_after_the_request_timeout(served: Served) -> None:
    """Clients that dribble their request head or body are closed at REQUEST_TIMEOUT; /health keeps answering."""
    host, port = served.url.removeprefix("http://").split(":")
    heads = [b"POST /setup HTTP/1.1\r\nHost: x\r\n"] * 20  # the head never ends
    bodies = [b"POST /setup HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"] * 20  # nor the body
    sockets: dict[socket.socket, float] = {}
    for start in heads + bodies:
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(start)
        sock.setblocking(False)
        sockets[sock] = time.monotonic()
    closed_after: list[float] = []
    deadline = time.monotonic() + REQUEST_TIMEOUT_S + 10
    with HealthProbe(served.url):
        while sockets and time.monotonic() < deadline:
            for sock in list(sockets):
                try:
                    sock.send(b" ")  # one byte every 0.2 s: never idle, never done
                except OSError:
                    closed_after.append(time.monotonic() - sockets.pop(sock))
                    sock.close()
            readable, _, _ = select.select(list(sockets), [], [], 0.2)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the server closed it
                    closed_after.append(time.monotonic() - sockets.pop(sock))
                    sock.close()
    for sock in sockets:
        sock.close()
    assert not sockets, f"{len(sockets)} slow connections were still open after {REQUEST_TIMEOUT_S + 10} s"
    assert len(closed_after) == 40
    assert min(closed_after) > REQUEST_TIMEOUT_S - 0.5 and max(closed_after) < REQUEST_TIMEOUT_S + 3, closed_after
    print(f"40 slow clients closed after {min(closed_after):.1f}-{max(closed_after):.1f} s")


def test_connections_over_max_connections_get_503(redis_url: str, tmp_path: Path) -> None:
    env = repo_env(REDIS_URL=redis_url, MODEL_DIR=str(tmp_path / "models"), MAX_CONNECTIONS="4")
    url, process = start_backend(env, tmp_path / "backend.log")
    host, port = url.removeprefix("http://").split(":")
    try:
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(4)]
        time.sleep(0.3)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 503
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    finally:
        process.stop()
