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
