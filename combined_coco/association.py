"""Regions -> objects: which shapes form one instance, and which instance each keypoint belongs to.

The rules are the contract in docs/FORMAT.md ("Keypoint-to-instance rules"):

- Shapes of the same label linked by ``parentID`` or a relation are one instance (several polygons of
  one object); a rectangle whose box matches a polygon of the same label (IoU >= 0.85) is that
  polygon's box, not a second object.
- A keypoint goes to its ``parentID`` region's instance, else a related region's instance, else the
  smallest instance of an applicable category containing it, else the nearest one within a tolerance,
  else it is reported. It is never dropped silently nor copied onto several objects.

Point tests are plain Python (ray casting, segment distance): they run once per unnested keypoint
against a handful of polygons, where building shapely objects would cost more than the test. In a task
with many objects an R-tree of their boxes (shapely's STRtree) first narrows each keypoint's candidates
to the objects whose box lies within the tolerance, so placing n keypoints among m objects costs about
(n + m) log m instead of n x m; the rules, and so the results, are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely

from combined_coco.dataset import rle_area_bbox, rle_decode, rle_merge
from combined_coco.geometry import FlatPolygon, polygons_area, polygons_bbox
from combined_coco.issues import Issue
from combined_coco.labelstudio import KeypointRegion, ShapeRegion, TaskRegions
from combined_coco.schema import Schema

RECTANGLE_MATCH_IOU = 0.85
# Below this many objects in a task, testing every object is cheaper than building an index.
_INDEX_FROM = 16


@dataclass
class AssociatedObject:
    """One object: its regions, COCO geometry and the keypoints assigned to it (by name)."""

    label: str
    regions: list[ShapeRegion]
    polygons: list[FlatPolygon]  # empty for brush instances
    rle: dict | None
    bbox: list[float]
    area: float
    keypoints: dict[str, KeypointRegion] = field(default_factory=dict)
    _mask: object = field(default=None, repr=False)  # decoded brush mask, only once a point test needs it

    @property
    def region_ids(self) -> list[str]:
        return [r.id for r in self.regions] + [k.id for k in self.keypoints.values()]


def group_instances(regions: TaskRegions) -> tuple[list[AssociatedObject], dict[str, AssociatedObject]]:
    """Instances in drawing order, and region id -> instance for every shape region."""
    shapes = {s.id: s for s in regions.shapes}
    parent = {sid: sid for sid in shapes}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def link(a: str | None, b: str | None) -> None:
        if a in shapes and b in shapes and a != b:
            sa, sb = shapes[a], shapes[b]
            if sa.label == sb.label and (sa.kind == "brush") == (sb.kind == "brush"):
                parent[find(a)] = find(b)

    for s in regions.shapes:
        link(s.id, s.parent_id)
    for a, b in regions.relations:
        link(a, b)

    groups: dict[str, list[ShapeRegion]] = {}
    for s in regions.shapes:
        groups.setdefault(find(s.id), []).append(s)
    _merge_matching_rectangles(list(groups.values()))

    instances: list[AssociatedObject] = []
    by_region: dict[str, AssociatedObject] = {}
    for members in groups.values():
        if not members:
            continue
        inst = _instance(members)
        instances.append(inst)
        for s in members:
            by_region[s.id] = inst
    return instances, by_region


def _merge_matching_rectangles(all_groups: list[list[ShapeRegion]]) -> None:
    """A rectangle-only group joins the best-matching polygon group of its label that has no box yet."""
    polygon_groups = [g for g in all_groups if any(s.kind == "polygon" for s in g)]
    boxed = {id(g) for g in polygon_groups if any(s.kind == "rectangle" for s in g)}
    for g in all_groups:
        if not all(s.kind == "rectangle" for s in g) or len(g) != 1:
            continue
        rect = g[0]
        box = polygons_bbox(rect.polygons)
        best, best_iou = None, RECTANGLE_MATCH_IOU
        for pg in polygon_groups:
            if id(pg) in boxed or pg[0].label != rect.label:
                continue
            iou = _iou(box, polygons_bbox([p for s in pg if s.kind == "polygon" for p in s.polygons]))
            if iou >= best_iou:
                best, best_iou = pg, iou
        if best is not None:
            boxed.add(id(best))
            best.append(rect)
            g.clear()


def _iou(a: list[float], b: list[float]) -> float:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _instance(members: list[ShapeRegion]) -> AssociatedObject:
    label = members[0].label
    if members[0].kind == "brush":
        rle = members[0].rle if len(members) == 1 else rle_merge([s.rle for s in members])  # type: ignore[misc]
        area, bbox = rle_area_bbox(rle)  # type: ignore[arg-type]
        return AssociatedObject(label, members, [], rle, bbox, area)
    # Polygons define the object; a rectangle only stands in when nothing else was drawn.
    outline = [s for s in members if s.kind == "polygon"] or members
    polygons = [p for s in outline for p in s.polygons]
    single = outline[0].area if len(outline) == 1 and len(polygons) == 1 else None
    area = single if single is not None else polygons_area(polygons)
    return AssociatedObject(label, members, polygons, None, polygons_bbox(polygons), area)


def assign_keypoints(
    task_id: int | str | None,
    regions: TaskRegions,
    instances: list[AssociatedObject],
    by_region: dict[str, AssociatedObject],
    schema: Schema,
    tolerance: float,
    issues: list[Issue],
) -> None:
    """Attach every keypoint to one instance (see module docstring) or report it.

    When two keypoints of one name land on one instance the first wins, nested/related ones before
    those placed by position, then in drawing order.
    """
    applies = {c.name: set(c.keypoints) for c in schema.categories}
    keypoint_ids = {k.id for k in regions.keypoints}
    related: dict[str, list[str]] = {}
    for a, b in regions.relations:
        related.setdefault(a, []).append(b)
        related.setdefault(b, []).append(a)
    assert regions.width is not None and regions.height is not None
    max_distance = tolerance * math.hypot(regions.width, regions.height)

    placed: list[tuple[KeypointRegion, AssociatedObject]] = []
    by_position: list[KeypointRegion] = []
    for kp in regions.keypoints:
        target = by_region.get(kp.parent_id) if kp.parent_id else None
        if kp.parent_id and target is None:
            what = (
                "another keypoint"
                if kp.parent_id in keypoint_ids
                else "not a polygon, rectangle or brush that could be converted"
            )
            issues.append(
                Issue(
                    task_id,
                    kp.id,
                    f"keypoint {kp.label!r} is nested under {kp.parent_id!r}, which is "
                    f"{what}; placed by position instead",
                )
            )
        if target is None:
            target = next((by_region[o] for o in related.get(kp.id, ()) if o in by_region), None)
        if target is None:
            by_position.append(kp)
        elif kp.label not in applies[target.label]:
            issues.append(
                Issue(
                    task_id,
                    kp.id,
                    f"keypoint {kp.label!r} does not apply to category "
                    f"{target.label!r} (see its category= in the labeling config); skipped",
                    "error",
                )
            )
        else:
            placed.append((kp, target))
    # Explicit links first, so a stray unnested point cannot take the slot of a nested one.
    nearby = _nearby(by_position, instances, max_distance)
    for kp, around in zip(by_position, nearby):
        target = _by_position(kp, [i for i in around if kp.label in applies[i.label]], max_distance)
        if target is None:
            issues.append(
                Issue(
                    task_id,
                    kp.id,
                    f"keypoint {kp.label!r} at ({kp.x:.1f}, {kp.y:.1f}) is not inside "
                    "or near an object it applies to; nest it under its polygon in Label Studio; "
                    "skipped",
                    "error",
                )
            )
        else:
            placed.append((kp, target))
    for kp, target in placed:
        first = target.keypoints.get(kp.label)
        if first is not None:
            issues.append(
                Issue(
                    task_id,
                    kp.id,
                    f"object {target.regions[0].id} already has keypoint {kp.label!r} "
                    f"(region {first.id}); this second one is skipped",
                    "error",
                )
            )
        else:
            target.keypoints[kp.label] = kp


def _nearby(
    keypoints: list[KeypointRegion], instances: list[AssociatedObject], max_distance: float
) -> list[list[AssociatedObject]]:
    """Per keypoint, in drawing order, the instances whose box lies within ``max_distance`` of it (per
    axis): every instance that can contain the point or be near enough for the nearest rule."""
    if len(instances) < _INDEX_FROM or not keypoints:
        return [instances] * len(keypoints)
    boxes = np.array([inst.bbox for inst in instances], dtype=float)
    tree = shapely.STRtree(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]))
    xy = np.array([(kp.x, kp.y) for kp in keypoints], dtype=float)
    reach = shapely.box(
        xy[:, 0] - max_distance, xy[:, 1] - max_distance, xy[:, 0] + max_distance, xy[:, 1] + max_distance
    )
    which, found = tree.query(reach)  # pairs whose envelopes intersect
    pairs = np.lexsort((found, which))  # by keypoint, then drawing order (ties resolve as without the index)
    out: list[list[AssociatedObject]] = [[] for _ in keypoints]
    for k, i in zip(which[pairs].tolist(), found[pairs].tolist()):
        out[k].append(instances[i])
    return out


def _by_position(
    kp: KeypointRegion, candidates: list[AssociatedObject], max_distance: float
) -> AssociatedObject | None:
    """The smallest candidate containing the point, else the nearest within ``max_distance``."""
    inside = [i for i in candidates if _contains(i, kp.x, kp.y)]
    if inside:
        return min(inside, key=lambda i: i.area)
    best, best_d = None, max_distance
    for inst in candidates:
        d = _distance(inst, kp.x, kp.y)
        if d <= best_d:
            best, best_d = inst, d
    return best


def _contains(inst: AssociatedObject, x: float, y: float) -> bool:
    bx, by, bw, bh = inst.bbox
    if not (bx <= x <= bx + bw and by <= y <= by + bh):
        return False
    if inst.rle is not None:
        return _mask_at(inst, x, y)
    return any(point_in_polygon(x, y, p) for p in inst.polygons)


def _mask_at(inst: AssociatedObject, x: float, y: float) -> bool:
    if inst._mask is None:
        assert inst.rle is not None
        inst._mask = rle_decode(inst.rle)
    h, w = inst.rle["size"]  # type: ignore[index]
    return bool(inst._mask[min(int(y), h - 1), min(int(x), w - 1)])  # type: ignore[index]


def _distance(inst: AssociatedObject, x: float, y: float) -> float:
    if inst.rle is not None:  # brushes: distance to the mask's box is close enough for a tolerance test
        bx, by, bw, bh = inst.bbox
        return math.hypot(max(bx - x, 0.0, x - bx - bw), max(by - y, 0.0, y - by - bh))
    return min(polygon_distance(x, y, p) for p in inst.polygons)


def point_in_polygon(x: float, y: float, flat: FlatPolygon) -> bool:
    """Even-odd ray casting; points exactly on an edge may fall either way (the distance rule catches them)."""
    inside = False
    n = len(flat) // 2
    x1, y1 = flat[-2], flat[-1]
    for i in range(n):
        x2, y2 = flat[2 * i], flat[2 * i + 1]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
        x1, y1 = x2, y2
    return inside


def polygon_distance(x: float, y: float, flat: FlatPolygon) -> float:
    """Distance from a point to the polygon's outline."""
    best = math.inf
    x1, y1 = flat[-2], flat[-1]
    for i in range(len(flat) // 2):
        x2, y2 = flat[2 * i], flat[2 * i + 1]
        dx, dy = x2 - x1, y2 - y1
        seg = dx * dx + dy * dy
        t = 0.0 if seg == 0 else max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / seg))
        best = min(best, math.hypot(x - x1 - t * dx, y - y1 - t * dy))
        x1, y1 = x2, y2
    return best
