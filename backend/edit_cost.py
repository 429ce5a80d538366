"""Edit cost: how many actions an annotator needs to turn the backend's pre-annotation of an image into its truth.

A pre-annotation is worth what it saves. :func:`image_edit_cost` simulates an annotator who opens a task
pre-drawn with the regions the backend sends Label Studio (:func:`backend.regions.task_regions`: polygons in
percent, keypoints nested under their object with ``parentID``, rectangles) and edits it into the ground truth
(the image's combined COCO annotations), counting actions by kind (:data:`KINDS`):

- ``delete_object``: a predicted object that matches no truth object (wrong or duplicate) is deleted, and every
  region Label Studio 1.23 leaves behind costs a deletion of its own: deleting a parent polygon leaves its nested
  rectangle and keypoints as top-level regions, so a duplicate with a rectangle and 7 keypoints costs 9.
  A region whose parent is not in the result (an orphan) is one deletion.
- ``delete_rectangle``: a rectangle nested under a matched polygon is redundant (the export derives the box from
  the polygon) and is deleted.
- ``draw_object``: a truth object nothing matched is drawn: its vertices plus its labelled keypoints (v > 0).
- ``redraw_shape``: a matched object whose mask IoU with the truth is below :data:`REDRAW_IOU` (0.85) is redrawn:
  the truth's vertices. Counted as editing the shape in place, not as delete + draw: deleting the polygon would
  orphan its nested keypoints (which then need deleting or re-nesting), so an annotator moves, adds and removes
  vertices instead, which takes at most one action per vertex of the truth.
- ``move_keypoint``: a predicted keypoint of a matched object that the truth labels, but farther from it than its
  OKS tolerance: the distance at which its object keypoint similarity falls below 0.5 (COCO's
  ``exp(-d^2 / (2 s^2 (2 sigma)^2))`` with ``s^2`` the truth's area and sigma 0.05, as the project's evaluation:
  ``multitask.evaluate``), i.e. ``d > 2 sigma sqrt(area) sqrt(2 ln 2)``.
- ``delete_keypoint``: a predicted keypoint the truth does not label (v = 0), or a second one of the same name.
- ``add_keypoint``: a keypoint the truth labels and the matched prediction lacks.

Drawing costs: a polygon is one click per vertex (the truth's COCO polygons; a truth stored as an RLE mask counts
the vertices of its outline simplified at 1.5 px, what a person would click); a rectangle (``box_only_labels``)
is 2 (its corners). ``from_scratch`` is what drawing every truth object costs: vertices plus labelled keypoints.

Matching: per label, greedily by score (the highest-scoring prediction first takes the unmatched truth object of
the same label with the highest mask IoU, if at least :data:`MATCH_IOU`), as COCO's evaluation matches
detections: a duplicate scores lower than the object it repeats, so it is the one left unmatched and deleted.

This module is an oracle of the backend's output, so it shares none of the code that makes that output: masks
are rasterised from the returned percent points with Pillow's ``ImageDraw`` (truth polygons the same way, so
both sides share one pixel convention), never with :mod:`combined_coco.geometry`, and Label Studio's percent
coordinates are converted here (``x_pct / 100 * original_width``, docs/FORMAT.md) rather than by the reader
under test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from combined_coco.dataset import rle_decode
from combined_coco.schema import Schema

if TYPE_CHECKING:
    from backend.settings import Settings
    from multitask.engines import Predictor

KINDS = (
    "delete_object",
    "delete_rectangle",
    "draw_object",
    "redraw_shape",
    "move_keypoint",
    "delete_keypoint",
    "add_keypoint",
)
REDRAW_IOU = 0.85  # a matched shape below this mask IoU with its truth is redrawn
MATCH_IOU = 0.5  # a prediction below this mask IoU with every truth object of its label is a wrong object
OKS_SIGMA = 0.05  # per-keypoint sigma, as multitask.evaluate.DEFAULT_OKS_SIGMA (not imported: that loads torch)
KEYPOINT_OKS = 0.5  # a keypoint whose OKS is below this is moved
RLE_OUTLINE_PX = 1.5  # simplification of an RLE truth's outline when counting the vertices a person would click
RECTANGLE_CLICKS = 2


@dataclass
class EditCost:
    """Actions by kind, what drawing everything from scratch costs, and the objects counted."""

    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    from_scratch: int = 0
    images: int = 0
    truth_objects: int = 0
    predicted_objects: int = 0
    matched_objects: int = 0

    @property
    def total(self) -> int:
        return sum(self.actions.values())

    @property
    def ratio(self) -> float | None:
        """Edit actions per from-scratch action (0: nothing to fix; above 1: worse than no pre-annotation)."""
        return self.total / self.from_scratch if self.from_scratch else None

    def __add__(self, other: EditCost) -> EditCost:
        return EditCost(
            {k: self.actions[k] + other.actions[k] for k in KINDS},
            self.from_scratch + other.from_scratch,
            self.images + other.images,
            self.truth_objects + other.truth_objects,
            self.predicted_objects + other.predicted_objects,
            self.matched_objects + other.matched_objects,
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``meta.json``'s ``heldout_edit_cost`` and the benchmarks."""
        return {
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "actions": self.total,
            "from_scratch": self.from_scratch,
            "by_kind": dict(self.actions),
            "images": self.images,
            "truth_objects": self.truth_objects,
            "predicted_objects": self.predicted_objects,
            "matched_objects": self.matched_objects,
        }


def total_edit_cost(costs: Iterable[EditCost]) -> EditCost:
    return sum(costs, EditCost())


def dataset_edit_cost(
    predictor: Predictor, coco: Mapping[str, Any], image_root: Path, project_schema: Schema, settings: Settings
) -> EditCost:
    """The edit cost of every image of ``coco`` (files in ``image_root``), pre-annotated by ``predictor`` with the
    regions the backend would send the project (``settings``: thresholds, outlines, duplicates, object cap)."""
    from backend.predictions import image_regions, labelled_vertices
    from combined_coco.images import read_image

    costs = []
    medians = labelled_vertices(predictor)
    for info in coco["images"]:
        detections = predictor.predict([read_image(image_root / info["file_name"])])[0]
        regions = image_regions(
            detections, predictor.schema, project_schema, info["width"], info["height"], settings, medians
        )
        costs.append(image_edit_cost(regions, coco, info["id"], box_only_labels(project_schema)))
    return total_edit_cost(costs)


def box_only_labels(schema: Schema) -> list[str]:
    """Labels the project's config has as RectangleLabels and not as PolygonLabels: drawn as rectangles."""
    controls = schema.controls
    if controls is None:
        return []
    return [label for label in controls.rectangle_labels if label not in controls.polygon_labels]


@dataclass
class _Predicted:
    label: str
    score: float
    mask: np.ndarray
    regions: int  # every region of the object (shape, nested rectangles, nested keypoints)
    has_polygon: bool
    nested_rectangles: int
    keypoints: list[tuple[str, float, float]]  # name, x, y in pixels


@dataclass
class _Truth:
    label: str
    mask: np.ndarray
    vertices: int
    area: float
    keypoints: dict[str, tuple[float, float]]  # labelled (v > 0) keypoints by name, pixels


def image_edit_cost(
    regions: Sequence[Mapping[str, Any]],
    coco: Mapping[str, Any],
    image_id: int,
    box_only_labels: Iterable[str] = (),
    sigma: float = OKS_SIGMA,
) -> EditCost:
    """The edit cost of one image: ``regions`` is the ``result`` list the backend sends Label Studio for it,
    ``coco`` a combined COCO file (any keypoint layout) holding the image ``image_id`` and its truth.

    ``box_only_labels``: labels drawn as rectangles (RectangleLabels without a PolygonLabels label of the same
    name); their truth costs :data:`RECTANGLE_CLICKS` to draw or redraw."""
    info = next(im for im in coco["images"] if im["id"] == image_id)
    width, height = int(info["width"]), int(info["height"])
    categories = {c["id"]: c for c in coco["categories"]}
    box_only = set(box_only_labels)
    truths = [
        _truth(ann, categories[ann["category_id"]], width, height, box_only)
        for ann in coco["annotations"]
        if ann["image_id"] == image_id
    ]
    predicted, orphans = _objects(regions, width, height)
    cost = EditCost(images=1, truth_objects=len(truths), predicted_objects=len(predicted))
    actions = cost.actions
    actions["delete_object"] += orphans
    cost.from_scratch = sum(t.vertices + len(t.keypoints) for t in truths)
    matched: set[int] = set()
    for pred in sorted(predicted, key=lambda p: -p.score):
        best, best_iou = None, MATCH_IOU
        for i, truth in enumerate(truths):
            if i not in matched and truth.label == pred.label:
                iou = _mask_iou(pred.mask, truth.mask)
                if iou >= best_iou:
                    best, best_iou = i, iou
        if best is None:
            actions["delete_object"] += pred.regions
            continue
        matched.add(best)
        truth = truths[best]
        cost.matched_objects += 1
        if best_iou < REDRAW_IOU:
            actions["redraw_shape"] += truth.vertices
        if pred.has_polygon:
            actions["delete_rectangle"] += pred.nested_rectangles
        _edit_keypoints(pred, truth, sigma, actions)
    for i, truth in enumerate(truths):
        if i not in matched:
            actions["draw_object"] += truth.vertices + len(truth.keypoints)
    return cost


def _edit_keypoints(pred: _Predicted, truth: _Truth, sigma: float, actions: dict[str, int]) -> None:
    tolerance = 2 * sigma * math.sqrt(max(truth.area, 0.0)) * math.sqrt(-2 * math.log(KEYPOINT_OKS))
    seen: set[str] = set()
    for name, x, y in pred.keypoints:
        if name in seen or name not in truth.keypoints:
            actions["delete_keypoint"] += 1
            continue
        seen.add(name)
        tx, ty = truth.keypoints[name]
        if math.hypot(x - tx, y - ty) > tolerance:
            actions["move_keypoint"] += 1
    actions["add_keypoint"] += len(set(truth.keypoints) - seen)


def _objects(regions: Sequence[Mapping[str, Any]], width: int, height: int) -> tuple[list[_Predicted], int]:
    """Predicted objects (a top-level polygon or rectangle with every region nested under it) and the number of
    orphan regions (a parent that is not in the result, or a top-level keypoint)."""
    by_id = {r.get("id"): r for r in regions}

    def root(region: Mapping[str, Any]) -> Mapping[str, Any] | None:
        seen: set[Any] = set()
        while region.get("parentID") is not None:
            if region["id"] in seen or region["parentID"] not in by_id:
                return None
            seen.add(region["id"])
            region = by_id[region["parentID"]]
        return region

    members: dict[Any, list[Mapping[str, Any]]] = {}
    orphans = 0
    for region in regions:
        top = root(region)
        if top is None or top["type"] not in ("polygonlabels", "rectanglelabels"):
            orphans += 1
        else:
            members.setdefault(top["id"], []).append(region)
    objects = []
    for group in members.values():
        polygons = [r for r in group if r["type"] == "polygonlabels"]
        rectangles = [r for r in group if r["type"] == "rectanglelabels"]
        shape = polygons[0] if polygons else rectangles[0]
        value = shape["value"]
        if polygons:
            points = [(x / 100 * width, y / 100 * height) for x, y in value["points"]]
            label = value["polygonlabels"][0]
        else:
            points = _rectangle_corners(value, width, height)
            label = value["rectanglelabels"][0]
        keypoints = [
            (r["value"]["keypointlabels"][0], r["value"]["x"] / 100 * width, r["value"]["y"] / 100 * height)
            for r in group
            if r["type"] == "keypointlabels"
        ]
        objects.append(
            _Predicted(
                label=label,
                score=float(shape.get("score", 0.0)),
                mask=_rasterise([points], width, height),
                regions=len(group),
                has_polygon=bool(polygons),
                nested_rectangles=len(rectangles),
                keypoints=keypoints,
            )
        )
    return objects, orphans


def _rectangle_corners(value: Mapping[str, Any], width: int, height: int) -> list[tuple[float, float]]:
    """Corners in pixels of a Label Studio rectangle: rotated clockwise (degrees) about its top-left corner."""
    x, y = value["x"] / 100 * width, value["y"] / 100 * height
    w, h = value["width"] / 100 * width, value["height"] / 100 * height
    angle = math.radians(float(value.get("rotation") or 0.0))
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]


def _truth(ann: Mapping[str, Any], category: Mapping[str, Any], width: int, height: int, box_only: set[str]) -> _Truth:
    label = category["name"]
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        polygons = [list(zip(p[0::2], p[1::2])) for p in segmentation]
        mask = _rasterise(polygons, width, height)
        vertices = sum(len(p) for p in polygons)
    else:
        mask = rle_decode(segmentation).astype(bool)
        vertices = _outline_vertices(mask)
    if label in box_only:
        vertices = RECTANGLE_CLICKS
    names = category.get("keypoints") or []
    flat = ann.get("keypoints") or []
    keypoints = {
        name: (float(flat[3 * k]), float(flat[3 * k + 1]))
        for k, name in enumerate(names)
        if 3 * k + 2 < len(flat) and flat[3 * k + 2] > 0
    }
    area = float(ann.get("area") or mask.sum())
    return _Truth(label, mask, vertices, area, keypoints)


def _rasterise(polygons: Sequence[Sequence[tuple[float, float]]], width: int, height: int) -> np.ndarray:
    """Bool mask of the union of ``polygons`` (COCO continuous pixel coordinates: pixel i spans [i, i+1], so
    its centre, where Pillow samples, is at i + 0.5)."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 3:
            draw.polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in polygon], fill=1)
    return np.asarray(canvas, dtype=bool)


def _outline_vertices(mask: np.ndarray) -> int:
    """Vertices a person would click for an RLE (brush) truth: its outer outlines simplified at 1.5 px."""
    import cv2  # the model's and backend's extras have OpenCV; only RLE truths need it

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return sum(max(3, len(cv2.approxPolyDP(c, RLE_OUTLINE_PX, True))) for c in contours)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
