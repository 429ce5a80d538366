"""/webhook and training-run scheduling on a real Redis: fast answers, one run per project, coalescing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from backend.runs import TRAIN_QUEUE, Runs
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import Backend, FakePredictor, make_backend


def _train_jobs(url: str) -> list:
    return Queue(TRAIN_QUEUE, connection=redis.Redis.from_url(url)).get_jobs()


def test_start_training_enqueues_a_job_and_answers_at_once(backend: Backend, backend_redis_url: str) -> None:
    started = time.perf_counter()
    response = backend.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 5, "title": "p"}})
    assert time.perf_counter() - started < 1.0
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    [job] = _train_jobs(backend_redis_url)
    assert job.id == body["job"]
    assert job.func_name == "backend.training.train_project_job" and job.args == (5,)
    status = backend.client.get("/runs/5").json()
    assert status["training"]["state"] == "queued" and status["model_version"] == "untrained"
    assert backend.client.post("/job_status", json={"job": body["job"]}).json()["job_status"] == "queued"


def test_second_trigger_while_one_is_queued_is_coalesced(backend: Backend, backend_redis_url: str) -> None:
    first = backend.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 6}}).json()
    second = backend.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 6}}).json()
    assert first["status"] == "queued" and second["status"] == "coalesced"
    assert len(_train_jobs(backend_redis_url)) == 1
    other = backend.client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 7}}).json()
    assert other["status"] == "queued"  # projects do not block each other


def test_job_loop_reruns_once_for_triggers_during_a_run(backend_redis_url: str) -> None:
    runs = Runs(redis.Redis.from_url(backend_redis_url), job_timeout=60)
    job = runs.request_training(8, "button")
    assert job.enqueued and job.job_id is not None
    assert runs.consume_pending(8, job.job_id)  # the job starts its first run
    assert not runs.request_training(8, "button").enqueued  # two clicks during the run ...
    assert not runs.request_training(8, "button").enqueued
    assert runs.consume_pending(8, job.job_id)  # ... give exactly one more run
    assert not runs.consume_pending(8, job.job_id)  # then the project is idle
    assert runs.request_training(8, "button").enqueued  # and the next click queues a new job


def test_annotation_events_trigger_training_every_n(settings: Settings, schema: Schema, backend_redis_url: str) -> None:
    every_two = Settings(**{**settings.__dict__, "retrain_every": 2})
    client = make_backend(every_two, FakePredictor(schema), backend_redis_url).client
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 9}, "annotation": {"id": 1}, "task": {"id": 1}}
    assert client.post("/webhook", json=event).json()["status"] == "counted"
    assert client.get("/runs/9").json()["new_annotations"] == 1
    assert client.post("/webhook", json={**event, "action": "ANNOTATION_UPDATED"}).json()["status"] == "queued"
    assert client.get("/runs/9").json()["new_annotations"] == 0
    assert len(_train_jobs(backend_redis_url)) == 1


def test_annotation_events_are_ignored_when_retraining_is_off(backend: Backend, backend_redis_url: str) -> None:
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 10}, "annotation": {"id": 1}}
    assert backend.client.post("/webhook", json=event).json()["status"] == "ignored"
    assert _train_jobs(backend_redis_url) == []


def test_unknown_events_get_200(backend: Backend, backend_redis_url: str) -> None:
    for action in ("PROJECT_UPDATED", "TASKS_CREATED", "SOMETHING_NEW"):
        response = backend.client.post("/webhook", json={"action": action, "project": {"id": 1}})
        assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert _train_jobs(backend_redis_url) == []


def test_failed_run_is_reported_and_frees_the_project(
    backend_redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job body itself (run by an RQ worker in this process) with Label Studio down: status says why,
    next click works."""
    for key, value in {
        "REDIS_URL": backend_redis_url,
        "LABEL_STUDIO_URL": "http://127.0.0.1:9",
        "LABEL_STUDIO_API_KEY": "token",
        "MODEL_DIR": str(tmp_path / "models"),
    }.items():
        monkeypatch.setenv(key, value)
    conn = redis.Redis.from_url(backend_redis_url)
    runs = Runs(conn, job_timeout=60)
    job_id = runs.request_training(11, "button").job_id
    assert job_id is not None
    SimpleWorker([Queue(TRAIN_QUEUE, connection=conn)], connection=conn).work(burst=True)  # in this process
    assert Job.fetch(job_id, connection=conn).get_status() == "failed"
    status = runs.status(11)
    assert status["state"] == "failed" and "http://127.0.0.1:9 is not reachable" in status["error"]
    assert runs.request_training(11, "button").enqueued
