"""Polygon geometry shared by the converter, augmentation, the model and the backend: clip, repair,
bbox, area, simplification, and polygons traced from masks.

Coordinates are COCO continuous pixels (see docs/FORMAT.md). COCO polygons cannot carry holes, so a
repaired or clipped shape keeps the exterior ring of each part; a shape cut in two stays ONE
instance with two polygons.

OpenCV is imported only by :func:`mask_to_polygons`: it is an optional dependency (``augment``,
``model`` extras) and this module also runs inside Label Studio's process, which never traces masks.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

FlatPolygon = list[float]  # [x1, y1, x2, y2, ...]


@dataclass(frozen=True)
class CleanedPolygons:
    polygons: list[FlatPolygon]
    repaired: bool  # the input was self-intersecting (or otherwise invalid) and was made valid
    clipped: bool  # some of the input lay outside the image


def to_points(flat: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def to_flat(points: Sequence[Sequence[float]]) -> FlatPolygon:
    return [float(c) for p in points for c in p[:2]]


def _parts(geom: shapely.Geometry) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon) or hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _parts(g)]
    return []  # points and lines have no area


def _exterior_flat(poly: Polygon) -> FlatPolygon:
    coords = list(poly.exterior.coords)[:-1]  # shapely repeats the first vertex at the end
    return to_flat(coords)


def clean_polygons(
    polygons: Sequence[FlatPolygon], width: float, height: float, min_area: float = 1.0
) -> CleanedPolygons:
    """Make polygons valid, clip them to the image ``[0, W] x [0, H]`` and drop parts under ``min_area``.

    Vertices inside the image are kept exactly (no simplification), so a clean input comes back
    unchanged apart from float conversion.
    """
    frame = box(0.0, 0.0, float(width), float(height))
    out: list[FlatPolygon] = []
    repaired = clipped = False
    for flat in polygons:
        pts = to_points(flat)
        if len(pts) < 3:
            continue
        poly = Polygon(pts)
        if not poly.is_valid:
            repaired = True
            geom = shapely.make_valid(poly)
        else:
            geom = poly
        if not frame.contains(geom):
            clipped = True
            geom = geom.intersection(frame)
        for part in _parts(geom):
            if part.area >= min_area:
                out.append(to_flat(pts) if part is poly else _exterior_flat(part))
    return CleanedPolygons(out, repaired, clipped)


def self_crossings(flat: FlatPolygon, limit: int) -> int:
    """How many pairs of non-adjacent edges of the closed polygon touch, counted up to about ``limit``.

    What repair costs grows with this count, not with the vertex count; an R-tree of the edges finds
    the touching pairs without comparing every edge with every other, a few edges at a time so a
    scribble with millions of crossings stops early.
    """
    xy = np.asarray(flat, dtype=float).reshape(-1, 2)
    n = len(xy)
    edges = shapely.linestrings(np.stack([xy, np.roll(xy, -1, axis=0)], axis=1))
    tree = shapely.STRtree(edges)
    found = 0
    for start in range(0, n, 64):
        mine = np.arange(start, min(n, start + 64))
        which, other = tree.query(edges[mine], predicate="intersects")
        gap = (other - mine[which]) % n
        found += int(((other > mine[which]) & (gap != 1) & (gap != n - 1)).sum())
        if found > limit:
            break
    return found


def polygons_bbox(polygons: Sequence[FlatPolygon]) -> list[float]:
    """COCO ``[x, y, w, h]`` of the outer bounds of all polygons."""
    xs = [c for p in polygons for c in p[0::2]]
    ys = [c for p in polygons for c in p[1::2]]
    x0, y0 = min(xs), min(ys)
    return [x0, y0, max(xs) - x0, max(ys) - y0]


def polygons_area(polygons: Sequence[FlatPolygon]) -> float:
    """Area of the union of the polygons (overlapping parts count once)."""
    parts = [Polygon(to_points(p)) for p in polygons if len(p) >= 6]
    if not parts:
        return 0.0
    if len(parts) == 1 and parts[0].is_valid:
        return float(parts[0].area)
    return float(shapely.union_all([shapely.make_valid(p) for p in parts]).area)


def polygon_geometry(polygons: Sequence[FlatPolygon]) -> shapely.Geometry:
    """One shapely geometry for an instance, for containment and distance tests."""
    return shapely.union_all([shapely.make_valid(Polygon(to_points(p))) for p in polygons if len(p) >= 6])


def largest_polygon(polygons: Sequence[FlatPolygon]) -> np.ndarray | None:
    """The ``(N, 2)`` vertices of the polygon with the largest area (None without one of 3+ vertices):
    Label Studio draws one outline per region, so a split mask keeps its largest part."""
    best, best_area = None, 0.0
    for flat in polygons:
        if len(flat) < 6:
            continue
        area = polygons_area([flat])
        if best is None or area > best_area:
            best, best_area = np.asarray(flat, dtype=float).reshape(-1, 2), area
    return best


def simplify_outline(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker with ``tolerance`` pixels; the outline stays a valid polygon (no self-crossing).

    ``preserve_topology`` keeps a valid input valid; an invalid one (a mask contour touching itself) is
    repaired first and its largest part kept, as Label Studio draws one outline per region.
    """
    if tolerance <= 0 or len(points) <= 4:
        return points
    outline = Polygon(points)
    if not outline.is_valid:
        repaired = shapely.make_valid(outline)
        parts = [g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, Polygon)]
        if not parts:
            return points
        outline = max(parts, key=lambda g: g.area)
    simple = outline.simplify(tolerance, preserve_topology=True)
    if not isinstance(simple, Polygon) or simple.is_empty:
        return points
    return np.asarray(simple.exterior.coords)[:-1]


def mask_to_polygons(mask: np.ndarray, tolerance: float | None = 0.5, min_area: float = 4.0) -> list[FlatPolygon]:
    """Outer contours of a mask as flat polygons tracing the pixels' outer boundary.

    ``cv2.findContours`` returns the *pixel indices* of the mask's boundary pixels, i.e. points at pixel
    centres ``(col + 0.5, row + 0.5)``, half a pixel inside the mask's outline. A polygon through them
    would lose half a pixel all round (on a 10 px wide object, 10 % of its area), so each contour is
    shifted to pixel centres and grown by 0.5 px (mitred, so corners stay corners): the polygon traces
    the *outer boundary* of the pixels, like a polygon an annotator draws around an object, and
    rasterizing it again with pycocotools gives back the same pixels. Holes are not represented
    (``RETR_EXTERNAL``), as in COCO polygons.

    ``tolerance`` is the ``approxPolyDP`` epsilon in pixels; None keeps every corner of the pixel
    outline (``CHAIN_APPROX_SIMPLE``). Parts enclosing less than ``min_area`` px^2 (specks) are dropped.
    """
    import cv2

    mode = cv2.CHAIN_APPROX_SIMPLE if tolerance is None else cv2.CHAIN_APPROX_NONE
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, mode)
    polygons = []
    for contour in contours:
        if tolerance is not None:
            contour = cv2.approxPolyDP(contour, tolerance, True)
        points = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if len(points) >= 3:
            outline = Polygon(points)
        else:  # a one- or two-pixel-thick line: its centre line, grown to its pixels
            outline = shapely.LineString(points) if len(points) == 2 else shapely.Point(points[0])
        grown = outline.buffer(0.5, join_style="mitre", cap_style="square", mitre_limit=2.0)
        for part in getattr(grown, "geoms", [grown]):
            if part.area >= min_area:
                polygons.append(_exterior_flat(part))
    return polygons


def suppress_overlaps(
    groups: Sequence[Hashable], scores: Sequence[float], iou: Callable[[int, int], float], max_iou: float | None
) -> list[int]:
    """Indices (ascending) kept by greedy non-maximum suppression: highest score first, an item is dropped when
    ``iou(item, kept)`` exceeds ``max_iou`` for a kept item of the same group (None: keep all).

    The one duplicate rule of predictions: the predictor applies it to masks, the backend again to the outline
    it sends (the largest part of the mask, simplified), which can overlap more than the whole masks did."""
    if max_iou is None:
        return list(range(len(scores)))
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])):
        if not any(groups[j] == groups[i] and iou(i, j) > max_iou for j in kept):
            kept.append(i)
    return sorted(kept)


def outline_pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two outlines (``(N, 2)`` vertices) as masks: the pixels whose centres lie inside each.

    Pixels, not exact areas: a duplicate is judged on the masks an outline covers, as the masks it came from
    were (an exact-area IoU differs from the pixel one by a few percent on objects ten pixels wide)."""
    lo = np.floor(np.minimum(a.min(0), b.min(0))).astype(int)
    hi = np.ceil(np.maximum(a.max(0), b.max(0))).astype(int)
    if (np.maximum(a.min(0), b.min(0)) >= np.minimum(a.max(0), b.max(0))).any():
        return 0.0
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]] + 0.5
    inside_a = shapely.contains_xy(Polygon(a), xs, ys)
    inside_b = shapely.contains_xy(Polygon(b), xs, ys)
    union = np.logical_or(inside_a, inside_b).sum()
    return float(np.logical_and(inside_a, inside_b).sum() / union) if union else 0.0
