"""Model instances -> Label Studio prediction regions.

What is the backend's: which instances and keypoints become regions, their scores, and simplified
outlines. How a region is written (percent coordinates, ``original_width/height``, ``parentID``) is
:mod:`combined_coco.labelstudio`'s, the same module the converter reads it back with. Each object
becomes one polygon region; its keypoints are separate KeyPointLabels regions whose ``parentID`` is that
polygon's id, so Label Studio nests them under the object and the converter reads them back to the same
instance (``tests/backend/test_prediction_round_trip.py``). An object with a polygon gets no rectangle:
the export derives its box from the outline, and a rectangle under every polygon was one more region to
delete per object (and, with the parent deleted, one Label Studio leaves behind). Only a box-only label
(RectangleLabels without a PolygonLabels label of the same name) is sent as a rectangle, with its
keypoints nested under it.

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
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from combined_coco.geometry import FlatPolygon, largest_polygon, outline_pixel_iou, simplify_outline, suppress_overlaps
from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result
from combined_coco.schema import Controls, Schema

log = logging.getLogger(__name__)


class PredictedObject(Protocol):
    """The fields of ``multitask.inference.DetectedInstance`` that become regions (pixel coordinates).

    Read-only properties, so that an instance with narrower field types (a ``box`` tuple) still fits.
    """

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> Sequence[float]: ...  # x1, y1, x2, y2
    @property
    def polygons(self) -> Sequence[FlatPolygon]: ...  # flat [x, y, ...] per polygon
    @property
    def keypoints(self) -> np.ndarray: ...  # (K, 3): x, y, heatmap logit, in the model's keypoint order
    @property
    def keypoint_present(self) -> np.ndarray: ...  # (K,) bool: applies to the category (passed the threshold)


def task_regions(
    instances: Iterable[PredictedObject],
    model_schema: Schema,
    project_schema: Schema,
    width: int,
    height: int,
    polygon_tolerance: float = 0.0,
    mask_nms_iou: float | None = None,
) -> list[dict[str, Any]]:
    """All regions of one image, in Label Studio's prediction ``result`` format.

    ``project_schema`` is the project's current labeling config (its controls and their labels);
    ``polygon_tolerance`` (pixels) simplifies each outline; 0 keeps the model's contour as it is.
    ``mask_nms_iou``: the predictor's duplicate rule (``MASK_NMS_IOU``) applied again to the outlines sent
    (:func:`combined_coco.geometry.suppress_overlaps`): an outline is the mask's largest part, simplified,
    so two outlines can overlap more than their whole masks did; None keeps every outline.
    """
    controls = project_schema.controls
    assert controls is not None  # Schema.from_label_config always sets them
    image = _ImageRegions(controls, width, height)
    known: list[tuple[PredictedObject, np.ndarray | None]] = []
    for inst in instances:
        if not project_schema.has_category(inst.label):
            log.warning(
                "model predicts label %r, which the project's labeling config no longer has; skipped "
                "(add it back to the config or retrain)",
                inst.label,
            )
            continue
        polygon = largest_polygon(inst.polygons)
        if polygon is not None and controls.polygon and inst.label in controls.polygon_labels:
            known.append((inst, simplify_outline(polygon, polygon_tolerance)))
        elif (
            controls.rectangle and inst.label in controls.rectangle_labels and inst.label not in controls.polygon_labels
        ):
            known.append((inst, None))

    def iou(i: int, j: int) -> float:
        a, b = known[i][1], known[j][1]
        return 0.0 if a is None or b is None else outline_pixel_iou(a, b)

    regions: list[dict[str, Any]] = []
    kept = suppress_overlaps([inst.label for inst, _ in known], [inst.score for inst, _ in known], iou, mask_nms_iou)
    for inst, polygon in (known[i] for i in kept):
        if polygon is not None:
            region = image.polygon(inst.label, polygon, float(inst.score))
        else:
            region = image.rectangle(inst.label, inst.box, float(inst.score))
        regions.append(region)
        if controls.keypoint:
            regions.extend(_keypoint_regions(image, inst, model_schema, project_schema, region["id"]))
    return regions


def _keypoint_regions(
    image: _ImageRegions, inst: PredictedObject, model_schema: Schema, project_schema: Schema, parent_id: str
) -> Iterable[dict[str, Any]]:
    applicable = set(project_schema.category(inst.label).keypoints)
    for k, name in enumerate(model_schema.keypoint_names):
        if not bool(inst.keypoint_present[k]) or name not in applicable:
            continue
        x, y, logit = (float(v) for v in inst.keypoints[k])
        # the keypoint head scores are heatmap logits; Label Studio shows region scores as 0..1
        score = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
        yield image.keypoint(name, x, y, score, parent_id)


class _ImageRegions:
    """Regions of one image: fresh ids, the project's control names, predicted geometry kept inside the image."""

    def __init__(self, controls: Controls, width: int, height: int) -> None:
        self.controls, self.width, self.height = controls, width, height

    def _inside(self, x: float, y: float) -> tuple[float, float]:
        return min(max(float(x), 0.0), float(self.width)), min(max(float(y), 0.0), float(self.height))

    def polygon(self, label: str, points: np.ndarray, score: float) -> dict[str, Any]:
        assert self.controls.polygon is not None
        return polygon_result(
            _region_id(),
            label,
            [self._inside(x, y) for x, y in points],
            self.width,
            self.height,
            from_name=self.controls.polygon,
            to_name=self.controls.image,
            score=score,
        )

    def rectangle(self, label: str, box: Sequence[float], score: float) -> dict[str, Any]:
        assert self.controls.rectangle is not None
        x1, y1 = self._inside(box[0], box[1])
        x2, y2 = self._inside(box[2], box[3])
        return rectangle_result(
            _region_id(),
            label,
            x1,
            y1,
            x2 - x1,
            y2 - y1,
            self.width,
            self.height,
            from_name=self.controls.rectangle,
            to_name=self.controls.image,
            score=score,
        )

    def keypoint(self, name: str, x: float, y: float, score: float, parent_id: str) -> dict[str, Any]:
        assert self.controls.keypoint is not None
        px, py = self._inside(x, y)
        return keypoint_result(
            _region_id(),
            name,
            px,
            py,
            self.width,
            self.height,
            parent_id=parent_id,
            from_name=self.controls.keypoint,
            to_name=self.controls.image,
            score=score,
        )


def _region_id() -> str:
    """A new region id, 10 characters like the ones Label Studio's editor makes."""
    return uuid.uuid4().hex[:10]
