"""An annotator watches training on the backend's ``/dashboard`` in headless Debian chromium.

The whole path is real: Label Studio's Start Training (``POST /api/ml/<id>/train``) reaches the
backend's webhook, an RQ worker trains, and the page (behind the backend's Basic auth, which the
browser sends like any user's) is read as a person would read it:

1. a worker set to ``TRAIN_INIT=coco`` with an empty ``TORCH_HOME`` cannot load weights offline: the
   page shows that reason and what to set instead;
2. with ``TRAIN_INIT=none`` the run's progress bar moves on the open page (two readings differ);
3. after a second Start Training, two versions show their training-set fit, the note on how many
   more tasks held-out scores need, and the scores plot with both versions;
4. "Make current" on the first version (after the confirmation) rewrites ``current`` on disk and
   ``/predict`` answers with that version.

Training is tiny (few steps at ~200 px). Screenshots: ``artifacts/dashboard_*.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from backend.settings import Settings
from stack.services import REPO
from tests.support.backend import (
    GENERIC_CONFIG,
    Process,
    backend_env,
    create_annotated_project,
    start_backend,
    start_train_worker,
)
from tests.support.labelstudio import CHROMIUM, CHROMIUM_ARGS, LabelStudioServer, logged_in_page

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio, pytest.mark.slow]

ARTIFACTS = REPO / "artifacts"
USER, PASSWORD = "annotator", "dashboard-test"
TIMEOUT_S = 900  # a shared 2-core machine trains 5-20x slower than idle
MIN_TASKS = Settings.model_fields["holdout_min_tasks"].default  # HOLDOUT_MIN_TASKS, unset in the test
ANNOTATED = MIN_TASKS // 2  # too few for held-out scores: the page must say how many more tasks it takes


def test_dashboard_shows_progress_failure_versions_and_rolls_back(
    label_studio: LabelStudioServer, redis_url: str, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)")
    ls = label_studio
    own_db = f"{redis_url}{'&' if '?' in redis_url else '?'}db=11"  # no other test's worker takes these runs
    redis.Redis.from_url(own_db).flushdb()
    env = {
        **backend_env(ls, own_db, tmp_path / "models"),
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "TRAIN_STEPS": "24",  # 1-2 s a step on 2 idle cores: the page sees the bar at several places
        "RETRAIN_STEPS": "4",
    }
    backend_url, backend = start_backend(env, tmp_path / "backend.log")
    workers: list[Process] = []
    try:
        _journey(ls, env, backend_url, backend, workers, tmp_path)
    finally:
        for process in [*workers, backend]:
            process.stop()


def _journey(
    ls: LabelStudioServer, env: dict[str, str], backend_url: str, backend: Process, workers: list[Process], tmp: Path
) -> None:
    from playwright.sync_api import Dialog, expect, sync_playwright

    auth = httpx.BasicAuth(USER, PASSWORD)
    project_id, _, unlabeled = create_annotated_project(ls, "dashboard", images=ANNOTATED, unlabeled=1)
    ml = ls.client.ml.create(
        project=project_id, url=backend_url, title="multitask", is_interactive=False,
        auth_method="BASIC_AUTH", basic_auth_user=USER, basic_auth_pass=PASSWORD,
    )  # fmt: skip
    assert ml.id is not None
    ml_id = ml.id

    def start_training() -> None:  # Settings > Model > card menu > Start Training
        ls.client.ml.train(id=ml_id)

    def runs() -> dict[str, Any]:
        return httpx.get(f"{backend_url}/runs/{project_id}", auth=auth, timeout=10).json()

    # 1. a run that cannot start: COCO weights offline, nothing in TORCH_HOME
    offline = {**env, "TRAIN_INIT": "coco", "TORCH_HOME": str(tmp / "empty-torch-home")}
    workers.append(start_train_worker(offline, tmp / "worker-coco.log"))
    start_training()
    _wait(lambda: runs()["training"].get("state") == "failed", workers[-1], "failure of the TRAIN_INIT=coco run")
    workers.pop().stop()
    assert f"/dashboard/{project_id}" in backend.log_tail(), "Start Training logs where to watch the run"
    _expect_card(ls, project_id, "Error", "dashboard_ls_card_failed.png")  # no version yet: /setup answers 503

    worker = start_train_worker(env, tmp / "worker.log")
    workers.append(worker)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1100, "height": 1000}, http_credentials={"username": USER, "password": PASSWORD}
            )
            page = context.new_page()
            page.goto(f"{backend_url}/dashboard/{project_id}")
            reason = page.locator("#failure-reason").inner_text()
            assert "could not be loaded" in reason and "TRAIN_INIT=none" in reason, reason
            _screenshot(page, "dashboard_failed.png")

            # 2. a run that trains: the open page's bar moves as the worker reports steps
            start_training()
            readings: list[float] = []
            deadline = time.monotonic() + TIMEOUT_S
            while len(set(readings)) < 2:
                assert time.monotonic() < deadline, f"the bar never moved: {readings}\n{worker.log_tail()}"
                assert runs()["training"].get("state") != "failed", worker.log_tail()
                state = page.locator("#run").get_attribute("data-state")  # the page reloads when it changes
                value = float(page.locator("#progress").get_attribute("aria-valuenow") or 0)
                if state == "running" and 0 < value < 100:
                    readings.append(value)
                time.sleep(0.5)
            assert readings == sorted(readings), readings
            # the README's picture: the run half done, its loss curve drawn
            expect(page.locator("#progress")).to_have_attribute(
                "aria-valuenow", re.compile(r"^([5-9]\d(\.\d+)?|100(\.0)?)$"), timeout=TIMEOUT_S * 1000
            )
            _screenshot(page, "dashboard_training.png")
            _wait(lambda: runs()["training"].get("state") == "succeeded", worker, "the first version")
            first = runs()["model_version"]

            # 3. a second version; both listed with their scores and plotted
            start_training()
            _wait(lambda: len(runs()["versions"]) == 2 and runs()["training"]["state"] == "succeeded", worker, "v2")
            second = runs()["model_version"]
            rows = page.locator("#versions tr[data-version]")
            expect(rows).to_have_count(2, timeout=30_000)  # the page reloads itself when a version appears
            expect(page.locator("#current")).to_have_text(second)
            assert [rows.nth(i).get_attribute("data-version") for i in range(2)] == [second, first]
            for i in range(2):
                fit = rows.nth(i).locator("td.fit").inner_text()
                assert re.fullmatch(r"\d\.\d{3} / \d\.\d{3} / \d\.\d{3}", fit), fit
                held = rows.nth(i).locator("td.heldout").inner_text()
                assert f"annotate {MIN_TASKS - ANNOTATED} more" in held, held
            plot = page.locator("#scores-plot")
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.complete && img.naturalWidth > 0")
            svg = httpx.get(f"{backend_url}/dashboard/{project_id}/scores.svg", auth=auth, timeout=30).text
            assert first.split("-")[0] in svg and second.split("-")[0] in svg  # one tick per version
            _screenshot(page, "dashboard_versions.png", full_page=True)

            # 4. rollback from the page, after its confirmation
            payload = _predict_payload(ls, project_id, unlabeled[0])
            served = httpx.post(f"{backend_url}/predict", json=payload, auth=auth, timeout=120)
            assert served.json()["results"][0]["model_version"] == second
            messages: list[str] = []

            def confirm(dialog: Dialog) -> None:
                messages.append(dialog.message)
                dialog.accept()

            page.once("dialog", confirm)
            page.locator(f"button.rollback[data-version='{first}']").click()
            expect(page.locator("#current")).to_have_text(first, timeout=30_000)
            assert messages and first in messages[0], messages
        finally:
            browser.close()
    _expect_card(ls, project_id, "Connected", "dashboard_ls_card.png")
    assert (tmp / "models" / str(project_id) / "current").read_text().strip() == first
    served = httpx.post(f"{backend_url}/predict", json=payload, auth=auth, timeout=120)
    assert served.json()["results"][0]["model_version"] == first
    assert runs()["model_version"] == first


def _expect_card(ls: LabelStudioServer, project_id: int, state: str, screenshot: str) -> None:
    """Label Studio 1.23's model card (Settings > Model): title, shortened URL, age and a state label."""
    from playwright.sync_api import expect

    with logged_in_page(ls) as page:
        page.goto(f"{ls.url}/projects/{project_id}/settings/ml")
        card = page.locator(".lsf-backend-card")
        expect(card).to_contain_text("multitask", timeout=60_000)
        expect(card).to_contain_text(state)
        _screenshot(page, screenshot)


def _predict_payload(ls: LabelStudioServer, project_id: int, task_id: int) -> dict[str, Any]:
    """What Label Studio sends for one task (``ml/api_connector.py``), built from the task as stored."""
    task = httpx.get(f"{ls.url}/api/tasks/{task_id}", headers=ls.headers, timeout=30).json()
    return {
        "tasks": [{"id": task_id, "project": project_id, "data": task["data"]}],
        "project": f"{project_id}.{int(time.time())}",
        "label_config": GENERIC_CONFIG.read_text(),
        "params": {"login": None, "password": None, "context": None},
    }


def _wait(done: Callable[[], bool], worker: Process, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT_S} s\n{worker.log_tail()}"
        time.sleep(1)


def _screenshot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)
