"""A real browser opens a new, unlabeled task and sees the model's polygon and keypoints pre-drawn.

Reuses the trained project of the backend end-to-end journey (the session fixture ``trained``;
trained here if the integration test did not run in this session), logs in to Label Studio as the
admin in headless Debian chromium and opens the task in the labeling editor. The screenshot is saved
as ``artifacts/predictions_view.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.backend import TrainedProject, retrieve_predictions
from tests.support.labelstudio import CHROMIUM, LabelStudioServer, logged_in_page

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"


@pytest.fixture
def page(label_studio: LabelStudioServer) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)")
    with logged_in_page(label_studio) as page:
        yield page


def test_new_task_opens_with_predicted_polygon_and_keypoints(
    page: Page, label_studio: LabelStudioServer, trained: TrainedProject
) -> None:
    retrieve_predictions(label_studio, trained.project_id)
    task_id = trained.new_task_ids[0]
    stored = label_studio.client.predictions.list(task=task_id)
    [prediction] = [p for p in stored if p.model_version == trained.model_version]
    types = [r["type"] for r in prediction.result]
    assert "polygonlabels" in types and "keypointlabels" in types, types

    page.goto(f"{label_studio.url}/projects/{trained.project_id}/data?task={task_id}")
    # The editor copies the prediction into a draft; its Regions panel nests each keypoint under its object.
    items = page.locator(".lsf-outliner-item")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        items.first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)  # let the canvas draw the regions before the screenshot
    finally:
        page.screenshot(path=str(ARTIFACTS / "predictions_view.png"))
    titles = [t.strip() for t in page.locator(".lsf-outliner-item__title").all_inner_texts()]
    first_object = next(r for r in prediction.result if r["type"] == "polygonlabels")
    # Nested under the polygon: its keypoints (no box: the export derives it from the polygon).
    children = [r for r in prediction.result if r.get("parentID") == first_object["id"]]
    nested = [r["value"][r["type"]][0] for r in children]
    assert titles[0] == first_object["value"]["polygonlabels"][0], titles
    assert any(r["type"] == "keypointlabels" for r in children), children
    assert titles[1 : 1 + len(nested)] == nested, titles  # the object's regions follow its polygon in the outliner
    # the prediction tab is labeled with the published model version (shortened by the UI)
    assert page.get_by_text(trained.model_version[:8]).count() >= 1
