"""Polygon geometry shared by the converter and augmentation: clip, repair, bbox, area.

Coordinates are COCO continuous pixels (see docs/FORMAT.md). COCO polygons cannot carry holes, so a
repaired or clipped shape keeps the exterior ring of each part; a shape cut in two stays ONE
instance with two polygons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
