"""Label Studio's *own* COCO and YOLO exporters accept the shipped labeling configs (HTTP 200, not 500).

Their keypoint export orders keypoints by each keypoint ``<Label>``'s ``model_index``; without it
they raise and the Export dialog shows a server error. A project per shipped config gets one image
with a polygon and a keypoint nested under it, as the labeling UI stores them.
"""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest

from combined_coco.labelstudio import keypoint_result, polygon_result
from combined_coco.schema import Schema
from stack.services import REPO
from tests.support.labelstudio import LabelStudioServer, png_bytes

pytestmark = pytest.mark.labelstudio

SIZE = (160, 120)


@pytest.mark.parametrize("name", ["generic", "diesel_engine", "planetary_gearbox"])
def test_label_studio_coco_and_yolo_exports_answer_200(label_studio: LabelStudioServer, name: str) -> None:
    config = (REPO / "labeling_configs" / f"{name}.xml").read_text()
    category = Schema.from_label_config(config).categories[0]
    project = label_studio.client.projects.create(title=f"own exports {name}", label_config=config)
    assert project.id is not None  # the SDK types it Optional; Label Studio always returns it
    [task_id] = label_studio.import_images(project.id, {"part.png": png_bytes(SIZE)}).values()
    label_studio.annotate(task_id, [
        polygon_result("poly", category.name, [(20, 20), (120, 20), (120, 100), (20, 100)], *SIZE),
        keypoint_result("kp", category.keypoints[0], 60, 50, *SIZE, parent_id="poly"),
    ])  # fmt: skip
    export = f"{label_studio.url}/api/projects/{project.id}/export"
    coco = httpx.get(export, params={"exportType": "COCO"}, headers=label_studio.headers, timeout=120)
    assert coco.status_code == 200, coco.text[:500]
    with zipfile.ZipFile(io.BytesIO(coco.content)) as archive:
        data = json.loads(archive.read("result.json"))
    keypointed = [a for a in data["annotations"] if a.get("keypoints")]
    assert keypointed and keypointed[0]["num_keypoints"] == 1
    yolo = httpx.get(export, params={"exportType": "YOLO"}, headers=label_studio.headers, timeout=120)
    assert yolo.status_code == 200, yolo.text[:500]
