"""A real browser opens a new, unlabeled task and sees the model's polygon and keypoints pre-drawn.

Reuses the trained project of the backend end-to-end journey (:func:`backend.testing.shared_trained_project`;
trained here if the integration test did not run in this session), logs in to Label Studio as the
admin in headless Debian chromium and opens the task in the labeling editor. The screenshot is saved
as ``artifacts/predictions_view.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from backend.testing import TrainedProject, retrieve_predictions, shared_trained_project, stop_shared_processes
from stack.testing import LabelStudioServer, LabelStudioStartError, shared_label_studio

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def ls(tmp_path_factory: pytest.TempPathFactory) -> LabelStudioServer:
    try:
        return shared_label_studio(tmp_path_factory.getbasetemp() / "label-studio")
    except LabelStudioStartError as exc:
        pytest.fail(f"Label Studio did not start: {exc}")


@pytest.fixture(scope="session")
def trained(ls: LabelStudioServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedProject]:
    project = shared_trained_project(ls, redis_url, tmp_path_factory.getbasetemp() / "backend-e2e")
    retrieve_predictions(ls, project.project_id)
    yield project
    stop_shared_processes()


@pytest.fixture
def page(ls: LabelStudioServer) -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{ls.url}/user/login/")
        page.fill("input[name=email]", ls.email)
        page.fill("input[name=password]", ls.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
        yield page
        browser.close()


def test_new_task_opens_with_predicted_polygon_and_keypoints(page, ls: LabelStudioServer, trained: TrainedProject) -> None:
    task_id = trained.new_task_ids[0]
    stored = ls.client.predictions.list(task=task_id)
    [prediction] = [p for p in stored if p.model_version == trained.model_version]
    types = [r["type"] for r in prediction.result]
    assert "polygonlabels" in types and "keypointlabels" in types, types

    page.goto(f"{ls.url}/projects/{trained.project_id}/data?task={task_id}")
    outliner = page.locator("[class*='outliner-item']")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        outliner.first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)  # let the canvas draw the regions before the screenshot
    finally:
        page.screenshot(path=str(ARTIFACTS / "predictions_view.png"))
        (ARTIFACTS / "predictions_view.html").write_text(page.content())
    assert outliner.count() == len(prediction.result)
