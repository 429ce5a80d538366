"""A training run whose worker dies is reported failed soon, and the next Start Training trains.

Real Redis, real ``python -m jobqueue.worker`` processes, the real ``train_project_job``, the real
backend app. The run is kept busy without training anything: its Label Studio is a socket that
accepts connections and never answers (``MEDIA_TIMEOUT`` 300 s), so the job sits in its first export
request, heartbeat running, like a long training step. Then the work-horse is SIGKILLed (what the
OOM killer does), or the whole worker, or Redis is killed and restarted with or without its data. The recovery
times are printed (``-s``): from the kill to "failed" on GET /runs, to a new job queued, to it running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.settings import Settings
from combined_coco.schema import Schema
from jobqueue.connection import EmbeddedRedis
from tests.backend.backend_fakes import Backend, FakePredictor, make_backend
from tests.support.processes import repo_env, start_worker

pytestmark = pytest.mark.slow

HEARTBEAT_S = 5  # TRAIN_HEARTBEAT_SECONDS for these tests (default 60)


@pytest.fixture
def silent_label_studio() -> Iterator[str]:
    """A Label Studio URL that accepts connections (into the listen backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def job_env(silent_label_studio: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the worker processes inherit (repo_env passes os.environ on)."""
    for key, value in {
        "LABEL_STUDIO_URL": silent_label_studio,
        "LABEL_STUDIO_API_KEY": "token",
        "MEDIA_TIMEOUT": "300",
        "MODEL_DIR": str(tmp_path / "models"),
        "TRAIN_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
    }.items():
        monkeypatch.setenv(key, value)


def _backend(settings: Settings, schema: Schema, url: str) -> Backend:
    return make_backend(
        Settings(**{**settings.__dict__, "train_heartbeat_seconds": HEARTBEAT_S}), FakePredictor(schema), url
    )


def _start_training(backend: Backend, project_id: int) -> dict[str, Any]:
    response = backend.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": project_id}})
    assert response.status_code == 201, response.text
    return response.json()


def _wait_for(backend: Backend, project_id: int, predicate: Callable[[dict], bool], timeout: float) -> dict[str, Any]:
    """Poll GET /runs (what a person or script does) until ``predicate(training status)``."""
    deadline = time.monotonic() + timeout
    while True:
        training = backend.client.get(f"/runs/{project_id}").json()["training"]
        if predicate(training):
            return training
        assert time.monotonic() < deadline, f"still {training} after {timeout} s"
        time.sleep(0.2)


def _run_started(backend: Backend, project_id: int) -> str:
    """Start Training and wait until a worker runs the job; returns its id."""
    job = _start_training(backend, project_id)["job"]
    _wait_for(backend, project_id, _running(job), timeout=60)
    return job


def _running(job_id: str) -> Callable[[dict], bool]:
    return lambda t: t.get("state") == "running" and t.get("job_id") == job_id


def _rerun_of(job_id: str) -> Callable[[dict], bool]:
    """A worker runs the run queued when ``job_id``'s run failed with a trigger pending."""
    return lambda t: t.get("state") == "running" and t.get("previous_failure", {}).get("job_id") == job_id


def _failed(t: dict) -> bool:
    return t.get("state") == "failed"


def _horse_of(worker: subprocess.Popen) -> int:
    [horse] = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return int(horse)


def _kill(*procs: subprocess.Popen | None) -> None:
    for proc in procs:
        if proc is not None:
            proc.kill()
            proc.wait()


def _retrain(backend: Backend, project_id: int, killed_at: float, failed_at: float) -> dict[str, float]:
    """Start Training again: a new job is queued (not "coalesced") and a worker runs it."""
    body = _start_training(backend, project_id)
    assert body["status"] == "queued", body
    queued_at = time.monotonic()
    _wait_for(backend, project_id, _running(body["job"]), timeout=60)
    times = {
        "failed_after_s": failed_at - killed_at,
        "queued_after_s": queued_at - killed_at,
        "running_again_after_s": time.monotonic() - killed_at,
    }
    print(f"recovery times: {times}")
    return times


def test_sigkilled_work_horse_is_reported_failed_and_the_next_trigger_trains(
    redis_url: str, settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    backend = _backend(settings, schema, redis_url)
    worker = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "worker.log")
    try:
        job = _run_started(backend, 9101)
        os.kill(_horse_of(worker), signal.SIGKILL)  # the OOM killer's way; the worker itself lives on
        killed_at = time.monotonic()
        training = _wait_for(backend, 9101, _failed, timeout=30)
        failed_at = time.monotonic()
        assert "training worker died" in training["error"] and "signal 9" in training["error"], training
        assert training["job_id"] == job
        times = _retrain(backend, 9101, killed_at, failed_at)  # the same worker takes the new run
        assert times["failed_after_s"] < 10
    finally:
        worker.kill()
        worker.wait()


def test_sigkilled_worker_is_reported_failed_after_the_heartbeat_and_the_next_trigger_trains(
    redis_url: str, settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    backend = _backend(settings, schema, redis_url)
    worker = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "worker.log")
    replacement = None
    try:
        _run_started(backend, 9102)
        os.kill(_horse_of(worker), signal.SIGKILL)
        worker.kill()  # worker and horse gone at once: nobody tells RQ; only the heartbeat stops
        worker.wait()
        killed_at = time.monotonic()
        assert backend.client.get("/runs/9102").json()["training"]["state"] == "running"
        training = _wait_for(backend, 9102, _failed, timeout=HEARTBEAT_S + 30)
        failed_at = time.monotonic()
        assert "no heartbeat" in training["error"], training
        replacement = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "replacement.log")
        times = _retrain(backend, 9102, killed_at, failed_at)
        assert HEARTBEAT_S - 1 < times["failed_after_s"] < HEARTBEAT_S + 10
    finally:
        _kill(worker, replacement)


def test_run_survives_a_redis_restart_and_a_later_death_is_still_reported(
    settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    """Redis SIGKILLed and restarted on the same socket and data (as the stack's supervisor does).

    The run is alive, so it must not be reported failed: the worker reconnects, the heartbeat
    resumes, the run stays "running". Its slot still follows the job: a horse killed after the
    restart is reported failed, and the trigger that arrived during the run trains.
    """
    server = EmbeddedRedis(tmp_path / "redis")
    backend = _backend(settings, schema, server.url)
    worker = start_worker(repo_env(REDIS_URL=server.url), tmp_path / "worker.log")
    try:
        job = _run_started(backend, 9103)
        time.sleep(1.5)  # appendfsync everysec: the "running" state is on disk
        server.proc.kill()
        server.proc.wait()
        time.sleep(3)  # a few heartbeats fail meanwhile
        server = EmbeddedRedis(tmp_path / "redis")
        time.sleep(HEARTBEAT_S + 2)  # long enough for a stopped heartbeat to count as dead
        assert _running(job)(backend.client.get("/runs/9103").json()["training"])
        assert worker.poll() is None, "the RQ worker must ride through a Redis restart"
        assert _start_training(backend, 9103)["status"] == "coalesced"  # the live run keeps its slot

        os.kill(_horse_of(worker), signal.SIGKILL)
        training = _wait_for(backend, 9103, _rerun_of(job), timeout=30)  # the coalesced trigger's run
        assert "training worker died" in training["previous_failure"]["error"], training
    finally:
        worker.kill()
        worker.wait()
        server.stop()


def test_redis_restarted_without_its_data_leaves_nothing_running(
    settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    """A Redis that comes back empty (no persistence, e.g. an external one) forgets the run: the status
    must not claim "running", and the next trigger queues a run that a free worker trains."""
    server = EmbeddedRedis(tmp_path / "redis")
    backend = _backend(settings, schema, server.url)
    worker = start_worker(repo_env(REDIS_URL=server.url), tmp_path / "worker.log")
    spare = None
    try:
        _run_started(backend, 9104)
        server.proc.kill()
        server.proc.wait()
        for data in ("appendonly.aof", "redis.rdb"):
            (tmp_path / "redis" / data).unlink(missing_ok=True)
        server = EmbeddedRedis(tmp_path / "redis")
        assert backend.client.get("/runs/9104").json()["training"]["state"] == "idle"
        body = _start_training(backend, 9104)
        assert body["status"] == "queued", body
        # the first worker still serves the old job
        spare = start_worker(repo_env(REDIS_URL=server.url), tmp_path / "spare.log")
        _wait_for(backend, 9104, _running(body["job"]), timeout=60)
        time.sleep(HEARTBEAT_S / 2)  # the old job's reports must not overwrite the new run's status
        assert _running(body["job"])(backend.client.get("/runs/9104").json()["training"])
    finally:
        _kill(worker, spare)
        server.stop()


def _alive(pid: int) -> bool:
    """From the process table: the pid exists and is not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _worker_processes(model_dir: Path) -> list[int]:
    """Every ``jobqueue.worker`` process of this test, workers and their horses alike (a horse is a fork
    of its worker: same command line, same environment), found in /proc by the test's own MODEL_DIR."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, PermissionError, NotADirectoryError, ProcessLookupError):
            continue
        if b"jobqueue.worker" in cmdline and f"MODEL_DIR={model_dir}".encode() in environ and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_sigkilled_worker_takes_its_horse_along_and_the_next_run_trains_alone(
    redis_url: str, settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    """SIGKILL on the worker process only (not its horse): the horse must not train on as an orphan
    beside the replacement worker's horse; the run is settled failed and the next one trains alone."""
    backend = _backend(settings, schema, redis_url)
    worker = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "worker.log")
    replacement = None
    try:
        job = _run_started(backend, 9105)
        horse = _horse_of(worker)
        worker.kill()
        worker.wait()
        killed_at = time.monotonic()
        while _alive(horse):
            assert time.monotonic() - killed_at < 5, f"the horse {horse} outlived its worker"
            time.sleep(0.05)
        print(f"horse gone {time.monotonic() - killed_at:.2f} s after its worker")
        training = _wait_for(backend, 9105, _failed, timeout=HEARTBEAT_S + 30)
        failed_at = time.monotonic()
        assert training["job_id"] == job and "no heartbeat" in training["error"], training
        replacement = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "replacement.log")
        _retrain(backend, 9105, killed_at, failed_at)
        assert sorted(_worker_processes(tmp_path / "models")) == sorted([replacement.pid, _horse_of(replacement)])
    finally:
        _kill(worker, replacement)


def test_start_training_during_a_run_that_dies_runs_once_more(
    redis_url: str, settings: Settings, schema: Schema, job_env: None, tmp_path: Path
) -> None:
    """Start Training pressed during a run answers "it will run once more"; the run's worker and horse
    are then SIGKILLed. Once the dead run is settled, the promised run is queued and a worker trains it."""
    backend = _backend(settings, schema, redis_url)
    worker = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "worker.log")
    replacement = None
    try:
        job = _run_started(backend, 9106)
        assert _start_training(backend, 9106)["status"] == "coalesced"
        assert backend.client.get("/runs/9106").json()["training"]["rerun_pending"] is True
        os.kill(_horse_of(worker), signal.SIGKILL)
        worker.kill()
        worker.wait()
        replacement = start_worker(repo_env(REDIS_URL=redis_url), tmp_path / "replacement.log")
        training = _wait_for(backend, 9106, _rerun_of(job), timeout=HEARTBEAT_S + 60)
        assert "no heartbeat" in training["previous_failure"]["error"], training
        assert _alive(_horse_of(replacement))  # a process really runs it
        assert _start_training(backend, 9106)["status"] == "coalesced"  # the rerun holds the slot
    finally:
        _kill(worker, replacement)
