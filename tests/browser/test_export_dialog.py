"""A real user's path: log in, open the project's Data Manager, open the Export dialog, pick
"COCO combined" and download it; the downloaded file has one annotation per object with its keypoints.

Headless Debian chromium through playwright (never ``playwright install``). The screenshot of the
dialog is kept as ``artifacts/export_dialog.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from combined_coco.labelstudio import keypoint_result, polygon_result
from export_plugin.export_format import FORMAT_INFO
from stack.services import REPO
from tests.support.labelstudio import CHROMIUM, LabelStudioServer, logged_in_page, png_bytes

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio]

ARTIFACTS = REPO / "artifacts"
SIZE = (160, 120)
RESULT = [
    polygon_result("poly1", "animal", [(20, 20), (70, 20), (70, 90), (20, 90)], *SIZE),
    keypoint_result("kp1", "nose", 45, 50, *SIZE, parent_id="poly1"),
    polygon_result("poly2", "animal", [(90, 20), (150, 20), (150, 90), (90, 90)], *SIZE),
    keypoint_result("kp2", "nose", 120, 50, *SIZE),
]


def test_export_dialog_offers_and_downloads_coco_combined(label_studio: LabelStudioServer) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs Debian's chromium)")
    ls = label_studio
    config = (REPO / "labeling_configs" / "generic.xml").read_text()
    project_id = ls.client.projects.create(title="export dialog", label_config=config).id
    assert project_id is not None  # the SDK types it Optional; Label Studio always returns it
    task_id = ls.import_images(project_id, {"two-animals.png": png_bytes(SIZE)})["two-animals.png"]
    ls.annotate(task_id, RESULT)

    with logged_in_page(ls) as page:
        page.goto(f"{ls.url}/projects/{project_id}/data")
        page.get_by_role("button", name="Export").click()
        items = page.locator(".lsf-formats__item")
        combined = items.filter(has_text=FORMAT_INFO["title"])
        combined.wait_for(timeout=60_000)
        # Select another format first, then ours, as a user would (the selected item takes no clicks).
        items.filter(has_text="List of items in raw JSON").click()
        combined.click()
        assert "lsf-formats__item_selected" in (combined.get_attribute("class") or "")
        page.mouse.move(5, 5)  # no hover highlight on the screenshot
        page.wait_for_timeout(300)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "export_dialog.png"))
        with page.expect_download(timeout=120_000) as download:
            page.locator(".lsf-modal-ls button", has_text="Export").click()
        coco = json.loads(Path(download.value.path()).read_text())

    assert [img["ls_task_id"] for img in coco["images"]] == [task_id]
    i = coco["categories"][0]["keypoints"].index("nose")
    noses = sorted(tuple(a["keypoints"][3 * i : 3 * i + 2]) for a in coco["annotations"])
    assert noses == [(45, 50), (120, 50)], "each object must carry its own nose"
