"""Label Studio annotation results -> typed regions in COCO pixel coordinates.

One function, :func:`parse_results`, reads the ``result`` list of one annotation and checks every
region on its own (size known, enough points, label in the schema, inside the image). Grouping regions
into objects and placing keypoints is the converter's job; keeping the two apart means every
per-region problem is reported once, here, with the task and region id the user can look up.

Label Studio stores coordinates in percent of the image (``x_px = x_pct / 100 * original_width``,
docs/FORMAT.md); rectangles rotate about their top-left corner, clockwise in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import shapely

from combined_coco.brush_rle import BrushDecodeError, ls_brush_to_coco_rle
from combined_coco.geometry import FlatPolygon, clean_polygons
from combined_coco.issues import Issue
from combined_coco.schema import Schema

ShapeKind = Literal["polygon", "rectangle", "brush"]

_SHAPE_TYPES: dict[str, ShapeKind] = {
    "polygonlabels": "polygon",
    "rectanglelabels": "rectangle",
    "brushlabels": "brush",
}
_KEYPOINT_TYPE = "keypointlabels"
# Region types this converter does not read; anything else (choices, textarea, ...) is task-level data.
_UNSUPPORTED_GEOMETRY = {"ellipselabels", "ellipse", "polygon", "rectangle", "keypoint", "brush", "labels"}
_OCCLUDED = "occluded"
# Pixel coordinates are rounded to 1/1000 px: percent -> pixel leaves float noise (9.999999999999998)
# that only bloats the file; a thousandth of a pixel is far below labeling precision.
_DECIMALS = 3


@dataclass
class ShapeRegion:
    """A polygon, rectangle or brush region; ``polygons`` are in pixels, clipped and valid.

    A self-intersecting polygon repaired into two parts keeps both parts here (one object).
    ``area`` is set when the region passed unchanged, so the converter need not recompute it.
    """

    id: str
    kind: ShapeKind
    label: str
    parent_id: str | None
    polygons: list[FlatPolygon] = field(default_factory=list)
    area: float | None = None
    rle: dict | None = None  # brushes: COCO RLE with str counts


@dataclass
class KeypointRegion:
    id: str
    label: str
    x: float
    y: float
    parent_id: str | None
    visibility: int = 2  # COCO v: 2 visible, 1 occluded


@dataclass
class TaskRegions:
    """Everything one annotation says about its image. ``width``/``height`` are None when no result
    carries ``original_width``/``original_height``."""

    width: int | None = None
    height: int | None = None
    shapes: list[ShapeRegion] = field(default_factory=list)
    keypoints: list[KeypointRegion] = field(default_factory=list)
    relations: list[tuple[str, str]] = field(default_factory=list)


def parse_results(task_id: int | None, results: list[dict], schema: Schema, issues: list[Issue]) -> TaskRegions:
    """Read one annotation's ``result`` list; problems are appended to ``issues``."""
    out = TaskRegions()
    geometry: list[dict] = []
    occluded: set[str] = set()
    visibility = schema.controls.visibility if schema.controls else None
    for index, r in enumerate(results):
        if not isinstance(r, dict):
            issues.append(Issue(task_id, None, f"result #{index} is not an object; skipped", "error"))
            continue
        rtype = str(r.get("type", "")).lower()
        if rtype == "relation":
            if r.get("from_id") is not None and r.get("to_id") is not None:
                out.relations.append((str(r["from_id"]), str(r["to_id"])))
        elif rtype == "choices":
            chosen = (r.get("value") or {}).get("choices") or []
            if r.get("id") is not None and (visibility is None or r.get("from_name") == visibility):
                if any(str(c).lower() == _OCCLUDED for c in chosen):
                    occluded.add(str(r["id"]))
        elif rtype in _SHAPE_TYPES or rtype == _KEYPOINT_TYPE:
            geometry.append(r)
            if out.width is None and _size_of(r) is not None:
                out.width, out.height = _size_of(r)  # type: ignore[misc]
        elif rtype in _UNSUPPORTED_GEOMETRY:
            issues.append(
                Issue(task_id, _rid(r, index), f"{rtype} regions are not converted (use PolygonLabels, "
                      "RectangleLabels, BrushLabels or KeyPointLabels); skipped", "error")
            )
    if not geometry or out.width is None:
        return out

    seen: dict[str, str] = {}
    pending: list[tuple[ShapeRegion, FlatPolygon]] = []
    rotation_reported = False
    for index, r in enumerate(geometry):
        rid = _rid(r, index)
        rtype = str(r["type"]).lower()
        if rid in seen:
            issues.append(Issue(task_id, rid, f"duplicate region id (already used by a {seen[rid]}); skipped", "error"))
            continue
        seen[rid] = rtype.removesuffix("labels")
        if r.get("image_rotation") and not rotation_reported:
            rotation_reported = True
            issues.append(Issue(task_id, rid, f"image_rotation={r['image_rotation']} is ignored; coordinates are "
                                "taken as drawn on the unrotated image"))
        value = r.get("value")
        if not isinstance(value, dict):
            issues.append(Issue(task_id, rid, "region has no value; skipped", "error"))
            continue
        label = _label(task_id, rid, rtype, value, schema, issues)
        if label is None:
            continue
        parent = r.get("parentID")
        parent_id = None if parent in (None, "") else str(parent)
        try:
            if rtype == _KEYPOINT_TYPE:
                kp = _keypoint(task_id, rid, label, value, parent_id, out.width, out.height, issues)
                kp.visibility = 1 if rid in occluded else 2
                out.keypoints.append(kp)
            elif rtype == "brushlabels":
                rle = ls_brush_to_coco_rle(value.get("rle") or r.get("rle"), out.width, out.height)  # type: ignore[arg-type]
                out.shapes.append(ShapeRegion(rid, "brush", label, parent_id, rle=rle))
            else:
                flat = _polygon(value, out.width, out.height) if rtype == "polygonlabels" else _rectangle(
                    value, out.width, out.height  # type: ignore[arg-type]
                )
                if len(flat) < 6:
                    issues.append(Issue(task_id, rid, f"polygon has {len(flat) // 2} points (needs 3); skipped", "error"))
                    continue
                shape = ShapeRegion(rid, _SHAPE_TYPES[rtype], label, parent_id)
                pending.append((shape, flat))
                out.shapes.append(shape)
        except (BrushDecodeError, TypeError, ValueError, KeyError, IndexError) as exc:
            issues.append(Issue(task_id, rid, f"unreadable {rtype} value ({_reason(exc)}); skipped", "error"))
    _clean(task_id, pending, out, issues)
    return out


def _size_of(r: dict) -> tuple[int, int] | None:
    w, h = r.get("original_width"), r.get("original_height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        return int(round(w)), int(round(h))
    return None


def _rid(r: dict, index: int) -> str:
    return str(r["id"]) if r.get("id") not in (None, "") else f"#{index}"


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (ValueError, BrushDecodeError)) else f"{type(exc).__name__}: {exc}"


def _label(task_id: int | None, rid: str, rtype: str, value: dict, schema: Schema, issues: list[Issue]) -> str | None:
    labels = value.get(rtype) or []
    if not isinstance(labels, list) or not labels:
        issues.append(Issue(task_id, rid, f"{rtype.removesuffix('labels')} region has no label; skipped", "error"))
        return None
    label = str(labels[0])
    if len(labels) > 1:
        issues.append(Issue(task_id, rid, f"region has several labels {labels}; using {label!r}"))
    known = schema.keypoint_names if rtype == _KEYPOINT_TYPE else schema.category_names
    if label not in known:
        issues.append(
            Issue(task_id, rid, f"label {label!r} is not in the labeling config (known: {list(known)}); skipped")
        )
        return None
    return label


def _keypoint(
    task_id: int | None, rid: str, label: str, value: dict, parent_id: str | None, w: int, h: int, issues: list[Issue]
) -> KeypointRegion:
    x = round(float(value["x"]) / 100.0 * w, _DECIMALS)
    y = round(float(value["y"]) / 100.0 * h, _DECIMALS)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError("non-finite coordinates")
    if not (0.0 <= x <= w and 0.0 <= y <= h):
        issues.append(Issue(task_id, rid, f"keypoint {label!r} at ({x:.1f}, {y:.1f}) lies outside the "
                            f"{w}x{h} image; clipped to its border"))
        x, y = min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h))
    return KeypointRegion(rid, label, x, y, parent_id)


def _polygon(value: dict, w: int, h: int) -> FlatPolygon:
    flat: FlatPolygon = []
    for p in value["points"]:
        flat.append(round(float(p[0]) / 100.0 * w, _DECIMALS))
        flat.append(round(float(p[1]) / 100.0 * h, _DECIMALS))
    if not all(math.isfinite(v) for v in flat):
        raise ValueError("non-finite coordinates")
    return flat


def _rectangle(value: dict, w: int, h: int) -> FlatPolygon:
    """The 4 corners, clockwise on screen, starting at the drawn (rotation) corner."""
    x0, y0 = float(value["x"]) / 100.0 * w, float(value["y"]) / 100.0 * h
    rw, rh = float(value["width"]) / 100.0 * w, float(value["height"]) / 100.0 * h
    angle = math.radians(float(value.get("rotation") or 0.0))
    c, s = math.cos(angle), math.sin(angle)
    corners = [(0.0, 0.0), (rw, 0.0), (rw, rh), (0.0, rh)]
    return [round(v, _DECIMALS) for dx, dy in corners for v in (x0 + dx * c - dy * s, y0 + dx * s + dy * c)]


def _shoelace(flat: FlatPolygon) -> float:
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2.0


def _clean(task_id: int | None, pending: list[tuple[ShapeRegion, FlatPolygon]], out: TaskRegions,
           issues: list[Issue]) -> None:
    """Keep valid in-image polygons as drawn (the common case, no shapely object per polygon);
    repair or clip the rest with :func:`geometry.clean_polygons` and say so."""
    if not pending:
        return
    w, h = out.width, out.height
    assert w is not None and h is not None
    flats = [flat for _, flat in pending]
    counts = [len(f) // 2 for f in flats]
    coords = [(f[i], f[i + 1]) for f in flats for i in range(0, len(f) - 1, 2)]
    rings = shapely.linearrings(coords, indices=[k for k, n in enumerate(counts) for _ in range(n)])
    valid = shapely.is_valid(shapely.polygons(rings))
    dropped: set[int] = set()
    for k, (shape, flat) in enumerate(pending):
        xs, ys = flat[0::2], flat[1::2]
        inside = min(xs) >= 0.0 and min(ys) >= 0.0 and max(xs) <= w and max(ys) <= h
        area = _shoelace(flat) if valid[k] and inside else 0.0
        if area >= 1.0:
            shape.polygons, shape.area = [flat], area
            continue
        cleaned = clean_polygons([flat], w, h)
        if not cleaned.polygons:
            issues.append(Issue(task_id, shape.id, f"{shape.kind} {shape.label!r} has no area inside the {w}x{h} "
                                "image; skipped", "error"))
            dropped.add(id(shape))
            continue
        shape.polygons = cleaned.polygons
        if cleaned.repaired:
            issues.append(Issue(task_id, shape.id, f"{shape.kind} {shape.label!r} intersects itself; repaired into "
                                f"{len(cleaned.polygons)} valid polygon(s)"))
        if cleaned.clipped:
            issues.append(Issue(task_id, shape.id, f"{shape.kind} {shape.label!r} extends outside the {w}x{h} "
                                "image; clipped to it"))
    if dropped:
        out.shapes = [s for s in out.shapes if id(s) not in dropped]
