"""Carry the geometry of an image's instances through geometric steps: polygons, RLE masks, keypoints.

A step is a 3x3 matrix in COCO continuous pixel coordinates (docs/FORMAT.md) or a :class:`Remap`, each
with the frame (output shape) it is clipped to; :mod:`augmentation.albumentations_steps` reads them from
what Albumentations applied. Nothing here knows Albumentations.

- Consecutive steps are multiplied into one matrix applied to all vertices at once (fast), but only
  as long as no step cuts: a step whose output frame does not contain its whole input (Rotate, an
  Affine scale-up, a crop) ends the product, and polygons, masks and keypoints are clipped to that
  step's frame before the next one. Without this, a later step that shows the area beyond the cut
  (PadIfNeeded, an Affine scale-down, a translation back) would keep annotations over black pixels.
  RLE masks are warped with the same matrices (nearest neighbour at pixel centres, only in the
  object's window), so masks and polygons cannot disagree (and cv2.resize's half-pixel-off
  INTER_NEAREST is avoided).
- The sign of the matrix's determinant says whether the image was mirrored (an odd number of
  reflections: horizontal or vertical flip, transpose, anti-transpose); rotations keep the sign. A
  mirrored image swaps the object's left/right keypoints: they are permuted with the schema's flip pairs.

Non-affine distortions (GridDistortion, ElasticTransform, OpticalDistortion, ThinPlateSpline,
PiecewiseAffine) have no matrix. When one was applied, each instance is rasterized, carried through
every step as a mask (the distortion's own ``map_x``/``map_y``, nearest neighbour) and re-polygonized;
keypoints are mapped by inverting the distortion's maps numerically. That is accurate to the
pixel grid, not exact, which is why the presets use affine/perspective steps only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from combined_coco.dataset import rle_text, swap_left_right
from combined_coco.geometry import FlatPolygon, clean_polygons, mask_to_polygons, polygons_area, polygons_bbox

Matrix = np.ndarray  # 3x3 float64, continuous COCO pixel coordinates in -> out
Shape = tuple[int, int]  # (height, width)
Window = tuple[np.ndarray, int, int]  # a mask crop and its offset (x0, y0) in its frame


@dataclass
class InstanceGeometry:
    """One object of an image, as the augmenter sees it.

    ``polygons`` is empty for RLE instances, ``rle`` is None for polygon instances. ``keypoints``
    is the flat COCO ``[x, y, v, ...]`` list (may be empty); ``flip_perm`` is the keypoint
    permutation applied after a mirroring transform (identity when the category has no pairs).
    """

    polygons: list[FlatPolygon]
    rle: dict | None
    keypoints: list[float]
    flip_perm: Sequence[int]

    @cached_property
    def mask_window(self) -> Window:
        """The decoded RLE cropped to its box (1 px margin) and its offset: decoded once and reused
        by every copy of the image."""
        assert self.rle is not None
        src_h, src_w = self.rle["size"]
        x, y, bw, bh = mask_utils.toBbox(self.rle)
        sx0, sy0 = max(int(x) - 1, 0), max(int(y) - 1, 0)
        sx1, sy1 = min(int(np.ceil(x + bw)) + 1, src_w), min(int(np.ceil(y + bh)) + 1, src_h)
        crop = np.ascontiguousarray(mask_utils.decode(self.rle)[sy0:sy1, sx0:sx1])
        return crop, sx0, sy0


@dataclass
class TransformedInstance:
    segmentation: list[FlatPolygon] | dict
    bbox: list[float]
    area: float
    keypoints: list[float]
    num_keypoints: int


@dataclass(frozen=True)
class Limits:
    """When a transformed instance is too small to keep.

    ``min_part_area``: polygon parts (slivers) below this many px^2 are removed.
    ``min_area``: instances below this visible area (px^2) are dropped.
    ``min_visible``: instances showing less than this fraction of their transformed area are dropped.
    """

    min_part_area: float = 1.0
    min_area: float = 4.0
    min_visible: float = 0.05


@dataclass
class Sample:
    image: np.ndarray
    instances: list[TransformedInstance | None]  # None: dropped (too little left in the frame)
    matrix: Matrix | None  # product of every step's matrix; None when a non-affine step was applied
    mirrored: bool


# ---- steps ------------------------------------------------------------------------------------
def translate(dx: float, dy: float) -> Matrix:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Remap:
    """A non-affine step: output pixel ``(c, r)`` samples the input at pixel index
    ``(map_x[r, c], map_y[r, c])`` (OpenCV's remap convention)."""

    map_x: np.ndarray
    map_y: np.ndarray


Step = tuple[Matrix | Remap, Shape]  # a step and the shape of its output, where geometry is clipped
MatrixStep = tuple[Matrix, Shape]  # a step of a pipeline without remaps


def cuts(m: Matrix, in_shape: Shape, out_shape: Shape) -> bool:
    """Whether a step's output frame loses part of its input frame (checked at the input's corners,
    which bound the mapped frame for an affine or a perspective map that keeps the frame in front)."""
    (h, w), (oh, ow) = in_shape, out_shape
    corners = map_points(m, np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]))
    tol = 1e-6 * max(h, w, oh, ow)
    return bool((corners < -tol).any() or (corners[:, 0] > ow + tol).any() or (corners[:, 1] > oh + tol).any())


def map_points(m: Matrix, xy: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (possibly projective) matrix to an ``(N, 2)`` array of points."""
    homo = np.c_[xy, np.ones(len(xy))] @ m.T
    return homo[:, :2] / homo[:, 2:3]


def product(steps: Sequence[Step]) -> Matrix:
    """All matrix steps multiplied (remaps skipped): where a pixel goes, ignoring the clipping."""
    total = np.eye(3)
    for step, _ in steps:
        if not isinstance(step, Remap):
            total = step @ total
    return total


def is_mirroring(m: Matrix) -> bool:
    """Negative determinant of the linear part = an odd number of reflections = left/right swap.
    (For a homography the Jacobian's sign is ``sign(det M)`` where the points lie in front, ``w > 0``.)"""
    return bool(np.linalg.det(m) < 0)


# ---- instances ------------------------------------------------------------------------------
def _transform_polygons(
    steps: Sequence[MatrixStep], polygons: list[FlatPolygon], limits: Limits
) -> tuple[list[FlatPolygon], float] | None:
    """Polygons through each step, clipped to each step's frame (shapely only where a vertex left it)."""
    current = polygons
    clipped = False
    for m, (h, w) in steps:
        points = [map_points(m, np.asarray(p, dtype=np.float64).reshape(-1, 2)) for p in current]
        mapped = [p.ravel().tolist() for p in points]
        if all(p.min() >= 0 and (p <= (w, h)).all() for p in points):
            current = mapped  # nothing to clip, and an invertible map keeps valid polygons valid
            continue
        result = clean_polygons(mapped, w, h, min_area=limits.min_part_area)
        current, clipped = result.polygons, clipped or result.clipped
        if not current:
            return None
    area = polygons_area(current)
    if clipped:  # the share left is measured against the whole object, transformed but not clipped
        total = product(steps)
        full = polygons_area(
            [map_points(total, np.asarray(p, dtype=np.float64).reshape(-1, 2)).ravel().tolist() for p in polygons]
        )
    else:
        full = area
    if area < limits.min_area or area < limits.min_visible * full:
        return None
    return current, area


def _warp_window(source: Window, m: Matrix, out_shape: Shape) -> Window | None:
    """Warp a mask window with a matrix, nearest neighbour at pixel centres, only between the window
    and the part of the output frame it maps to (a full-frame warp per instance would cost as much
    as the image). None when nothing of it stays in the frame."""
    h, w = out_shape
    crop, sx0, sy0 = source
    sx1, sy1 = sx0 + crop.shape[1], sy0 + crop.shape[0]
    corners = map_points(m, np.array([[sx0, sy0], [sx1, sy0], [sx0, sy1], [sx1, sy1]], dtype=np.float64))
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return None
    # window pixel index -> continuous -> matrix -> continuous -> source-window pixel index
    to_index = translate(-x0 - 0.5, -y0 - 0.5) @ m @ translate(sx0 + 0.5, sy0 + 0.5)
    size = (int(x1 - x0), int(y1 - y0))
    if np.allclose(to_index[2], [0.0, 0.0, 1.0]):
        window = cv2.warpAffine(crop, to_index[:2], size, flags=cv2.INTER_NEAREST)
    else:
        window = cv2.warpPerspective(crop, to_index, size, flags=cv2.INTER_NEAREST)
    return (window, int(x0), int(y0)) if window.any() else None


def warped_area(source: Window, m: Matrix) -> float:
    """Area (px^2) a mask covers after the map ``m``, unclipped: each pixel counts with the map's local
    area scale at its centre, ``|det M| / |w|^3`` (``w`` the homogeneous coordinate). For a
    perspective map the scale varies across the image, so ``det`` of the 2x2 part is wrong there."""
    crop, x0, y0 = source
    rows, cols = np.nonzero(crop)
    w = m[2, 0] * (cols + x0 + 0.5) + m[2, 1] * (rows + y0 + 0.5) + m[2, 2]
    return float(np.sum(abs(np.linalg.det(m)) / np.abs(w) ** 3))


def window_rle(window: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """Compressed COCO RLE of a ``height x width`` mask that is zero outside ``window`` placed at
    ``(x0, y0)``, built from the window's columns only (encoding the whole frame per instance costs
    more than the warp). COCO runs are column-major and start with a run of zeros."""
    column = np.zeros((height, window.shape[1]), bool)
    column[y0 : y0 + window.shape[0]] = window > 0
    seq = column.ravel(order="F")
    runs = np.diff(np.r_[0, np.flatnonzero(seq[1:] != seq[:-1]) + 1, seq.size])
    if seq[0]:
        runs = np.r_[0, runs]
    runs[0] += height * x0  # zero columns left of the window
    after = height * (width - x0 - window.shape[1])
    if len(runs) % 2:  # the last run is zeros
        runs[-1] += after
    elif after:
        runs = np.r_[runs, after]
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)


def _rle_result(out: dict, expected_area: float, limits: Limits) -> tuple[dict, float, list[float]] | None:
    area = float(mask_utils.area(out))
    if area < limits.min_area or area < limits.min_visible * expected_area:
        return None
    out = rle_text(out)
    return out, area, [float(v) for v in mask_utils.toBbox(out)]


def _transform_rle(
    inst: InstanceGeometry, steps: Sequence[MatrixStep], limits: Limits
) -> tuple[dict, float, list[float]] | None:
    window = inst.mask_window
    for m, shape in steps:
        warped = _warp_window(window, m, shape)
        if warped is None:
            return None
        window = warped
    h, w = steps[-1][1]
    return _rle_result(window_rle(*window, h, w), warped_area(inst.mask_window, product(steps)), limits)


# ---- non-affine steps: through the instance mask --------------------------------------------------
def _sample_maps(remap: Remap, q: np.ndarray) -> np.ndarray:
    """Bilinear ``(map_x, map_y)`` at pixel-index points ``q`` (N, 2)."""
    qx, qy = (q[:, i].astype(np.float32).reshape(-1, 1) for i in (0, 1))
    return np.c_[
        cv2.remap(remap.map_x, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel(),
        cv2.remap(remap.map_y, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel(),
    ].astype(np.float64)


def _remap_points(remap: Remap, xy: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Forward-map points through a remap, which only says where each output pixel comes from:
    solve ``map(q) = p`` by fixed-point iteration (converges for distortions milder than a fold).
    NaN where no solution inside the image exists (the point left the frame)."""
    target = xy - 0.5  # continuous -> pixel index
    q = target.copy()
    for _ in range(iterations):
        q += target - _sample_maps(remap, q)
    h, w = remap.map_x.shape
    bad = (np.hypot(*(target - _sample_maps(remap, q)).T) > 0.05) | (q[:, 0] < -0.5) | (q[:, 0] > w - 0.5)
    bad |= (q[:, 1] < -0.5) | (q[:, 1] > h - 0.5)
    q[bad] = np.nan
    return q + 0.5


def map_through(steps: Sequence[Step], xy: np.ndarray) -> np.ndarray:
    """Points (continuous coordinates) through every step; NaN for points that left a step's frame
    (cut off there, they stay cut off even if a later step shows that area again)."""
    for step, (h, w) in steps:
        xy = _remap_points(step, xy) if isinstance(step, Remap) else map_points(step, xy)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        xy[~inside] = np.nan
    return xy


def _mask_through(mask: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """A full-frame mask through every step, nearest neighbour, as Albumentations does for masks."""
    for step, (h, w) in steps:
        if isinstance(step, Remap):
            mask = cv2.remap(mask, step.map_x, step.map_y, cv2.INTER_NEAREST, borderValue=0)
        else:
            to_index = translate(-0.5, -0.5) @ step @ translate(0.5, 0.5)
            mask = cv2.warpPerspective(mask, to_index, (w, h), flags=cv2.INTER_NEAREST)
    return mask


def _mask_polygons(mask: np.ndarray, limits: Limits) -> list[FlatPolygon]:
    """Outer outlines of a mask (every corner kept), clipped to its frame: growing the pixel-centre
    contours by half a pixel can reach half a pixel past the frame."""
    h, w = mask.shape
    return clean_polygons(
        mask_to_polygons(mask, None, limits.min_part_area), w, h, min_area=limits.min_part_area
    ).polygons


def _transform_by_mask(
    inst: InstanceGeometry, steps: Sequence[Step], in_shape: Shape, limits: Limits
) -> tuple[list | dict, float, list[float]] | None:
    h, w = in_shape
    if inst.rle is not None:
        source = mask_utils.decode(inst.rle)
    else:
        source = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(inst.polygons, h, w)))
    expected = warped_area((source, 0, 0), product(steps))  # the remaps are mild: their area change is ignored
    mask = _mask_through(np.ascontiguousarray(source), steps)
    if inst.rle is not None:
        return _rle_result(mask_utils.encode(np.asfortranarray(mask)), expected, limits)
    polygons = _mask_polygons(mask, limits)
    area = polygons_area(polygons) if polygons else 0.0
    if area < limits.min_area or area < limits.min_visible * expected:
        return None
    return polygons, area, polygons_bbox(polygons)


def _transform_keypoints(steps: Sequence[Step], kps: list[float], perm: Sequence[int], mirrored: bool) -> list[float]:
    """Labeled keypoints through every step; one cut off at any step's frame becomes ``(0, 0, 0)``."""
    if not kps:
        return []
    arr = np.asarray(kps, dtype=np.float64).reshape(-1, 3)
    labeled = arr[:, 2] > 0
    out = np.zeros_like(arr)
    if labeled.any():
        xy = map_through(steps, arr[labeled, :2])
        inside = np.isfinite(xy).all(axis=1)
        rows = np.flatnonzero(labeled)[inside]
        out[rows, :2] = xy[inside]
        out[rows, 2] = arr[rows, 2]
    if mirrored:
        out = swap_left_right(out, perm)
    return out.ravel().tolist()


def transform_sample(
    out_image: np.ndarray, in_shape: Shape, steps: Sequence[Step], instances: Sequence[InstanceGeometry], limits: Limits
) -> Sample:
    """Every instance of an image of ``in_shape`` through ``steps``, which made ``out_image``."""
    matrices = [(step, shape) for step, shape in steps if not isinstance(step, Remap)]
    remapped = len(matrices) < len(steps)
    mirrored = sum(is_mirroring(m) for m, _ in matrices) % 2 == 1

    transformed: list[TransformedInstance | None] = []
    for inst in instances:
        if remapped:
            got = _transform_by_mask(inst, steps, in_shape, limits)
        elif inst.rle is not None:
            got = _transform_rle(inst, matrices, limits)
        else:
            poly = _transform_polygons(matrices, inst.polygons, limits)
            got = None if poly is None else (*poly, polygons_bbox(poly[0]))
        if got is None:
            transformed.append(None)
            continue
        segmentation, area, bbox = got
        kps = _transform_keypoints(steps, inst.keypoints, inst.flip_perm, mirrored)
        transformed.append(TransformedInstance(segmentation, bbox, area, kps, sum(1 for v in kps[2::3] if v > 0)))
    return Sample(out_image, transformed, None if remapped else product(steps), mirrored)
