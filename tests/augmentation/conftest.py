"""Datasets for the augmentation tests: a synthetic set with known truth and the real quokka sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from combined_coco.geometry import polygons_area, polygons_bbox
from combined_coco.schema import Schema
from multitask.synthetic import write_parts_dataset
from tests.support.samples import QUOKKA

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 images 640x360, 8 objects each: border-crossing, two-part and RLE instances."""
    return write_parts_dataset(tmp_path_factory.mktemp("synthetic"), n_images=4, width=640, height=360, n_objects=8)


@pytest.fixture(scope="session")
def quokka(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quokka sample as a combined COCO file, schema from labeling_configs/generic.xml."""
    schema = Schema.from_label_config((REPO / "labeling_configs" / "generic.xml").read_text())
    raw = json.loads((QUOKKA / "quokka_annotations.json").read_text())
    polygon = [float(c) for p in raw["polygons"][0]["keypoints"] for c in (p["x"], p["y"])]
    keypoints = [0.0] * (3 * schema.num_keypoints)
    for kp in raw["keypoints"]:
        i = schema.keypoint_index(kp["label"])
        keypoints[3 * i : 3 * i + 3] = [float(kp["x"]), float(kp["y"]), 2.0]
    coco = {
        "info": {"description": "quokka", "keypoint_layout": "global"},
        "images": [{"id": 1, "file_name": "quokka.jpg", "width": 960, "height": 643}],
        "categories": schema.to_coco_categories("global"),
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": schema.category("animal").id,
                "iscrowd": 0,
                "segmentation": [polygon],
                "bbox": polygons_bbox([polygon]),
                "area": polygons_area([polygon]),
                "keypoints": keypoints,
                "num_keypoints": len(raw["keypoints"]),
            }
        ],
    }
    path = tmp_path_factory.mktemp("quokka") / "quokka.json"
    path.write_text(json.dumps(coco))
    return path
