"""Auth and the errors a user sees when Label Studio, its token or Redis are not usable."""

from __future__ import annotations

import base64
import logging
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.__main__ import build_parser
from backend.app import create_app
from backend.model_store import ModelStore
from backend.settings import Settings, SettingsError
from backend.training import TrainingError, failure_text
from combined_coco.schema import Schema
from jobqueue.connection import EmbeddedRedis
from multitask.engines import Predictor
from tests.backend.backend_fakes import (
    GENERIC,
    TOKEN,
    FakePredictor,
    animal,
    make_backend,
    png_bytes,
    predict_payload,
)
from tests.support.backend import MediaServer, random_checkpoint


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_and_bearer_token(settings: Settings, schema: Schema) -> None:
    secured = Settings(
        **{**settings.__dict__, "basic_auth_user": "ls", "basic_auth_pass": "s3cret", "bearer_token": "tok"}
    )
    client = make_backend(secured, FakePredictor(schema, [animal(schema)])).client
    body = {"project": "1.1", "schema": ""}
    assert client.get("/health").status_code == 200  # liveness stays open for orchestrators
    denied = client.post("/setup", json=body)
    assert denied.status_code == 401 and "Basic Auth" in denied.json()["error"]
    assert client.post("/setup", json=body, headers=_basic("ls", "wrong")).status_code == 401
    assert client.post("/setup", json=body, headers=_basic("ls", "s3cret")).status_code == 200
    assert client.post("/setup", json=body, headers={"Authorization": "Bearer tok"}).status_code == 200
    assert client.post("/setup", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_label_studio_unreachable_is_a_503_with_a_message(settings: Settings, schema: Schema) -> None:
    offline = Settings(**{**settings.__dict__, "label_studio_url": "http://127.0.0.1:9"})
    backend = make_backend(offline, FakePredictor(schema, [animal(schema)]))
    backend.publish(1)
    response = backend.client.post("/predict", json=predict_payload())
    assert response.status_code == 503
    assert "http://127.0.0.1:9 is not reachable" in response.json()["error"]


def test_rejected_token_is_a_503_naming_the_api_key(settings: Settings, schema: Schema) -> None:
    wrong = Settings(**{**settings.__dict__, "label_studio_api_key": TOKEN + "x"})
    backend = make_backend(wrong, FakePredictor(schema, [animal(schema)]))
    backend.publish(1)
    response = backend.client.post("/predict", json=predict_payload())
    assert response.status_code == 503
    assert "rejected LABEL_STUDIO_API_KEY" in response.json()["error"]


def test_missing_label_studio_settings_are_explained(settings: Settings, schema: Schema) -> None:
    unset = Settings(**{**settings.__dict__, "label_studio_url": None})
    backend = make_backend(unset, FakePredictor(schema, [animal(schema)]))
    backend.publish(1)
    response = backend.client.post("/predict", json=predict_payload())
    assert response.status_code == 503 and "LABEL_STUDIO_URL" in response.json()["error"]


def test_redis_down_is_a_503_not_a_traceback(settings: Settings, schema: Schema) -> None:
    client = make_backend(settings, FakePredictor(schema)).client  # Redis URL points at no server
    response = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert response.status_code == 503
    assert "not reachable" in response.json()["error"] and "Traceback" not in response.text


def test_bad_labeling_config_is_a_422(settings: Settings, schema: Schema) -> None:
    backend = make_backend(settings, FakePredictor(schema))
    backend.publish(1)
    response = backend.client.post(
        "/predict", json=predict_payload(config="<View><Image name='i' value='$image'/></View>")
    )
    assert response.status_code == 422 and "labeling config" in response.json()["error"]


def test_setup_rejects_a_config_the_backend_cannot_serve(settings: Settings, schema: Schema) -> None:
    client = make_backend(settings, FakePredictor(schema)).client
    response = client.post("/setup", json={"project": "3.1", "schema": "<View><Image name='i' value='$image'/></View>"})
    assert response.status_code == 422 and "PolygonLabels" in response.json()["error"]


def test_predict_without_label_config_is_a_400(settings: Settings, schema: Schema) -> None:
    backend = make_backend(settings, FakePredictor(schema))
    backend.publish(1)
    response = backend.client.post("/predict", json={**predict_payload(), "label_config": None})
    assert response.status_code == 400 and "label_config" in response.json()["error"]


@pytest.mark.parametrize("env", [{"BASIC_AUTH_USER": "ls"}, {"BASIC_AUTH_PASS": "s3cret"}])
def test_half_a_basic_auth_configuration_refuses_to_start(env: dict[str, str]) -> None:
    # it used to run with auth off (password only) or accept any password (user only)
    with pytest.raises(SettingsError, match="set both"):
        Settings.from_env(env)


def test_api_docs_need_credentials_when_auth_is_on(settings: Settings, schema: Schema) -> None:
    secured = Settings(**{**settings.__dict__, "bearer_token": "tok"})
    client = make_backend(secured, FakePredictor(schema)).client
    for path in ("/docs", "/redoc", "/openapi.json", "/runs/1"):
        assert client.get(path).status_code == 401, path
    assert client.get("/openapi.json", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_the_server_listens_on_localhost_unless_told_otherwise() -> None:
    assert build_parser().parse_args([]).host == "127.0.0.1"


def test_one_task_with_an_unusable_url_does_not_fail_the_batch(settings: Settings, schema: Schema) -> None:
    backend = make_backend(settings, FakePredictor(schema, [animal(schema)]))
    backend.publish(1)
    payload = predict_payload()
    payload["tasks"] = [{"id": 1, "data": {"image": "http://127.0.0.1:99999/x.png"}}, *payload["tasks"]]
    response = backend.client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    bad, good = response.json()["results"]
    assert "task 1" in bad["error"] and "port" in bad["error"] and good["result"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/predict", {**predict_payload(), "tasks": "abc"}, 400),
        ("/predict", {**predict_payload(), "tasks": ["abc"]}, 400),
        ("/predict", {**predict_payload(), "tasks": [{"id": 1, "data": "abc"}]}, 200),  # that task's error
        ("/predict", {**predict_payload(), "label_config": 5}, 400),
        ("/predict", {"tasks": "abc"}, 400),
        ("/predict", [1, 2], 422),
        ("/setup", {"project": "1.1", "schema": 5}, 400),
        ("/webhook", {"action": ["x"]}, 400),
        ("/webhook", "START_TRAINING", 422),
    ],
)
def test_malformed_payloads_are_client_errors_in_the_documented_shape(
    settings: Settings, schema: Schema, path: str, body: object, status: int
) -> None:
    backend = make_backend(settings, FakePredictor(schema, [animal(schema)]))
    backend.publish(1)
    response = backend.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert status == 200 or set(response.json()) == {"error"}
    assert str(Path(settings.model_dir).parent) not in response.text


def test_a_corrupt_published_model_falls_back_to_the_newest_that_loads(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Real checkpoints and the real loader: v1 loads, v2 (published last) is truncated."""
    store = ModelStore(settings.model_dir)
    good = store.publish(1, random_checkpoint(tmp_path / "good.pt", min_size=64, max_size=96), {})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((store.checkpoint(1, good)).read_bytes()[:5000])
    broken = store.publish(1, truncated, {})
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    setup = {"project": "1.1", "schema": GENERIC}
    with caplog.at_level(logging.WARNING, logger="backend.model_store"):
        for _ in range(3):
            response = client.post("/predict", json=predict_payload())
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == good
    assert sum(f"serving {good}" in r.getMessage() for r in caplog.records) == 1  # logged once, not per request
    answer = client.post("/setup", json=setup).json()
    assert answer["model_version"] == good and broken in answer["warning"] and str(tmp_path) not in answer["warning"]

    shutil.rmtree(Path(settings.model_dir) / "1" / good)  # nothing loadable left: a 503 that says what to do
    store.pointer(1).write_bytes(f"{broken}\n".encode())
    response = client.post("/predict", json=predict_payload())
    assert response.status_code == 503 and "train the project again" in response.json()["error"]
    assert str(tmp_path) not in response.text and "Traceback" not in response.text


# A server path (the data directory, a Redis socket) or a memory address ("<_io.BytesIO object at 0x7f..>").
SERVER_DETAIL = re.compile(r"(?<![\w:/.%-])/(?:tmp|home|root|work|usr|var|opt|srv|run|proc|etc)/|0x[0-9a-fA-F]{4,}")


def _no_model(_: Path) -> Predictor:
    raise AssertionError("these requests load no model")


def test_error_bodies_name_no_server_path_or_memory_address(
    settings: Settings, schema: Schema, media_server: MediaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faults whose messages used to reach the client with a path or an address, checked by a regex of their own."""
    media_server.files["/data/upload/1/junk.png"] = b"this is not an image"
    media_server.files["/data/upload/1/cut.png"] = png_bytes()[:60]
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("LSMT_DATA_DIR", str(tmp_path / "no-stack"))  # no redis.url: the stack is not running
    socket = f"unix://{tmp_path}/redis/redis.sock"
    standalone = TestClient(create_app(settings, loader=_no_model), raise_server_exceptions=False)
    redis_gone = make_backend(settings, FakePredictor(schema), socket)  # RedisUnavailable from the connect check
    lost = EmbeddedRedis(tmp_path / "lost")  # connected to, then stopped: redis.ConnectionError naming its socket
    redis_lost = TestClient(create_app(settings, loader=_no_model, redis_url=lost.url), raise_server_exceptions=False)
    assert redis_lost.get("/runs/1").status_code == 200
    lost.stop()
    redis_gone.publish(1)
    media = predict_payload()
    media["tasks"] = [
        {"id": 21, "data": {"image": "/data/upload/1/junk.png"}},
        {"id": 22, "data": {"image": "/data/upload/1/cut.png"}},
    ]
    start = {"action": "START_TRAINING", "project": {"id": 1}}
    answers = {
        "standalone /runs": standalone.get("/runs/1"),
        "standalone /job_status": standalone.post("/job_status", json={"job": "x"}),
        "standalone /webhook": standalone.post("/webhook", json=start),
        "/runs, Redis gone": redis_gone.client.get("/runs/1"),
        "/webhook, Redis gone": redis_gone.client.post("/webhook", json=start),
        "/runs, Redis lost": redis_lost.get("/runs/1"),
        "/job_status, Redis lost": redis_lost.post("/job_status", json={"job": "x"}),
        "unreadable images": redis_gone.client.post("/predict", json=media),
    }
    for fault, response in answers.items():
        assert SERVER_DETAIL.search(response.text) is None, (fault, response.text)
        assert str(tmp_path) not in response.text and "Traceback" not in response.text, (fault, response.text)
    assert all(answers[f].status_code == 503 and "Redis" in answers[f].json()["error"] for f in list(answers)[:-1])
    junk, cut = answers["unreadable images"].json()["results"]
    assert junk["error"].startswith("task 21: not an image Pillow can read") and cut["error"].startswith("task 22:")


def test_a_run_that_failed_on_a_file_reports_no_path() -> None:
    """/runs shows a failed run's message; an OSError's carries the file's server path, which stays in the log."""
    text = failure_text(FileNotFoundError(2, "No such file or directory", "/srv/lsmt/models/1/v0001/model.pt"))
    assert SERVER_DETAIL.search(text) is None and text.startswith("FileNotFoundError: No such file or directory")
    assert failure_text(TrainingError("project 1 has no annotated tasks")) == "project 1 has no annotated tasks"
