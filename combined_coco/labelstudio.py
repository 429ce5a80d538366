"""Label Studio results <-> regions in COCO pixel coordinates: the one reader and writer of Label Studio's
``result`` JSON (docs/FORMAT.md).

Reading: :func:`parse_results` reads the ``result`` list of one Label Studio annotation and checks every
region on its own (size known, enough points, label in the schema, keypoint inside the image);
:func:`clean_shapes` then converts and checks the polygons and rectangles of many tasks in one vectorized
batch (valid, inside the image, some area); :func:`results_from_json_min` rebuilds results from a
JSON_MIN row. Grouping regions into objects and placing keypoints is the converter's job; keeping the two
apart means every per-region problem is reported once, here, with the task and region id the user can
look up.

Writing: :func:`polygon_result`, :func:`rectangle_result`, :func:`keypoint_result`, :func:`occluded_result`,
:func:`relation_result` build result items exactly as Label Studio stores them (``original_width`` /
``original_height``, ``parentID`` for nesting, per-region choices sharing the keypoint's id), so what the
ML backend predicts and what tests and benchmarks feed the converter is what :func:`parse_results` reads;
:func:`coco_image_results` writes one image of a polygon-only combined COCO dataset that way (the
``--demo`` project's annotations, the benchmarks' labelling).

Label Studio stores coordinates in percent of the image (``x_px = x_pct / 100 * original_width``:
:func:`to_pixels`, :func:`to_percent`); rectangles rotate about their top-left corner, clockwise in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

import numpy as np
import shapely

from combined_coco.brush_rle import BrushDecodeError, ls_brush_to_coco_rle
from combined_coco.geometry import FlatPolygon, clean_polygons, self_crossings
from combined_coco.issues import Issue, shown
from combined_coco.schema import INSTANCE_TAGS, KEYPOINT_TAG, OCCLUDED_CHOICE, Controls, Schema
from combined_coco.validate import MAX_IMAGE_SIDE, MAX_OUTLINE_PX, outline_px

ShapeKind = Literal["polygon", "rectangle", "brush"]

_SHAPE_TYPES: dict[str, ShapeKind] = INSTANCE_TAGS
_KEYPOINT_TYPE = KEYPOINT_TAG
# Region types this converter does not read; anything else (choices, textarea, ...) is task-level data.
_UNSUPPORTED_GEOMETRY = {"ellipselabels", "ellipse", "polygon", "rectangle", "keypoint", "brush", "labels"}
# Display size of a keypoint, in percent of the image width; Label Studio stores it but ignores it for geometry.
KEYPOINT_WIDTH_PCT = 0.75
# Pixel coordinates are rounded to 1/1000 px: percent -> pixel leaves float noise (9.999999999999998)
# that only bloats the file; a thousandth of a pixel is far below labeling precision.
_DECIMALS = 3
# Bounds on what one region may cost, so a hostile export cannot stall or exhaust the process (this
# code runs inside Label Studio). Far above anything drawn by hand or by a smart tool:
MAX_VERTICES = 100_000  # per polygon
# Repairing a self-intersecting polygon costs about the square of its crossings (GEOS make_valid):
# 100 crossings take ~50 ms; a scribble of 3,000 random vertices (~40,000 crossings) takes minutes.
MAX_REPAIR_CROSSINGS = 100
MAX_BRUSH_PIXELS = 100_000_000  # a brush decodes to 4 bytes per pixel (Label Studio's RGBA canvas)
# Coordinates beyond this many image sizes from the image are not a slip of the hand (percent units).
_FAR_PERCENT = 1e6


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
    # Polygon/rectangle shapes whose points :func:`clean_shapes` has yet to convert and check:
    # (shape, [[x, y], ...], x scale, y scale); percent for polygons, pixels (scale 1) for rectangles.
    pending: list[tuple[ShapeRegion, list, float, float]] = field(default_factory=list)
    # The Label Studio annotation these regions come from, when its task has several (named in issues).
    annotation_id: int | str | None = None


def parse_results(
    task_id: int | str | None, results: list, schema: Schema, issues: list[Issue], max_side: int = MAX_IMAGE_SIDE
) -> TaskRegions | None:
    """Read one annotation's ``result`` list; problems are appended to ``issues``.

    Polygons and rectangles are left in ``pending``: :func:`clean_shapes` converts and checks the
    shapes of many tasks in one vectorized pass, which is most of the export's speed.
    None (reported) when the image size is beyond ``max_side``: nothing of that size is allocated.
    """
    out = TaskRegions()
    geometry: list[tuple[int, dict, str]] = []
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
            value = r.get("value")
            chosen = value.get("choices") if isinstance(value, dict) else None
            if r.get("id") is not None and (visibility is None or r.get("from_name") == visibility):
                if isinstance(chosen, list) and any(
                    isinstance(c, str) and c.lower() == OCCLUDED_CHOICE for c in chosen
                ):
                    occluded.add(str(r["id"]))
        elif rtype in _SHAPE_TYPES or rtype == _KEYPOINT_TYPE:
            geometry.append((index, r, rtype))
            if out.width is None:
                out.width, out.height = result_size(r)
        elif rtype in _UNSUPPORTED_GEOMETRY:
            issues.append(
                Issue(
                    task_id,
                    _rid(r, index),
                    f"{rtype} regions are not converted (use PolygonLabels, "
                    "RectangleLabels, BrushLabels or KeyPointLabels); skipped",
                    "error",
                )
            )
    if not geometry or out.width is None or out.height is None:  # result_size() sets both or neither
        return out
    if not size_fits(task_id, out.width, out.height, max_side, issues):
        return None

    seen: dict[str, str] = {}
    rotation_reported = False
    known = {t: frozenset(schema.category_names) for t in _SHAPE_TYPES}
    known[_KEYPOINT_TYPE] = frozenset(schema.keypoint_names)
    for index, r, rtype in geometry:
        rid = _rid(r, index)
        if rid in seen:
            issues.append(Issue(task_id, rid, f"duplicate region id (already used by a {seen[rid]}); skipped", "error"))
            continue
        seen[rid] = rtype.removesuffix("labels")
        if r.get("image_rotation") and not rotation_reported:
            rotation_reported = True
            issues.append(
                Issue(
                    task_id,
                    rid,
                    f"image_rotation={shown(r['image_rotation'])} is ignored; coordinates "
                    "are taken as drawn on the unrotated image",
                )
            )
        value = r.get("value")
        if not isinstance(value, dict):
            issues.append(Issue(task_id, rid, "region has no value; skipped", "error"))
            continue
        labels = value.get(rtype)
        label: str | None
        if type(labels) is list and len(labels) == 1 and type(labels[0]) is str and labels[0] in known[rtype]:
            label = labels[0]  # the common case, without building messages
        else:
            label = _label(task_id, rid, rtype, labels, known[rtype], issues)
            if label is None:
                continue
        parent = r.get("parentID")
        parent_id = None if parent in (None, "") else str(parent)
        try:
            if rtype == _KEYPOINT_TYPE:
                out.keypoints.append(_keypoint(task_id, rid, label, value, parent_id, out.width, out.height, issues))
            elif rtype == "brushlabels":
                if out.width * out.height > MAX_BRUSH_PIXELS:
                    raise ValueError(f"a brush mask of {out.width}x{out.height} exceeds {MAX_BRUSH_PIXELS} pixels")
                rle = ls_brush_to_coco_rle(value.get("rle") or r.get("rle"), out.width, out.height)
                out.shapes.append(ShapeRegion(rid, "brush", label, parent_id, rle=rle))
            elif rtype == "polygonlabels":
                points = value["points"]
                if not isinstance(points, list):
                    raise ValueError("'points' is not a list")
                if len(points) < 3:
                    issues.append(Issue(task_id, rid, f"polygon has {len(points)} points (needs 3); skipped", "error"))
                    continue
                if len(points) > MAX_VERTICES:
                    raise ValueError(f"{len(points)} points, more than the limit of {MAX_VERTICES}")
                shape = ShapeRegion(rid, "polygon", label, parent_id)
                # pixels per percent: clean_shapes applies to_pixels to all polygons at once
                out.pending.append((shape, points, out.width / 100.0, out.height / 100.0))
                out.shapes.append(shape)
            else:
                shape = ShapeRegion(rid, "rectangle", label, parent_id)
                out.pending.append((shape, _rectangle(value, out.width, out.height), 1.0, 1.0))
                out.shapes.append(shape)
        except (BrushDecodeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            issues.append(Issue(task_id, rid, f"unreadable {rtype} value ({_reason(exc)}); skipped", "error"))
    for kp in out.keypoints:
        if kp.id in occluded:
            kp.visibility = 1
    return out


def to_pixels(percent: float, size: int) -> float:
    """A Label Studio coordinate or length (percent of ``size``) in pixels."""
    return percent / 100.0 * size


def to_percent(pixels: float, size: int) -> float:
    """A pixel coordinate or length in Label Studio's percent of ``size``: the inverse of :func:`to_pixels`."""
    return float(pixels) / size * 100.0


def result_size(r: dict) -> tuple[int, int] | tuple[None, None]:
    """The image size a result was drawn on, or (None, None). Not bounded: see :func:`size_fits`."""
    w, h = r.get("original_width"), r.get("original_height")
    if _is_side(w) and _is_side(h):
        return int(round(w)), int(round(h))
    return None, None


def _is_side(v: object) -> TypeGuard[float]:
    """A positive finite int or float (not a bool, not a numeric string)."""
    return type(v) is int and v > 0 or type(v) is float and 0 < v < math.inf


def size_fits(task_id: int | str | None, width: int, height: int, max_side: int, issues: list[Issue]) -> bool:
    """Whether an image of this size may be converted; a larger one is reported before anything of its
    size is allocated (masks are width x height bytes), a side that rounds to 0 px (``original_width``
    0.25) because COCO and ``validate`` need at least one pixel."""
    if width < 1 or height < 1:
        issues.append(
            Issue(
                task_id,
                None,
                f"image size {shown(width)}x{shown(height)} (original_width x original_height of its regions,"
                " rounded to whole pixels) has a side of 0 px; skipped",
                "error",
            )
        )
        return False
    if width <= max_side and height <= max_side:
        return True
    issues.append(
        Issue(
            task_id,
            None,
            f"image size {shown(width)}x{shown(height)} (original_width x "
            f"original_height of its regions) exceeds the limit of {max_side} px a side; skipped",
            "error",
        )
    )
    return False


def _rid(r: dict, index: int) -> str:
    return str(r["id"]) if r.get("id") not in (None, "") else f"#{index}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, (ValueError, BrushDecodeError)):
        return str(exc)
    if isinstance(exc, OverflowError):
        return "a number too large for a coordinate"
    return f"{type(exc).__name__}: {shown(exc.args[0]) if exc.args else ''}"


def _label(
    task_id: int | str | None, rid: str, rtype: str, labels, known: frozenset[str], issues: list[Issue]
) -> str | None:
    if not isinstance(labels, list) or not labels:
        issues.append(Issue(task_id, rid, f"{rtype.removesuffix('labels')} region has no label; skipped", "error"))
        return None
    if not isinstance(labels[0], str):
        issues.append(Issue(task_id, rid, f"label {shown(labels[0])} is not a label name; skipped", "error"))
        return None
    label = labels[0]
    if len(labels) > 1:
        issues.append(Issue(task_id, rid, f"region has several labels {shown(labels)}; using {shown(label)}"))
    if label not in known:
        issues.append(
            Issue(task_id, rid, f"label {shown(label)} is not in the labeling config (known: {sorted(known)}); skipped")
        )
        return None
    return label


def _keypoint(
    task_id: int | str | None,
    rid: str,
    label: str,
    value: dict,
    parent_id: str | None,
    w: int,
    h: int,
    issues: list[Issue],
) -> KeypointRegion:
    x = round(to_pixels(float(value["x"]), w), _DECIMALS)
    y = round(to_pixels(float(value["y"]), h), _DECIMALS)
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError("non-finite coordinates")
    if not (0.0 <= x <= w and 0.0 <= y <= h):
        issues.append(
            Issue(
                task_id,
                rid,
                f"keypoint {label!r} at ({x:.1f}, {y:.1f}) lies outside the {w}x{h} image; clipped to its border",
            )
        )
        x, y = min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h))
    return KeypointRegion(rid, label, x, y, parent_id)


def _rectangle(value: dict, w: int, h: int) -> list[list[float]]:
    """The 4 corners in pixels, clockwise on screen, starting at the drawn (rotation) corner."""
    x0, y0 = to_pixels(float(value["x"]), w), to_pixels(float(value["y"]), h)
    rw, rh = to_pixels(float(value["width"]), w), to_pixels(float(value["height"]), h)
    angle = math.radians(float(value.get("rotation") or 0.0))
    c, s = math.cos(angle), math.sin(angle)
    return [[x0 + dx * c - dy * s, y0 + dx * s + dy * c] for dx, dy in ((0.0, 0.0), (rw, 0.0), (rw, rh), (0.0, rh))]


def clean_shapes(parsed: Sequence[tuple[int | str | None, TaskRegions]], issues: list[Issue]) -> None:
    """Convert the pending shapes of all ``parsed`` tasks to pixels and check them in one batch.

    Valid in-image polygons are kept exactly as drawn (their area comes from the same batch); the
    rest are repaired or clipped by :func:`geometry.clean_polygons`, with a warning, or dropped.
    """
    entries = [(tid, regions, *p) for tid, regions in parsed for p in regions.pending]
    for _, regions in parsed:
        regions.pending = []
    if not entries:
        return
    try:
        coords = _pairs([p for e in entries for p in e[3]])
    except (ValueError, TypeError, OverflowError):  # some region has malformed points: find and drop it
        entries = _readable(entries, issues)
        if not entries:
            return
        coords = _pairs([p for e in entries for p in e[3]])
    counts = np.array([len(e[3]) for e in entries])
    index = np.repeat(np.arange(len(entries)), counts)
    scale = np.repeat(np.array([(e[4], e[5]) for e in entries], dtype=float), counts, axis=0)
    far = ~(np.abs(coords) <= _FAR_PERCENT * np.maximum(scale, 1.0)).all(axis=1)  # also catches NaN
    coords[far] = 0.0
    px = np.round(coords * scale, _DECIMALS)
    bad_rows = far | ~np.isfinite(px).all(axis=1)
    finite = np.bincount(index, weights=bad_rows, minlength=len(entries)) == 0
    px[bad_rows] = 0.0
    polygons = shapely.polygons(shapely.linearrings(px, indices=index))
    valid, areas, bounds = shapely.is_valid(polygons), shapely.area(polygons), shapely.bounds(polygons)
    # Rasterizing walks the outline pixel by pixel (see validate.MAX_OUTLINE_PX): bound it per polygon.
    last = np.cumsum(counts) - 1
    following = np.arange(1, len(px) + 1)
    following[last] = last - counts + 1  # each polygon's last vertex connects back to its first
    step = np.abs(px[following] - px).max(axis=1)
    outline = np.bincount(index, weights=step, minlength=len(entries))
    sizes = np.array([(e[1].width, e[1].height) for e in entries], dtype=float)
    inside = (bounds[:, 0] >= 0) & (bounds[:, 1] >= 0) & (bounds[:, 2] <= sizes[:, 0]) & (bounds[:, 3] <= sizes[:, 1])
    keep = finite & valid & inside & (areas >= 1.0) & (outline <= MAX_OUTLINE_PX)
    flat_all = px.ravel().tolist()
    ends = np.cumsum(counts) * 2
    dropped: set[int] = set()
    for k, (task_id, regions, shape, _, _, _) in enumerate(entries):
        flat = flat_all[ends[k] - 2 * counts[k] : ends[k]]
        if keep[k]:
            shape.polygons, shape.area = [flat], float(areas[k])
            continue
        w, h = regions.width, regions.height
        assert w is not None and h is not None, "polygons are only queued for regions with an image size"
        if finite[k] and not valid[k] and self_crossings(flat, MAX_REPAIR_CROSSINGS) > MAX_REPAIR_CROSSINGS:
            issues.append(
                Issue(
                    task_id,
                    shape.id,
                    f"{shape.kind} {shape.label!r} crosses itself more than "
                    f"{MAX_REPAIR_CROSSINGS} times, too tangled to repair; redraw it; skipped",
                    "error",
                    regions.annotation_id,
                )
            )
            dropped.add(id(shape))
            continue
        cleaned = clean_polygons([flat], w, h) if finite[k] else None
        if cleaned is not None and any(outline_px(p) > MAX_OUTLINE_PX for p in cleaned.polygons):
            issues.append(
                Issue(
                    task_id,
                    shape.id,
                    f"{shape.kind} {shape.label!r} has an outline longer than "
                    f"{MAX_OUTLINE_PX} px, which COCO tools cannot rasterize; skipped",
                    "error",
                    regions.annotation_id,
                )
            )
            dropped.add(id(shape))
            continue
        if cleaned is None or not cleaned.polygons:
            why = (
                "has no area inside the {w}x{h} image"
                if finite[k]
                else "has non-finite coordinates or lies far outside the image"
            )
            issues.append(
                Issue(
                    task_id,
                    shape.id,
                    f"{shape.kind} {shape.label!r} {why.format(w=w, h=h)}; skipped",
                    "error",
                    regions.annotation_id,
                )
            )
            dropped.add(id(shape))
            continue
        shape.polygons = cleaned.polygons
        if cleaned.repaired:
            issues.append(
                Issue(
                    task_id,
                    shape.id,
                    f"{shape.kind} {shape.label!r} intersects itself; repaired into "
                    f"{len(cleaned.polygons)} valid polygon(s)",
                    annotation_id=regions.annotation_id,
                )
            )
        if cleaned.clipped:
            issues.append(
                Issue(
                    task_id,
                    shape.id,
                    f"{shape.kind} {shape.label!r} extends outside the {w}x{h} image; clipped to it",
                    annotation_id=regions.annotation_id,
                )
            )
    if dropped:
        for _, regions in parsed:
            regions.shapes = [s for s in regions.shapes if id(s) not in dropped]


def _pairs(points: list) -> np.ndarray:
    coords = np.array(points, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError("points must be [x, y] pairs")
    return coords


def _readable(entries: list[tuple], issues: list[Issue]) -> list[tuple]:
    """The entries whose points are [x, y] number pairs; the others are reported and dropped."""
    good = []
    for e in entries:
        try:
            _pairs(e[3])
            good.append(e)
        except (ValueError, TypeError, OverflowError):
            issues.append(
                Issue(
                    e[0],
                    e[2].id,
                    "unreadable polygonlabels value (points must be [x, y] number pairs); skipped",
                    "error",
                    e[1].annotation_id,
                )
            )
            e[1].shapes = [s for s in e[1].shapes if s is not e[2]]
    return good


_JSON_MIN_ROLES = ("polygon", "rectangle", "brush", "keypoint")


def results_from_json_min(record: dict, controls: Controls | None) -> list[dict]:
    """Rebuild Label Studio results from a JSON_MIN row (``{control name: [value, ...]}``), for :func:`parse_results`.

    JSON_MIN keeps each region's value (with its size and ``parentID``) under its control's name, but
    not the relations or the per-region choices: those are lost.
    """
    results = []
    for role in _JSON_MIN_ROLES:
        name = getattr(controls, role) if controls else None
        values = record.get(name) if name else None
        if isinstance(values, dict):
            values = [values]
        for index, v in enumerate(values if isinstance(values, list) else []):
            if not isinstance(v, dict):
                continue
            results.append(
                {
                    "id": v.get("id") or f"{name}#{index}",
                    "type": f"{role}labels",
                    "from_name": name,
                    "original_width": v.get("original_width"),
                    "original_height": v.get("original_height"),
                    "parentID": v.get("parentID"),
                    "value": v,
                }
            )
    return results


# ---- writing ---------------------------------------------------------------------------------------


def _region(
    region_id: str,
    rtype: str,
    from_name: str,
    to_name: str,
    width: int,
    height: int,
    value: dict,
    parent_id: str | None,
    score: float | None,
) -> dict[str, Any]:
    """The fields every region carries. A region with a ``score`` is a model's prediction (Label Studio
    shows the score); one without is an annotator's, ``origin: manual`` as Label Studio exports it."""
    r: dict[str, Any] = {
        "id": region_id,
        "type": rtype,
        "from_name": from_name,
        "to_name": to_name,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": value,
    }
    if score is None:
        r["origin"] = "manual"
    else:
        r["score"] = score
    if parent_id is not None:
        r["parentID"] = parent_id
    return r


def polygon_result(
    region_id: str,
    label: str,
    points: Sequence[Sequence[float]],
    width: int,
    height: int,
    *,
    parent_id: str | None = None,
    from_name: str = "polygon",
    to_name: str = "image",
    score: float | None = None,
) -> dict[str, Any]:
    """A PolygonLabels region from ``[[x, y], ...]`` pixel vertices on a ``width`` x ``height`` image."""
    value = {
        "points": [[to_percent(x, width), to_percent(y, height)] for x, y in points],
        "closed": True,
        "polygonlabels": [label],
    }
    return _region(region_id, "polygonlabels", from_name, to_name, width, height, value, parent_id, score)


def rectangle_result(
    region_id: str,
    label: str,
    x: float,
    y: float,
    w: float,
    h: float,
    width: int,
    height: int,
    *,
    rotation: float = 0.0,
    parent_id: str | None = None,
    from_name: str = "box",
    to_name: str = "image",
    score: float | None = None,
) -> dict[str, Any]:
    """A RectangleLabels region: top-left corner ``x, y`` and size ``w, h`` in pixels, ``rotation`` in
    degrees clockwise about that corner."""
    value = {
        "x": to_percent(x, width),
        "y": to_percent(y, height),
        "width": to_percent(w, width),
        "height": to_percent(h, height),
        "rotation": rotation,
        "rectanglelabels": [label],
    }
    return _region(region_id, "rectanglelabels", from_name, to_name, width, height, value, parent_id, score)


def brush_result(
    region_id: str,
    label: str,
    rle: list[int],
    width: int,
    height: int,
    *,
    parent_id: str | None = None,
    from_name: str = "brush",
    to_name: str = "image",
    score: float | None = None,
) -> dict[str, Any]:
    """A BrushLabels region from Label Studio's own RLE of its RGBA canvas (``label_studio_converter``'s
    ``brush.mask2rle``)."""
    value = {"format": "rle", "rle": rle, "brushlabels": [label]}
    return _region(region_id, "brushlabels", from_name, to_name, width, height, value, parent_id, score)


def keypoint_result(
    region_id: str,
    label: str,
    x: float,
    y: float,
    width: int,
    height: int,
    *,
    parent_id: str | None = None,
    from_name: str = "keypoint",
    to_name: str = "image",
    score: float | None = None,
) -> dict[str, Any]:
    """A KeyPointLabels region at pixel ``x, y``; ``parent_id`` nests it under its object's region."""
    value = {
        "x": to_percent(x, width),
        "y": to_percent(y, height),
        "width": KEYPOINT_WIDTH_PCT,
        "keypointlabels": [label],
    }
    return _region(region_id, "keypointlabels", from_name, to_name, width, height, value, parent_id, score)


def occluded_result(region_id: str, *, from_name: str = "visibility", to_name: str = "image") -> dict[str, Any]:
    """The per-region Choices result Label Studio stores next to a keypoint marked occluded (same id)."""
    return {
        "id": region_id,
        "type": "choices",
        "from_name": from_name,
        "to_name": to_name,
        "origin": "manual",
        "value": {"choices": [OCCLUDED_CHOICE]},
    }


def relation_result(from_id: str, to_id: str) -> dict[str, Any]:
    """A relation between two regions (the keypoint and its object, when it is not nested)."""
    return {"type": "relation", "from_id": from_id, "to_id": to_id, "direction": "right"}


def coco_image_results(coco: dict, image_id: int, schema: Schema) -> list[dict[str, Any]]:
    """The objects of one image of a combined COCO dataset as an annotator stores them: a polygon each,
    its labelled keypoints nested under it (``parentID``), occluded ones (v=1) with the occluded choice.

    For datasets whose objects are single polygons (the synthetic sets); ids are ``obj<annotation id>``
    and ``obj<annotation id>k<keypoint index>``.
    """
    info = next(im for im in coco["images"] if im["id"] == image_id)
    width, height = info["width"], info["height"]
    results: list[dict[str, Any]] = []
    for ann in (a for a in coco["annotations"] if a["image_id"] == image_id):
        pid = f"obj{ann['id']}"
        [flat] = ann["segmentation"]
        points = list(zip(flat[0::2], flat[1::2]))
        results.append(polygon_result(pid, schema.category_by_id(ann["category_id"]).name, points, width, height))
        for k, name in enumerate(schema.keypoint_names):
            x, y, v = ann["keypoints"][3 * k : 3 * k + 3]
            if v > 0:
                results.append(keypoint_result(f"{pid}k{k}", name, x, y, width, height, parent_id=pid))
            if v == 1:
                results.append(occluded_result(f"{pid}k{k}"))
    return results


def task(task_id: int, image: str, results: list[dict], *, annotation_id: int | None = None) -> dict[str, Any]:
    """A task as in Label Studio's JSON export, with one annotation holding ``results``."""
    return {
        "id": task_id,
        "data": {"image": image},
        "annotations": [
            {
                "id": annotation_id or task_id,
                "result": results,
                "was_cancelled": False,
                "created_at": "2026-01-01T00:00:00.000000Z",
                "completed_by": 1,
                "lead_time": 10.0,
            }
        ],
        "predictions": [],
    }
