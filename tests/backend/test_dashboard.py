"""The dashboard's routes with the real app, real Redis and a stand-in predictor (the browser test in
``tests/browser/test_dashboard.py`` drives a real training run through Label Studio).

Oracles: the ``current`` file on disk and the ``model_version`` of ``/predict`` after a rollback; the
SVG plots parsed as XML; the few-tasks note against ``HOLDOUT_MIN_TASKS`` arithmetic.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import cast

import pytest

from backend.runs import Runs
from backend.settings import Settings
from backend.training import LOSS_POINTS, _ProgressReporter
from combined_coco.schema import Schema
from jobqueue.connection import connect
from tests.backend.backend_fakes import Backend, FakePredictor, animal, make_backend, predict_payload

AUTH = {"Authorization": "Basic " + base64.b64encode(b"annotator:s3cret").decode()}


@pytest.fixture
def guarded(settings: Settings, schema: Schema, backend_redis_url: str) -> Backend:
    with_auth = settings.model_copy(update={"basic_auth_user": "annotator", "basic_auth_pass": "s3cret"})
    return make_backend(with_auth, FakePredictor(schema, [animal(schema)]), backend_redis_url)


def test_dashboard_needs_the_backends_credentials(guarded: Backend) -> None:
    guarded.publish(3)
    for path in ("/dashboard", "/dashboard/3", "/dashboard/3/status", "/dashboard/3/scores.svg"):
        assert guarded.client.get(path).status_code == 401, path
        assert guarded.client.get(path, headers=AUTH).status_code == 200, path
    assert guarded.client.post("/dashboard/3/current", json={"version": "x"}).status_code == 401


def test_few_tasks_say_how_many_more_instead_of_a_bare_null(guarded: Backend, settings: Settings) -> None:
    checkpoint = Path(guarded.store.root.url) / "fake.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"weights")
    guarded.store.publish(5, checkpoint, {"tasks": 4, "heldout": None, "training_set_fit": {"bbox_AP": 0.5}})

    body = guarded.client.get("/runs/5", headers=AUTH).json()
    need = settings.holdout_min_tasks - 4
    assert body["versions"][0]["heldout"] is None
    assert f"annotate {need} more" in body["versions"][0]["heldout_note"]
    assert body["quality"]["more_tasks_needed"] == need and body["quality"]["annotated_tasks"] == 4
    page = guarded.client.get("/dashboard/5", headers=AUTH).text
    assert f"annotate {need} more" in page

    edit_cost = {"ratio": 0.25, "actions": 30, "from_scratch": 120}
    guarded.store.publish(
        5, checkpoint, {"tasks": 12, "heldout": {"tasks": 3, "bbox_AP": 0.4}, "heldout_edit_cost": edit_cost}
    )
    body = guarded.client.get("/runs/5", headers=AUTH).json()
    assert body["quality"] is None and "heldout_note" not in body["versions"][1]
    page = guarded.client.get("/dashboard/5", headers=AUTH).text  # the held-out edit cost, as the annotator reads it
    assert "0.25" in page and "30 of 120 actions" in page


def test_rollback_changes_current_and_what_predict_serves(guarded: Backend) -> None:
    first, second = guarded.publish(2), guarded.publish(2)
    payload = predict_payload(project="2.1700000000")
    assert guarded.client.post("/predict", json=payload, headers=AUTH).json()["model_version"] == second

    # a cross-site form can only send form or text bodies: the rollback takes JSON only
    form = guarded.client.post("/dashboard/2/current", data={"version": first}, headers=AUTH)
    assert form.status_code == 422
    unknown = guarded.client.post("/dashboard/2/current", json={"version": "v0009-x"}, headers=AUTH)
    assert unknown.status_code == 400 and "v0009-x" in unknown.json()["error"]
    assert guarded.store.current_version(2) == second

    answer = guarded.client.post("/dashboard/2/current", json={"version": first}, headers=AUTH)
    assert answer.json() == {"project": 2, "model_version": first, "previous": second}
    assert (guarded.store.project_dir(2) / "current").read_bytes().decode().strip() == first
    assert guarded.client.post("/predict", json=payload, headers=AUTH).json()["model_version"] == first


def test_plots_are_svg_documents(guarded: Backend) -> None:
    guarded.publish(4)
    for name in ("scores.svg", "loss.svg"):
        response = guarded.client.get(f"/dashboard/4/{name}", headers=AUTH)
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert ET.fromstring(response.content).tag.endswith("svg")


def test_progress_history_stays_bounded_and_spans_the_run(backend_redis_url: str) -> None:
    """A 5000-step run reports at most LOSS_POINTS loss points, from its first steps to its last."""
    runs = Runs(connect(backend_redis_url), job_timeout=60)
    runs.conn.set("lsmt:backend:8:active", "job-8")
    reporter = _ProgressReporter(8, lambda **fields: runs.report(8, "job-8", **fields))
    for step in range(1, 5001):
        reporter(step, 5000, {"loss": 10.0 / step, "classifier": 1.0})
    history = json.loads(cast(bytes, runs.conn.hget("lsmt:backend:8:status", "loss_history")))
    assert len(history) <= LOSS_POINTS
    assert history[0][0] < 5000 * 0.02 and history[-1][0] == 5000
    assert [s for s, _ in history] == sorted(s for s, _ in history)


def test_a_failed_first_run_is_an_error_for_label_studios_card_until_a_version_serves(
    guarded: Backend, backend_redis_url: str
) -> None:
    """Label Studio shows its model card as *Error* when ``/setup`` answers an error (``MLBackend.update_state``)."""
    runs = Runs(connect(backend_redis_url), job_timeout=60)
    setup = {"project": "6.1700000000"}
    assert guarded.client.post("/setup", json=setup, headers=AUTH).status_code == 200
    runs.conn.set("lsmt:backend:6:active", "job-6")
    assert runs.fail(6, "job-6", "pretrained weights x could not be loaded; set TRAIN_INIT=none")

    answer = guarded.client.post("/setup", json=setup, headers=AUTH)
    assert answer.status_code == 503
    assert "set TRAIN_INIT=none" in answer.json()["error"] and "/dashboard/6" in answer.json()["error"]

    version = guarded.publish(6)  # a version is published: the card is Connected again
    assert guarded.client.post("/setup", json=setup, headers=AUTH).json()["model_version"] == version
    runs.conn.set("lsmt:backend:6:active", "job-7")
    assert runs.fail(6, "job-7", "a retrain failed")
    assert guarded.client.post("/setup", json=setup, headers=AUTH).status_code == 200  # the version keeps serving


def test_links_name_dashboard_url_where_a_browser_opens_the_backend(
    settings: Settings, schema: Schema, backend_redis_url: str
) -> None:
    """docker compose: Label Studio calls http://ml-backend:9090, a browser on the host opens localhost:9090."""
    public = settings.model_copy(update={"dashboard_url": "http://localhost:9090"})
    backend = make_backend(public, FakePredictor(schema, [animal(schema)]), backend_redis_url)
    inside = "http://ml-backend:9090"  # the address Label Studio calls, which the request carries
    started = backend.client.post(f"{inside}/webhook", json={"action": "START_TRAINING", "project": {"id": 8}})
    assert started.status_code == 201 and started.json()["dashboard"] == "http://localhost:9090/dashboard/8"

    runs = Runs(connect(backend_redis_url), job_timeout=60)
    runs.conn.set("lsmt:backend:9:active", "job-9")
    assert runs.fail(9, "job-9", "pretrained weights x could not be loaded; set TRAIN_INIT=none")
    error = backend.client.post(f"{inside}/setup", json={"project": "9.1700000000"}).json()["error"]
    assert "(see http://localhost:9090/dashboard/9)" in error and "ml-backend" not in error
