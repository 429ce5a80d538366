"""The backend's predictions, accepted as they are in Label Studio, convert back to the objects the model found.

Backend regions (``backend.regions``) and the converter's reader meet in one module,
``combined_coco.labelstudio``; this checks the promise end to end without Label Studio: category, box,
outline and every keypoint, with its visibility, on the instance the model gave it.

The planetary gearbox makes the keypoint assignment hard on purpose: the ring gear's ``center`` lies
inside the sun gear's outline, so only ``parentID`` puts it on the ring (containment alone gives it to
the sun gear, which has a ``center`` of its own).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from backend.regions import task_regions
from combined_coco.converter import ConversionResult, convert_tasks
from combined_coco.labelstudio import occluded_result, task
from combined_coco.schema import Schema
from tests.backend.backend_fakes import FakeInstance

CONFIG = Path(__file__).resolve().parents[2] / "labeling_configs" / "planetary_gearbox.xml"
W, H = 640, 480
TOLERANCE_PX = 1.5  # POLYGON_TOLERANCE_PX's default: the outlines below have no vertex it would remove


def _octagon(cx: float, cy: float, r: float) -> list[float]:
    return [
        c
        for k in range(8)
        for c in (cx + r * math.cos(k * math.pi / 4 + 0.2), cy + r * math.sin(k * math.pi / 4 + 0.2))
    ]


def _detection(
    schema: Schema, label: str, outline: list[float], score: float, keypoints: dict[str, tuple[float, float]]
) -> FakeInstance:
    """What the predictor returns for one object: box = the outline's bounds, keypoints as heatmap logits."""
    xs, ys = outline[0::2], outline[1::2]
    points = np.zeros((schema.num_keypoints, 3))
    present = np.zeros(schema.num_keypoints, dtype=bool)
    for name, (x, y) in keypoints.items():
        points[schema.keypoint_index(name)] = (x, y, 3.0)
        present[schema.keypoint_index(name)] = True
    return FakeInstance(label, score, (min(xs), min(ys), max(xs), max(ys)), [outline], points, present)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_label_config(CONFIG.read_text())


@pytest.fixture(scope="module")
def detections(schema: Schema) -> list[FakeInstance]:
    return [
        _detection(schema, "ring_gear", _octagon(220, 220, 160), 0.9, {"center": (220, 220), "tooth_ref": (360, 225)}),
        _detection(schema, "sun_gear", _octagon(220, 220, 40), 0.8, {"center": (223, 217), "tooth_ref": (250, 221)}),
        # pin_3 not found by the model: it must come back as 0, 0, 0
        _detection(
            schema,
            "carrier",
            _octagon(500, 360, 60),
            0.7,
            {"carrier_center": (500, 360), "pin_1": (530, 350), "pin_2": (480, 330)},
        ),
    ]


def _convert(results: list[dict], schema: Schema) -> ConversionResult:
    """The predictions accepted as the annotation of a task, exported and converted."""
    return convert_tasks([task(1, "/data/upload/1/gears.png", results)], schema)


def _region_of(results: list[dict], parent_label: str, keypoint: str) -> dict:
    parent = next(r for r in results if r["type"] == "polygonlabels" and r["value"]["polygonlabels"] == [parent_label])
    return next(
        r for r in results if r.get("parentID") == parent["id"] and r["value"].get("keypointlabels") == [keypoint]
    )


def test_predictions_convert_back_to_the_same_objects(schema: Schema, detections: list[FakeInstance]) -> None:
    results = task_regions(detections, schema, schema, W, H, TOLERANCE_PX)
    # every label is a polygon label: no rectangles, the export derives each box from its outline
    assert {r["type"] for r in results} == {"polygonlabels", "keypointlabels"}
    # The annotator accepts the pre-annotation and marks the ring's center occluded (the sun gear hides it).
    results.append(occluded_result(_region_of(results, "ring_gear", "center")["id"]))
    converted = _convert(results, schema)
    assert not converted.issues, converted.issues
    objects = {schema.category_by_id(a["category_id"]).name: a for a in converted.coco["annotations"]}
    assert sorted(objects) == sorted(d.label for d in detections)  # one object each
    for detection in detections:
        obj = objects[detection.label]
        x1, y1, x2, y2 = detection.box
        assert obj["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=2e-3)
        assert obj["segmentation"] == [pytest.approx(detection.polygons[0], abs=2e-3)]
        expected = []
        for k, (x, y, _) in enumerate(detection.keypoints):
            if not detection.keypoint_present[k]:
                expected += [0, 0, 0]
            else:
                occluded = detection.label == "ring_gear" and schema.keypoint_names[k] == "center"
                expected += [x, y, 1 if occluded else 2]
        assert obj["keypoints"] == pytest.approx(expected, abs=2e-3), detection.label
        assert obj["num_keypoints"] == int(detection.keypoint_present.sum())


def test_without_parent_ids_the_ring_center_would_go_to_the_sun_gear(
    schema: Schema, detections: list[FakeInstance]
) -> None:
    """The case above needs parentID: by position alone the ring's center is not the ring's."""
    results = [{k: v for k, v in r.items() if k != "parentID"} for r in task_regions(detections, schema, schema, W, H)]
    converted = _convert(results, schema)
    ring = next(a for a in converted.coco["annotations"] if a["category_id"] == schema.category("ring_gear").id)
    center = schema.keypoint_index("center")
    assert ring["keypoints"][3 * center : 3 * center + 3] == [0, 0, 0]  # the sun gear took it
    assert any("already has keypoint 'center'" in issue.message for issue in converted.issues)


def test_a_box_looser_than_its_outline_is_not_sent_and_the_object_keeps_its_outline_box(
    schema: Schema, detections: list[FakeInstance]
) -> None:
    """The box head and the mask head answer separately. The backend sends no rectangle for an object that has a
    polygon, so an accepted pre-annotation whose box is 40% wider and taller than the outline is exactly one
    object, boxed by its polygon (as any drawn polygon), with all its keypoints."""
    carrier = detections[2]
    x1, y1, x2, y2 = carrier.box
    dx, dy = 0.2 * (x2 - x1), 0.2 * (y2 - y1)
    loose = dataclasses.replace(carrier, box=(x1 - dx, y1 - dy, x2 + dx, y2 + dy))
    results = task_regions([loose], schema, schema, W, H, TOLERANCE_PX)
    assert [r["type"] for r in results].count("polygonlabels") == 1
    assert not [r for r in results if r["type"] == "rectanglelabels"]
    converted = _convert(results, schema)
    assert not converted.issues, converted.issues
    [obj] = converted.coco["annotations"]
    xs, ys = carrier.polygons[0][0::2], carrier.polygons[0][1::2]
    assert obj["bbox"] == pytest.approx([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], abs=2e-3)
    assert obj["num_keypoints"] == 3


def test_a_box_only_label_is_a_rectangle_with_its_keypoints_nested() -> None:
    """A label the config has only as RectangleLabels comes back as its box, keypoints nested under it, and
    converts to one object with that box."""
    config = CONFIG.read_text().replace('<Label value="shaft" background="#16A085" hotkey="6" />', "", 1)
    box_only = Schema.from_label_config(config)
    assert box_only.controls is not None and "shaft" not in box_only.controls.polygon_labels
    shaft = _detection(
        box_only, "shaft", _octagon(300, 300, 50), 0.9, {"shaft_end_left": (260, 300), "shaft_end_right": (340, 300)}
    )
    results = task_regions([shaft], box_only, box_only, W, H, TOLERANCE_PX)
    rectangle = next(r for r in results if r["type"] == "rectanglelabels")
    assert {r["type"] for r in results} == {"rectanglelabels", "keypointlabels"}
    assert all(r.get("parentID") == rectangle["id"] for r in results if r is not rectangle)
    converted = _convert(results, box_only)
    assert not converted.issues, converted.issues
    [obj] = converted.coco["annotations"]
    x1, y1, x2, y2 = shaft.box
    assert obj["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=2e-3)
    assert obj["num_keypoints"] == 2
