"""Model instances -> Label Studio prediction regions, one small writer per control tag.

Pure functions: pixel geometry in, Label Studio ``result`` items out (percent coordinates of the
original image, ``original_width/height`` set). Each object becomes one polygon region; its
keypoints are separate KeyPointLabels regions whose ``parentID`` is that polygon's id, so Label
Studio nests them under the object and the converter reads them back to the same instance.
A rectangle region is added when the project's config has a RectangleLabels control.

Predicted outlines are simplified (Douglas-Peucker, ``POLYGON_TOLERANCE_PX``) to about the vertex
count a person would click: a mask contour has a vertex every pixel or two, which makes a
pre-annotation tedious to correct in the editor.

Labels and keypoint names are matched by name between the model's schema (what it was trained on)
and the project's current labeling config; whatever the project no longer has is skipped with a
warning that names the label, so renaming a label in the config does not produce broken regions.
"""

from __future__ import annotations

import logging
import math
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from combined_coco.geometry import largest_polygon, simplify_outline
from combined_coco.schema import Schema

log = logging.getLogger(__name__)

KEYPOINT_WIDTH_PCT = 0.75  # display size of a predicted point; Label Studio stores it but ignores it for geometry


class PredictedObject(Protocol):
    """The fields of ``multitask.inference.DetectedInstance`` that become regions (pixel coordinates)."""

    label: str
    score: float
    box: Sequence[float]  # x1, y1, x2, y2
    polygons: Sequence[Sequence[float]]  # flat [x, y, ...] per polygon
    keypoints: np.ndarray  # (K, 3): x, y, heatmap logit, in the model's keypoint order
    keypoint_present: np.ndarray  # (K,) bool: applies to the category (and passed the keypoint threshold)


@dataclass(frozen=True)
class ProjectTarget:
    """What the project's labeling config accepts: control names and the labels of each control."""

    schema: Schema
    polygon_labels: frozenset[str]
    rectangle_labels: frozenset[str]
    keypoint_labels: frozenset[str]

    @classmethod
    def from_label_config(cls, config: str) -> "ProjectTarget":
        schema = Schema.from_label_config(config)
        controls = schema.controls
        assert controls is not None  # from_label_config always sets them
        labels = _labels_by_control(config)
        return cls(
            schema=schema,
            polygon_labels=labels.get(controls.polygon or "", frozenset()),
            rectangle_labels=labels.get(controls.rectangle or "", frozenset()),
            keypoint_labels=labels.get(controls.keypoint or "", frozenset()),
        )


def _labels_by_control(config: str) -> dict[str, frozenset[str]]:
    """``<Label value>``s per control ``name``: the schema merges them, but a region must use its own control's."""
    out: dict[str, frozenset[str]] = {}
    for el in ET.fromstring(config).iter():
        name = el.get("name")
        values = [lab.get("value", "") for lab in el if lab.tag.lower() == "label"]
        if name and values:
            out[name] = frozenset(values)
    return out


def task_regions(
    instances: Iterable[PredictedObject],
    model_schema: Schema,
    target: ProjectTarget,
    width: int,
    height: int,
    polygon_tolerance: float = 0.0,
) -> list[dict[str, Any]]:
    """All regions of one image, in Label Studio's prediction ``result`` format.

    ``polygon_tolerance`` (pixels) simplifies each outline; 0 keeps the model's contour as it is.
    """
    controls = target.schema.controls
    assert controls is not None
    writer = _RegionWriter(controls.image, width, height)
    regions: list[dict[str, Any]] = []
    for inst in instances:
        if not target.schema.has_category(inst.label):
            log.warning(
                "model predicts label %r, which the project's labeling config no longer has; skipped "
                "(add it back to the config or retrain)", inst.label,
            )
            continue
        parent_id = None
        polygon = largest_polygon(inst.polygons)
        if polygon is not None:
            polygon = simplify_outline(polygon, polygon_tolerance)
        if controls.polygon and inst.label in target.polygon_labels and polygon is not None:
            region = writer.polygon(controls.polygon, inst.label, polygon, float(inst.score))
            parent_id = region["id"]
            regions.append(region)
        if controls.rectangle and inst.label in target.rectangle_labels:
            region = writer.rectangle(controls.rectangle, inst.label, inst.box, float(inst.score))
            parent_id = parent_id or region["id"]
            regions.append(region)
        if controls.keypoint and parent_id is not None:
            regions.extend(
                _keypoint_regions(writer, controls.keypoint, inst, model_schema, target, parent_id)
            )
    return regions


def _keypoint_regions(
    writer: "_RegionWriter",
    control: str,
    inst: PredictedObject,
    model_schema: Schema,
    target: ProjectTarget,
    parent_id: str,
) -> Iterable[dict[str, Any]]:
    applicable = set(target.schema.category(inst.label).keypoints) & target.keypoint_labels
    for k, name in enumerate(model_schema.keypoint_names):
        if not bool(inst.keypoint_present[k]) or name not in applicable:
            continue
        x, y, logit = (float(v) for v in inst.keypoints[k])
        # the keypoint head scores are heatmap logits; Label Studio shows region scores as 0..1
        score = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
        yield writer.keypoint(control, name, x, y, score, parent_id)


class _RegionWriter:
    """Builds regions for one image: ids, percent coordinates and the fields every region carries."""

    def __init__(self, to_name: str, width: int, height: int) -> None:
        self.to_name, self.width, self.height = to_name, width, height

    def _base(self, from_name: str, kind: str, value: dict, score: float) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex[:10],
            "from_name": from_name,
            "to_name": self.to_name,
            "type": kind,
            "original_width": self.width,
            "original_height": self.height,
            "image_rotation": 0,
            "value": value,
            "score": score,
        }

    def _pct(self, x: float, y: float) -> list[float]:
        return [_clamp(100.0 * x / self.width), _clamp(100.0 * y / self.height)]

    def polygon(self, control: str, label: str, points: np.ndarray, score: float) -> dict[str, Any]:
        value = {"points": [self._pct(x, y) for x, y in points], "closed": True, "polygonlabels": [label]}
        return self._base(control, "polygonlabels", value, score)

    def rectangle(self, control: str, label: str, box: Sequence[float], score: float) -> dict[str, Any]:
        x1, y1 = self._pct(box[0], box[1])
        x2, y2 = self._pct(box[2], box[3])
        value = {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, "rotation": 0, "rectanglelabels": [label]}
        return self._base(control, "rectanglelabels", value, score)

    def keypoint(self, control: str, name: str, x: float, y: float, score: float, parent_id: str) -> dict[str, Any]:
        px, py = self._pct(x, y)
        value = {"x": px, "y": py, "width": KEYPOINT_WIDTH_PCT, "keypointlabels": [name]}
        return {**self._base(control, "keypointlabels", value, score), "parentID": parent_id}


def _clamp(pct: float) -> float:
    return min(100.0, max(0.0, pct))
