"""The API-key leak, end to end: hostile image URLs imported into a real Label Studio, then "Retrieve Predictions".

Tasks whose image is ``"/\\t//127.0.0.1:<canary>/x"`` and similar once made the backend send
``Authorization: Token <admin token>`` to the canary's port, and ``..`` paths made it GET Label Studio's
API with the key. Here a real Label Studio sends such tasks (next to one uploaded image) to a real
``python -m backend`` serving a real, untrained checkpoint; the canary HTTP server must see nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from backend.model_store import ModelStore
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import GENERIC, FakePredictor, animal, make_backend, predict_payload
from tests.support.backend import (
    GENERIC_CONFIG,
    MediaServer,
    backend_env,
    random_checkpoint,
    retrieve_predictions,
    start_backend,
    synthetic_image,
)
from tests.support.labelstudio import LabelStudioServer

pytestmark = [pytest.mark.labelstudio]


@pytest.fixture
def canary() -> Iterator[MediaServer]:
    server = MediaServer("never-the-real-token", {})
    yield server
    server.stop()


def test_retrieve_predictions_never_sends_the_token_elsewhere(
    label_studio: LabelStudioServer, redis_url: str, canary: MediaServer, tmp_path: Path
) -> None:
    ls = label_studio
    project = ls.client.projects.create(title="hostile media URLs", label_config=GENERIC_CONFIG.read_text())
    assert project.id is not None  # the SDK types it Optional; Label Studio always returns it
    png, _ = synthetic_image(0)
    [good_task] = ls.import_images(project.id, {"animal.png": png}).values()
    host = urlsplit(canary.url).netloc
    hostile = [
        *(f"/{c}//{host}/x" for c in ("\t", " ", "\r", "\n", "\x00")),
        f"//{host}/x",
        f"http://{host}/data/upload/1/x.png",
        "/data/upload/1/../../../api/current-user/token",
        "/data/upload/%2e%2e/%2e%2e/api/current-user/token",
    ]
    imported = httpx.post(
        f"{ls.url}/api/projects/{project.id}/import", headers=ls.headers, timeout=60,
        json=[{"image": url} for url in hostile],
    )  # fmt: skip
    imported.raise_for_status()

    store = ModelStore(tmp_path / "models")
    version = store.publish(project.id, random_checkpoint(tmp_path / "random.pt", min_size=64, max_size=96), {})
    backend_url, backend = start_backend(backend_env(ls, redis_url, tmp_path / "models"), tmp_path / "backend.log")
    try:
        ls.client.ml.create(project=project.id, url=backend_url, title="multitask", is_interactive=False)
        retrieve_predictions(ls, project.id)
        log = backend.log_tail(200_000)
    finally:
        backend.stop()
    assert canary.requests == [] and canary.authorizations == []
    assert f"predict: {len(hostile) + 1} task(s), model {version}" in log, log[-3000:]
    assert log.count("is refused") == len(hostile), log[-3000:]
    assert log.count("control character, whitespace") == 5  # Label Studio passed them on unchanged
    assert f"task {good_task}:" not in log  # the uploaded image was fetched and predicted on


def test_media_label_studio_refuses_fails_that_task_only(label_studio: LabelStudioServer, tmp_path: Path) -> None:
    """A 403 on one task's image is that task's error; only a 401/403 on the key check means a bad key."""
    ls = label_studio
    project = ls.client.projects.create(title="refused media", label_config=GENERIC)
    assert project.id is not None
    png, _ = synthetic_image(0)
    [good] = ls.import_images(project.id, {"animal.png": png}).values()
    good_url = ls.client.tasks.get(str(good)).data["image"]
    refused = ["/data/local-files/?d=pets/cat.png", "/storage-data/uploaded/?filepath=upload/1/cat.png"]
    for url in refused:  # the oracle: Label Studio itself refuses this key these files
        assert httpx.get(f"{ls.url}{url}", headers=ls.headers, timeout=30).status_code == 403, url
    payload = predict_payload(project=f"{project.id}.1700000000")
    payload["tasks"] = [
        {"id": task_id, "project": project.id, "data": {"image": url}}
        for task_id, url in [(good, good_url), (good + 1000, refused[0]), (good + 1001, refused[1])]
    ]
    schema = Schema.from_label_config(GENERIC)
    settings = Settings(label_studio_url=ls.url, label_studio_api_key=ls.token, model_dir=tmp_path / "models")
    backend = make_backend(settings, FakePredictor(schema, [animal(schema)]))
    backend.publish(project.id)
    response = backend.client.post("/predict", json=payload)
    assert response.status_code == 200, response.text
    fetched, local, storage = response.json()["results"]
    assert fetched["result"] and "error" not in fetched
    for item, task_id in [(local, good + 1000), (storage, good + 1001)]:
        assert item["result"] == [] and item["error"].startswith(f"task {task_id}: ") and "HTTP 403" in item["error"]

    wrong = Settings(**{**settings.__dict__, "label_studio_api_key": "0" * 40})
    rejected = make_backend(wrong, FakePredictor(schema, [animal(schema)]))
    response = rejected.client.post("/predict", json=payload)
    assert response.status_code == 503 and "rejected LABEL_STUDIO_API_KEY" in response.json()["error"]
