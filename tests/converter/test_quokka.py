"""The real quokka sample (960x643) as a Label Studio task: one animal with its 7 keypoints."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from shapely.geometry import Polygon

from combined_coco.converter import convert_export_file, convert_tasks
from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result, task
from combined_coco.validate import validate_coco
from tests.support.samples import QUOKKA as SAMPLE

CONFIGS = Path(__file__).resolve().parents[2] / "labeling_configs"
QUOKKA = SAMPLE / "quokka_annotations.json"
W, H = 960, 643


@pytest.fixture(scope="module")
def sample() -> dict:
    return json.loads(QUOKKA.read_text())


def quokka_task(sample: dict, *, nested: bool) -> dict:
    outline = [(p["x"], p["y"]) for p in sample["polygons"][0]["keypoints"]]
    box = sample["bounding_boxes"][0]
    results = [
        polygon_result("outline", "animal", outline, W, H),
        rectangle_result("box", "animal", box["x1"], box["y1"], box["x2"] - box["x1"], box["y2"] - box["y1"], W, H),
    ]
    for i, k in enumerate(sample["keypoints"]):
        results.append(
            keypoint_result(f"kp{i}", k["label"], k["x"], k["y"], W, H, parent_id="outline" if nested else None)
        )
    return task(17, "/data/upload/1/1a2b3c4d-quokka.jpg", results)


@pytest.mark.parametrize("nested", [True, False], ids=["parentID", "by-position"])
def test_quokka_converts_to_one_instance(sample: dict, generic, nested: bool) -> None:
    res = convert_tasks([quokka_task(sample, nested=nested)], generic)
    assert not res.issues
    coco = res.coco
    assert coco["images"] == [
        {
            "id": 1,
            "file_name": "quokka.jpg",
            "width": W,
            "height": H,
            "ls_task_id": 17,
            "ls_annotation_id": 17,
            "ls_image": "/data/upload/1/1a2b3c4d-quokka.jpg",
        }
    ]
    (ann,) = coco["annotations"]  # the drawn box matches the outline: same object
    assert ann["category_id"] == generic.category("animal").id
    kps = ann["keypoints"]
    for k in sample["keypoints"]:
        i = generic.keypoint_index(k["label"])
        assert kps[3 * i : 3 * i + 3] == pytest.approx([k["x"], k["y"], 2], abs=0.01), k["label"]
    assert ann["num_keypoints"] == 7
    assert [generic.keypoint_names[i // 3] for i in range(0, len(kps), 3) if kps[i + 2]] == [
        k["label"] for k in sample["keypoints"]
    ]  # schema order == the sample's order for the generic config

    outline = [(p["x"], p["y"]) for p in sample["polygons"][0]["keypoints"]]
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    assert ann["bbox"] == pytest.approx([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], abs=0.01)
    assert ann["area"] == pytest.approx(Polygon(outline).area, rel=1e-4)
    assert ann["segmentation"][0] == pytest.approx([c for p in outline for c in p], abs=0.01)
    assert not validate_coco(coco)


def test_quokka_loads_in_pycocotools(sample: dict, tmp_path) -> None:
    src = tmp_path / "export.json"
    src.write_text(json.dumps([quokka_task(sample, nested=True)]))
    convert_export_file(src, tmp_path / "coco.json", (CONFIGS / "generic.xml").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(tmp_path / "coco.json"))
    (ann,) = api.loadAnns(api.getAnnIds(imgIds=[1]))
    mask = api.annToMask(ann)
    assert mask.shape == (H, W)
    assert abs(int(mask.sum()) - ann["area"]) / ann["area"] < 0.02  # rasterised vs exact polygon area
