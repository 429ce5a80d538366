"""Apply one sampled Albumentations transform to an image and to the geometry of its instances.

Albumentations transforms the image. The geometry does NOT go through Albumentations' keypoint
or mask code: after the call we read the parameters it actually sampled
(``Compose(save_applied_params=True)``) and turn every applied geometric step into a 3x3 matrix in
COCO continuous pixel coordinates (docs/FORMAT.md). Why:

- Albumentations' keypoint math mixes conventions. Flips/rot90/affine treat a keypoint as a pixel
  index (``x' = W - 1 - x``), but resizes scale it as a continuous coordinate (``x' = s * x``). No
  single half-pixel shift makes both right, so a crop-resize pipeline drifts by up to ``(s-1)/2`` px
  per step. Building each step's matrix ourselves, in one convention, removes the drift.
- Polygon vertices are mapped, never "removed as invisible", so vertex counts cannot misalign and
  an object that leaves the frame is clipped (shapely) instead of losing vertices.
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

from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Callable, Sequence

import albumentations as A
import cv2
import numpy as np
from pycocotools import mask as mask_utils
import shapely
from shapely.geometry import Polygon

from combined_coco.dataset import rle_text, swap_left_right
from combined_coco.geometry import FlatPolygon, clean_polygons, polygons_area, polygons_bbox

Matrix = np.ndarray  # 3x3 float64, continuous COCO pixel coordinates in -> out
Shape = tuple[int, int]  # (height, width)
Window = tuple[np.ndarray, int, int]  # a mask crop and its offset (x0, y0) in its frame


class UnsupportedTransform(ValueError):
    """A transform whose effect on geometry this module cannot compute exactly."""


@dataclass
class Instance:
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


# ---- matrices -------------------------------------------------------------------------------
def _translate(dx: float, dy: float) -> Matrix:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _scale(sx: float, sy: float) -> Matrix:
    return np.diag([sx, sy, 1.0])


def _linear(a: float, b: float, c: float, d: float, tx: float, ty: float) -> Matrix:
    return np.array([[a, b, tx], [c, d, ty], [0.0, 0.0, 1.0]])


def from_pixel_index_matrix(m: np.ndarray) -> Matrix:
    """OpenCV's warp matrices map pixel indices (centre of pixel ``(c, r)`` is ``(c, r)``); COCO
    puts that centre at ``(c + 0.5, r + 0.5)``. Conjugating by the half-pixel shift converts."""
    full = np.eye(3)
    full[: m.shape[0], :] = m
    return _translate(0.5, 0.5) @ full @ _translate(-0.5, -0.5)


def _hflip(h: int, w: int) -> Matrix:
    return _linear(-1, 0, 0, 1, w, 0)


def _vflip(h: int, w: int) -> Matrix:
    return _linear(1, 0, 0, -1, 0, h)


def _transpose(h: int, w: int) -> Matrix:
    return _linear(0, 1, 1, 0, 0, 0)


def _rot90(k: int, h: int, w: int) -> Matrix:
    """``np.rot90(img, k)``: counter-clockwise quarter turns."""
    return {
        0: np.eye(3),
        1: _linear(0, 1, -1, 0, 0, w),
        2: _linear(-1, 0, 0, -1, w, h),
        3: _linear(0, -1, 1, 0, h, 0),
    }[k % 4]


_D4: dict[str, Callable[[int, int], Matrix]] = {
    "e": lambda h, w: np.eye(3),
    "r90": lambda h, w: _rot90(1, h, w),
    "r180": lambda h, w: _rot90(2, h, w),
    "r270": lambda h, w: _rot90(3, h, w),
    "v": _vflip,
    "h": _hflip,
    "t": _transpose,
    "hvt": lambda h, w: _transpose(h, w) @ _rot90(2, h, w),
}


def _crop(params: dict) -> Matrix:
    x1, y1 = params["crop_coords"][:2]
    pad = params.get("pad_params")
    before = _translate(pad["pad_left"], pad["pad_top"]) if pad else np.eye(3)
    return _translate(-x1, -y1) @ before


def _resize(in_shape: Shape, out_shape: Shape) -> Matrix:
    """cv2.resize maps continuous coordinates by the exact size ratio (pixel areas line up)."""
    return _scale(out_shape[1] / in_shape[1], out_shape[0] / in_shape[0])


def _crop_resize(params: dict, out_shape: Shape) -> Matrix:
    x1, y1, x2, y2 = params["crop_coords"]
    return _resize((y2 - y1, x2 - x1), out_shape) @ _translate(-x1, -y1)


def _rotate(params: dict) -> Matrix:
    m = from_pixel_index_matrix(params["matrix"])
    if params.get("x_min", -1) != -1:  # crop_border=True: a crop follows the rotation
        m = _translate(-params["x_min"], -params["y_min"]) @ m
    return m


def _perspective(params: dict, out_shape: Shape) -> Matrix:
    """With ``keep_size`` Albumentations rescales ``(max_width, max_height)`` back to the input size
    *inside* OpenCV's pixel-index matrix; without it the scale is 1."""
    rescale = _scale(out_shape[1] / params["max_width"], out_shape[0] / params["max_height"])
    return from_pixel_index_matrix(rescale @ params["matrix"])


# name -> (params, input shape, output shape) -> matrix
StepRule = Callable[[dict, Shape, Shape], Matrix]
MATRIX_RULES: dict[str, StepRule] = {
    "HorizontalFlip": lambda p, i, o: _hflip(*i),
    "VerticalFlip": lambda p, i, o: _vflip(*i),
    "Transpose": lambda p, i, o: _transpose(*i),
    "RandomRotate90": lambda p, i, o: _rot90(p["factor"], *i),
    "D4": lambda p, i, o: _D4[str(p["group_element"])](*i),
    "SquareSymmetry": lambda p, i, o: _D4[str(p["group_element"])](*i),
    "Affine": lambda p, i, o: from_pixel_index_matrix(p["matrix"]),
    "ShiftScaleRotate": lambda p, i, o: from_pixel_index_matrix(p["matrix"]),
    "SafeRotate": lambda p, i, o: from_pixel_index_matrix(p["matrix"]),
    "Perspective": lambda p, i, o: _perspective(p, o),
    "Rotate": lambda p, i, o: _rotate(p),
    "Resize": lambda p, i, o: _resize(i, o),
    "LongestMaxSize": lambda p, i, o: _resize(i, o),
    "SmallestMaxSize": lambda p, i, o: _resize(i, o),
    "RandomScale": lambda p, i, o: _resize(i, o),
    "RandomResizedCrop": lambda p, i, o: _crop_resize(p, o),
    "RandomSizedCrop": lambda p, i, o: _crop_resize(p, o),
    "RandomCrop": lambda p, i, o: _crop(p),
    "CenterCrop": lambda p, i, o: _crop(p),
    "Crop": lambda p, i, o: _crop(p),
    "RandomCropFromBorders": lambda p, i, o: _crop(p),
    "PadIfNeeded": lambda p, i, o: _translate(p["pad_left"], p["pad_top"]),
    "Pad": lambda p, i, o: _translate(p["pad_left"], p["pad_top"]),
}

# Dual transforms that hide pixels but move nothing.
GEOMETRY_NEUTRAL = frozenset({"CoarseDropout", "GridDropout", "XYMasking", "PixelDropout", "Erasing"})

# Non-affine warps (all sample the input through per-pixel maps ``map_x``/``map_y``): no matrix
# exists, so instances go through their masks and are re-polygonized (see module docstring).
NON_AFFINE = frozenset({"GridDistortion", "OpticalDistortion", "ElasticTransform", "ThinPlateSpline", "PiecewiseAffine"})


@cache
def is_pixel_level(name: str) -> bool:
    """Image-only transforms change colours, never positions."""
    cls = getattr(A, name, None)
    return isinstance(cls, type) and issubclass(cls, A.ImageOnlyTransform)


def step_kind(name: str) -> str:
    """``"pixel"``, ``"matrix"``, ``"remap"``, ``"neutral"``; raises :class:`UnsupportedTransform` otherwise."""
    if is_pixel_level(name):
        return "pixel"
    if name in MATRIX_RULES:
        return "matrix"
    if name in NON_AFFINE:
        return "remap"
    if name in GEOMETRY_NEUTRAL:
        return "neutral"
    raise UnsupportedTransform(
        f"{name} moves pixels in a way this project does not map onto polygons and keypoints. Supported"
        f" geometric transforms: {', '.join(sorted(MATRIX_RULES | dict.fromkeys(NON_AFFINE)))};"
        " any pixel-level transform is fine."
    )


@dataclass(frozen=True)
class Remap:
    """A non-affine step: output pixel ``(c, r)`` samples the input at pixel index
    ``(map_x[r, c], map_y[r, c])`` (OpenCV's remap convention)."""

    map_x: np.ndarray
    map_y: np.ndarray


Step = tuple[Matrix | Remap, Shape]  # a step and the shape of its output, where geometry is clipped


def cuts(m: Matrix, in_shape: Shape, out_shape: Shape) -> bool:
    """Whether a step's output frame loses part of its input frame (checked at the input's corners,
    which bound the mapped frame for an affine or a perspective map that keeps the frame in front)."""
    (h, w), (oh, ow) = in_shape, out_shape
    corners = map_points(m, np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]))
    tol = 1e-6 * max(h, w, oh, ow)
    return bool((corners < -tol).any() or (corners[:, 0] > ow + tol).any() or (corners[:, 1] > oh + tol).any())


def applied_steps(applied: Sequence[tuple[str, dict[str, Any]]], out_shape: Shape) -> list[Step]:
    """The geometric steps Albumentations applied, in order; geometry is clipped after each returned step.

    Consecutive matrices are multiplied into one until a step cuts (:func:`cuts`): that step closes
    the product at its own output frame, so content it cut off cannot come back when a later step
    shows the area beyond it. Each step's input shape is its recorded ``shape``; its output shape is
    the next step's input (or the final image's shape for the last one), so resizes need no rounding guess.
    """
    in_shapes = [tuple(params["shape"][:2]) for _, params in applied]
    out_shapes = in_shapes[1:] + [out_shape]
    steps: list[Step] = []
    current, pending = np.eye(3), False
    for (name, params), i, o in zip(applied, in_shapes, out_shapes):
        kind = step_kind(name)
        if kind == "matrix":
            step = MATRIX_RULES[name](params, i, o)
            current, pending = step @ current, True
            if cuts(step, i, o):
                steps.append((current, o))
                current, pending = np.eye(3), False
        elif kind == "remap":
            if pending:
                steps.append((current, i))
            steps.append((Remap(params["map_x"], params["map_y"]), o))
            current, pending = np.eye(3), False
    return steps + [(current, out_shape)] if pending or not steps else steps


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
def _transform_polygons(steps: Sequence[Step], polygons: list[FlatPolygon], limits: Limits) -> tuple[list[FlatPolygon], float] | None:
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
        full = polygons_area([map_points(total, np.asarray(p, dtype=np.float64).reshape(-1, 2)).ravel().tolist() for p in polygons])
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
    to_index = _translate(-x0 - 0.5, -y0 - 0.5) @ m @ _translate(sx0 + 0.5, sy0 + 0.5)
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


def _transform_rle(inst: Instance, steps: Sequence[Step], limits: Limits) -> tuple[dict, float, list[float]] | None:
    window: Window | None = inst.mask_window
    for m, shape in steps:
        window = _warp_window(window, m, shape)
        if window is None:
            return None
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
            to_index = _translate(-0.5, -0.5) @ step @ _translate(0.5, 0.5)
            mask = cv2.warpPerspective(mask, to_index, (w, h), flags=cv2.INTER_NEAREST)
    return mask


def _mask_polygons(mask: np.ndarray, limits: Limits) -> list[FlatPolygon]:
    """Outer outlines of a mask. Contours run through boundary pixel *centres*, half a pixel inside
    the mask's edge, so each is grown by half a pixel (mitre joins keep the vertex count)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    grown = [shapely.make_valid(Polygon(c[:, 0, :] + 0.5)).buffer(0.5, join_style="mitre") for c in contours if len(c) >= 3]
    parts = [p for g in grown for p in getattr(g, "geoms", [g]) if isinstance(p, Polygon) and not p.is_empty]
    flat = [np.asarray(p.exterior.coords[:-1]).ravel().tolist() for p in parts]
    h, w = mask.shape
    return clean_polygons(flat, w, h, min_area=limits.min_part_area).polygons


def _transform_by_mask(inst: Instance, steps: Sequence[Step], in_shape: Shape, limits: Limits) -> tuple[list | dict, float, list[float]] | None:
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


def augment_sample(
    compose: A.Compose,
    image: np.ndarray,
    instances: Sequence[Instance],
    seed: int,
    limits: Limits = Limits(),
) -> Sample:
    """Sample one transform with ``seed`` and apply it to the image and every instance.

    ``compose`` must have been built by :func:`augmentation.pipelines.load_pipeline` (it records the
    applied parameters and contains only supported transforms).
    """
    compose.set_random_seed(seed)
    result = compose(image=image)
    out_image = result["image"]
    out_shape: Shape = out_image.shape[:2]
    steps = applied_steps(result["applied_transforms"], out_shape)
    remapped = any(isinstance(step, Remap) for step, _ in steps)
    mirrored = sum(is_mirroring(step) for step, _ in steps if not isinstance(step, Remap)) % 2 == 1

    transformed: list[TransformedInstance | None] = []
    for inst in instances:
        if remapped:
            got = _transform_by_mask(inst, steps, image.shape[:2], limits)
        elif inst.rle is not None:
            got = _transform_rle(inst, steps, limits)
        else:
            poly = _transform_polygons(steps, inst.polygons, limits)
            got = None if poly is None else (*poly, polygons_bbox(poly[0]))
        if got is None:
            transformed.append(None)
            continue
        segmentation, area, bbox = got
        kps = _transform_keypoints(steps, inst.keypoints, inst.flip_perm, mirrored)
        transformed.append(TransformedInstance(segmentation, bbox, area, kps, sum(1 for v in kps[2::3] if v > 0)))
    return Sample(out_image, transformed, None if remapped else product(steps), mirrored)
