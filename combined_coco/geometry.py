"""Polygon geometry shared by the converter, augmentation, the model and the backend: clip, repair,
bbox, area, simplification, and polygons traced from masks.

Coordinates are COCO continuous pixels (see docs/FORMAT.md). COCO polygons cannot carry holes, so a
repaired or clipped shape keeps the exterior ring of each part; a shape cut in two stays ONE
instance with two polygons.

OpenCV is imported only by :func:`mask_to_polygons`: it is an optional dependency (``augment``,
``model`` extras) and this module also runs inside Label Studio's process, which never traces masks.
"""

from __future__ import annotations

import heapq
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


def outline_iou(a: Polygon, b: Polygon) -> float:
    """Area IoU of two valid polygons (0 when both are empty)."""
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 0.0


def staircase_tolerance(points: np.ndarray, grid: int = 28, floor: float = 0.0) -> float:
    """The Douglas-Peucker tolerance (pixels) that removes the steps of a ``grid`` x ``grid`` mask stretched
    over the outline's bounds: three quarters of a step (the longer side over ``grid``), at least ``floor``.

    A mask head predicts a small grid (28 x 28 in both engines) that is pasted onto the object's box, so
    on a 300 px object each mask cell is 11 px and its contour is a staircase of 11 px steps; a
    tolerance in image pixels (1.5) keeps every step. A tolerance relative to the step removes them and
    stays below the detail the grid can hold.
    """
    extent = np.ptp(points, axis=0) if len(points) else np.zeros(2)
    return max(floor, 0.75 * float(extent.max()) / grid)


# An outline this close to the mask is left as it is by an annotator; below it, a few more vertices (up to the
# label's bound) buy a closer fit before the count is called enough.
CLOSE_FIT_IOU = 0.95


def sparse_outline(
    points: np.ndarray, smoothing: float, target: int | None = None, most: int | None = None, min_iou: float = 0.9
) -> np.ndarray:
    """An outline with about the vertices a person clicks, whose mask IoU with ``points`` is at least ``min_iou``.

    First Douglas-Peucker with ``smoothing`` pixels (see :func:`staircase_tolerance`), halved until the
    IoU holds; then, when that still has more than ``most`` vertices, the fewest vertices from ``target``
    up that reach :data:`CLOSE_FIT_IOU`, or else the closest fit with at most ``most`` that keeps
    ``min_iou``, taken in Douglas-Peucker's order of importance (:func:`_vertex_ranks`), so the corners
    that shape the object come first, or from plain Douglas-Peucker at coarser tolerances, whichever fits
    better. The IoU wins over ``most``: a shape that needs more vertices than people drew for its label
    keeps them. The IoU is the area IoU, held to :func:`_area_min_iou`. The result is a valid polygon; an
    invalid input (a contour touching itself) is repaired first and its largest part kept.
    """
    outline = _valid_outline(points)
    if outline is None:
        return points
    min_iou = _area_min_iou(outline, min_iou)
    base = outline
    tolerance = smoothing
    while tolerance >= 0.25:
        simple = outline.simplify(tolerance, preserve_topology=True)
        if isinstance(simple, Polygon) and not simple.is_empty and outline_iou(simple, outline) >= min_iou:
            base = simple
            break
        tolerance /= 2
    coords = np.asarray(base.exterior.coords)[:-1]
    if most is None or len(coords) <= most:
        return coords
    ranks = _vertex_ranks(coords)
    # plain Douglas-Peucker at coarser tolerances places vertices differently: per vertex count, the one that
    # fits best is a second candidate
    coarser: dict[int, tuple[float, Polygon]] = {}
    seen: set[bytes] = set()
    for step in np.geomspace(max(tolerance, 0.25), max(tolerance, 0.25) * 240, 64):
        simple = outline.simplify(float(step), preserve_topology=True)
        if not (isinstance(simple, Polygon) and simple.is_valid and not simple.is_empty):
            continue
        ring = np.asarray(simple.exterior.coords)
        if ring.tobytes() in seen:
            continue
        seen.add(ring.tobytes())
        score, count = outline_iou(simple, outline), len(ring) - 1
        if score > coarser.get(count, (-1.0, simple))[0]:
            coarser[count] = (score, simple)
    best, best_iou = coords, 0.0
    for count in range(max(3, min(target or 3, most)), len(coords)):
        for candidate in (_fitted(coords, ranks < count, outline), coarser.get(count)):
            if candidate is not None and candidate[0] > best_iou:
                best_iou, best = candidate[0], np.asarray(candidate[1].exterior.coords)[:-1]
        if best_iou >= (CLOSE_FIT_IOU if count < most else min_iou):
            return best
    return coords


def _area_min_iou(outline: Polygon, min_iou: float) -> float:
    """The area IoU with ``outline`` that keeps ``min_iou``.

    ``min_iou`` is meant on the mask an annotator sees: on a small object the pixels an outline half-covers
    (about its perimeter over its area) move a pixel IoU away from the area IoU, so the area IoU keeps a
    margin of perimeter/area/12, at most 0.01: more would cost a tiny shape vertices a person never clicks
    (a 10 px triangle asked 0.95 and got 10 vertices), and there one pixel more or less is a rasteriser's
    edge rule, not the shape.
    """
    return min(0.99, min_iou + min(0.01, outline.length / outline.area / 12))


def _fitted(ring: np.ndarray, keep: np.ndarray, outline: Polygon) -> tuple[float, Polygon] | None:
    """The outline through ``ring[keep]``, its corners moved to where a person clicks them, with its IoU; None
    if invalid.

    A mask rounds an object's corners, so its outline's vertices sit inside them, and chords between
    outline vertices cut off every convex bulge. Each kept edge gets the line fitted to the outline
    points it spans, and each corner goes to where its two lines meet (unless they are nearly parallel or
    meet far away); otherwise the polygon is grown to the outline's area. Whichever of these fits the
    outline best is returned.
    """
    subset = Polygon(ring[keep])
    if not subset.is_valid:
        return None
    options = [subset, _corners_from_edges(ring, np.flatnonzero(keep))]
    grow = (outline.area - subset.area) / subset.length if subset.length > 0 else 0.0
    if grow > 0:
        options.append(subset.buffer(grow, join_style="mitre", mitre_limit=4.0))
    count = len(subset.exterior.coords)
    valid = [
        g
        for g in options
        if isinstance(g, Polygon) and g.is_valid and not g.is_empty and len(g.exterior.coords) == count
    ]
    return max(((outline_iou(g, outline), g) for g in valid), key=lambda scored: scored[0])


def _corners_from_edges(ring: np.ndarray, kept: np.ndarray) -> Polygon | None:
    """The polygon whose vertex ``j`` is where the lines fitted to the outline points of its two edges meet."""
    n = len(ring)
    lines = []  # (point on the line, unit direction) per edge kept[j] -> kept[j + 1]
    for j, start in enumerate(kept):
        end = kept[(j + 1) % len(kept)]
        run = ring[np.arange(start, start + (end - start) % n + 1) % n]
        centre = run.mean(axis=0)
        _, _, axes = np.linalg.svd(run - centre)
        lines.append((centre, axes[0]))
    corners = []
    for j, vertex in enumerate(kept):
        (p, d), (q, e) = lines[j - 1], lines[j]
        cross = d[0] * e[1] - d[1] * e[0]
        corner = ring[vertex]
        if abs(cross) > 0.2:  # the lines cross at more than ~12 degrees
            t = ((q - p)[0] * e[1] - (q - p)[1] * e[0]) / cross
            meet = p + t * d
            if np.hypot(*(meet - corner)) <= 0.25 * np.hypot(*(ring[kept[j - 1]] - corner)) + 1.0:
                corner = meet
        corners.append(corner)
    return Polygon(corners) if len(corners) >= 3 else None


def _valid_outline(points: np.ndarray) -> Polygon | None:
    """``points`` as a valid polygon; an invalid ring is repaired and its largest part kept (None: no area)."""
    if len(points) < 3:
        return None
    outline = Polygon(points)
    if outline.is_valid:
        return outline
    repaired = shapely.make_valid(outline)
    parts = [g for g in getattr(repaired, "geoms", [repaired]) if isinstance(g, Polygon) and not g.is_empty]
    return max(parts, key=lambda g: g.area) if parts else None


def _vertex_ranks(ring: np.ndarray) -> np.ndarray:
    """For each vertex of a closed ring, when Douglas-Peucker would add it: the vertices of rank below
    ``n`` are the ``n``-vertex outline closest to the ring that this greedy order gives.

    Starts from the vertex farthest from the centroid and the one farthest from it; then repeatedly
    adds the vertex farthest from the chord of the arc it lies on (a heap of arcs, each scanned once).
    """
    n = len(ring)
    ranks = np.full(n, n, dtype=int)
    first = int(np.argmax(((ring - ring.mean(axis=0)) ** 2).sum(axis=1)))
    second = int(np.argmax(((ring - ring[first]) ** 2).sum(axis=1)))
    ranks[first], ranks[second] = 0, 1
    heap: list[tuple[float, int, int, int]] = []  # (-distance, farthest vertex, arc start, arc end)

    def push(start: int, end: int) -> None:
        span = (end - start) % n
        if span > 1:
            inner = np.arange(start + 1, start + span) % n
            distances = _distances_to_segment(ring[inner], ring[start], ring[end])
            far = int(np.argmax(distances))
            heapq.heappush(heap, (-float(distances[far]), int(inner[far]), start, end))

    push(first, second)
    push(second, first)
    rank = 2
    while heap:
        _, vertex, start, end = heapq.heappop(heap)
        ranks[vertex] = rank
        rank += 1
        push(start, vertex)
        push(vertex, end)
    return ranks


def _distances_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    length2 = float(d @ d)
    t = np.clip(((points - a) @ d) / length2, 0.0, 1.0) if length2 > 0 else np.zeros(len(points))
    return np.hypot(*(points - a - t[:, None] * d).T)


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


_HALF_OPEN = 1e-7  # px: far below any coordinate's precision that matters, far above float64's at 10^4 px


def outline_pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two outlines (``(N, 2)`` vertices) as masks: the pixels whose centres lie inside each.

    Pixels, not exact areas: a duplicate is judged on the masks an outline covers, as the masks it came from
    were (an exact-area IoU differs from the pixel one by a few percent on objects ten pixels wide). Outlines
    traced from masks run along half-pixel lines, through pixel centres: a centre on an edge is decided
    half-open, as rasterisers do (sampled a hair right of and below the centre), where a strict "inside" test
    drops it from both masks (one such pair measured 0.493 against 0.507 counted half-open)."""
    lo = np.floor(np.minimum(a.min(0), b.min(0))).astype(int)
    hi = np.ceil(np.maximum(a.max(0), b.max(0))).astype(int)
    if (np.maximum(a.min(0), b.min(0)) >= np.minimum(a.max(0), b.max(0))).any():
        return 0.0
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]] + (0.5 + _HALF_OPEN)
    inside_a = shapely.contains_xy(Polygon(a), xs, ys)
    inside_b = shapely.contains_xy(Polygon(b), xs, ys)
    union = np.logical_or(inside_a, inside_b).sum()
    return float(np.logical_and(inside_a, inside_b).sum() / union) if union else 0.0
