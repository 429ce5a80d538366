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

Predicted outlines are simplified to about the vertex count a person clicks for that label: a mask
contour has a vertex every pixel or two, and the mask head's 28 x 28 grid pasted onto a large object
leaves a staircase of steps several pixels high, which makes a pre-annotation tedious to correct in the
editor. With the median vertex count of the label's labelled polygons (recorded by the run,
:mod:`multitask.taught`) an outline gets at most :func:`vertex_bound` vertices; without it (older
checkpoints) only the staircase goes (:func:`combined_coco.geometry.staircase_tolerance`, at least
``POLYGON_TOLERANCE_PX``). Either way the outline keeps a mask IoU of :data:`OUTLINE_MIN_IOU` with
the model's (:func:`combined_coco.geometry.sparse_outline`).

Labels and keypoint names are matched by name between the model's schema (what it was trained on)
and the project's current labeling config; whatever the project no longer has is skipped with a
warning that names the label, so renaming a label in the config does not produce broken regions.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from combined_coco.geometry import (
    FlatPolygon,
    largest_polygon,
    outline_pixel_iou,
    sparse_outline,
    staircase_tolerance,
    suppress_overlaps,
)
from combined_coco.labelstudio import keypoint_result, polygon_result, rectangle_result
from combined_coco.schema import Controls, Schema

log = logging.getLogger(__name__)

# A person corrects an outline further off than this; at it, an annotator's redraw threshold (0.85) is
# still well away after the model's own error.
OUTLINE_MIN_IOU = 0.9


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
    vertex_medians: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """All regions of one image, in Label Studio's prediction ``result`` format.

    ``project_schema`` is the project's current labeling config (its controls and their labels);
    ``polygon_tolerance`` (pixels) is the least simplification of each outline (see :func:`predicted_outline`),
    0 keeps the model's contour as it is; ``vertex_medians``: label -> median vertex count of its labelled polygons.
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
            outline = predicted_outline(polygon, polygon_tolerance, (vertex_medians or {}).get(inst.label))
            known.append((inst, image.inside(outline)))
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


def vertex_bound(median: float) -> int:
    """The most vertices a predicted outline of a label gets: 1.5x its labelled median, or the median + 2
    for very simple shapes (a person clicks a box's 4 corners; 6 is still a box, 1.5x would be 6 too)."""
    return max(math.floor(1.5 * median), math.ceil(median) + 2)


def predicted_outline(points: np.ndarray, tolerance: float, median: float | None) -> np.ndarray:
    """The outline of one predicted object as a person would click it (module docstring); ``tolerance`` 0
    keeps the model's contour as it is."""
    if tolerance <= 0:
        return points
    smoothing = staircase_tolerance(points, floor=tolerance)
    if median is None:
        return sparse_outline(points, smoothing, min_iou=OUTLINE_MIN_IOU)
    return sparse_outline(points, smoothing, round(median), vertex_bound(median), OUTLINE_MIN_IOU)


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

    def inside(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` pixel points moved into the image. Outlines get it before the duplicate rule judges them,
        which must see the outlines Label Studio gets (a mask spilling over the border is cut there)."""
        return np.clip(np.asarray(points, dtype=float), 0.0, [float(self.width), float(self.height)])

    def _inside(self, x: float, y: float) -> tuple[float, float]:
        ((cx, cy),) = self.inside(np.array([[x, y]]))
        return float(cx), float(cy)

    def polygon(self, label: str, points: np.ndarray, score: float) -> dict[str, Any]:
        """``points``: an outline already inside the image (:meth:`inside`)."""
        assert self.controls.polygon is not None
        return polygon_result(
            _region_id(),
            label,
            [(float(x), float(y)) for x, y in points],
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
