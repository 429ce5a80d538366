"""Auth and the errors a user sees when Label Studio, its token or Redis are not usable."""

from __future__ import annotations

import base64

from tests.backend.backend_fakes import TOKEN, FakePredictor, animal, make_backend, predict_payload

from backend.settings import Settings
from combined_coco.schema import Schema


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_and_bearer_token(settings: Settings, schema: Schema) -> None:
    secured = Settings(**{**settings.__dict__, "basic_auth_user": "ls", "basic_auth_pass": "s3cret", "bearer_token": "tok"})
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
    response = backend.client.post("/predict", json=predict_payload(config="<View><Image name='i' value='$image'/></View>"))
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
