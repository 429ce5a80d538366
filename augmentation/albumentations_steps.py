"""Read what each step of a pinned Albumentations (2.0.8) pipeline did to the image, as geometry steps.

Albumentations transforms the image. The geometry does NOT go through Albumentations' keypoint or
mask code: after the call we read the parameters it actually sampled (``Compose(save_applied_params=True)``)
and turn every applied geometric step into a 3x3 matrix in COCO continuous pixel coordinates
(docs/FORMAT.md), or a :class:`~augmentation.geometry_transform.Remap` for a non-affine one;
:mod:`augmentation.geometry_transform` applies them to polygons, masks and keypoints. Why:

- Albumentations' keypoint math mixes conventions. Flips/rot90/affine treat a keypoint as a pixel
  index (``x' = W - 1 - x``), but resizes scale it as a continuous coordinate (``x' = s * x``). No
  single half-pixel shift makes both right, so a crop-resize pipeline drifts by up to ``(s-1)/2`` px
  per step. Building each step's matrix ourselves, in one convention, removes the drift.
- Polygon vertices are mapped, never "removed as invisible", so vertex counts cannot misalign and
  an object that leaves the frame is clipped (shapely) instead of losing vertices.

This module is the only one that knows the names and recorded parameters (``applied_transforms``) of
Albumentations' transforms: a new Albumentations version is checked here, and only here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import albumentations as A
import numpy as np

from augmentation.geometry_transform import (
    InstanceGeometry,
    Limits,
    Matrix,
    Remap,
    Sample,
    Shape,
    Step,
    cuts,
    transform_sample,
    translate,
)


class UnsupportedTransform(ValueError):
    """A transform whose effect on geometry this module cannot compute exactly."""


# ---- one matrix per applied step ----------------------------------------------------------------
def _scale(sx: float, sy: float) -> Matrix:
    return np.diag([sx, sy, 1.0])


def _linear(a: float, b: float, c: float, d: float, tx: float, ty: float) -> Matrix:
    return np.array([[a, b, tx], [c, d, ty], [0.0, 0.0, 1.0]])


def from_pixel_index_matrix(m: np.ndarray) -> Matrix:
    """OpenCV's warp matrices map pixel indices (centre of pixel ``(c, r)`` is ``(c, r)``); COCO
    puts that centre at ``(c + 0.5, r + 0.5)``. Conjugating by the half-pixel shift converts."""
    full = np.eye(3)
    full[: m.shape[0], :] = m
    return translate(0.5, 0.5) @ full @ translate(-0.5, -0.5)


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
    before = translate(pad["pad_left"], pad["pad_top"]) if pad else np.eye(3)
    return translate(-x1, -y1) @ before


def _resize(in_shape: Shape, out_shape: Shape) -> Matrix:
    """cv2.resize maps continuous coordinates by the exact size ratio (pixel areas line up)."""
    return _scale(out_shape[1] / in_shape[1], out_shape[0] / in_shape[0])


def _crop_resize(params: dict, out_shape: Shape) -> Matrix:
    x1, y1, x2, y2 = params["crop_coords"]
    return _resize((y2 - y1, x2 - x1), out_shape) @ translate(-x1, -y1)


def _rotate(params: dict) -> Matrix:
    m = from_pixel_index_matrix(params["matrix"])
    if params.get("x_min", -1) != -1:  # crop_border=True: a crop follows the rotation
        m = translate(-params["x_min"], -params["y_min"]) @ m
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
    "PadIfNeeded": lambda p, i, o: translate(p["pad_left"], p["pad_top"]),
    "Pad": lambda p, i, o: translate(p["pad_left"], p["pad_top"]),
}

# Dual transforms that hide pixels but move nothing.
GEOMETRY_NEUTRAL = frozenset({"CoarseDropout", "GridDropout", "XYMasking", "PixelDropout", "Erasing"})

# Non-affine warps (all sample the input through per-pixel maps ``map_x``/``map_y``): no matrix
# exists, so instances go through their masks and are re-polygonized (see :mod:`augmentation.geometry_transform`).
NON_AFFINE = frozenset(
    {"GridDistortion", "OpticalDistortion", "ElasticTransform", "ThinPlateSpline", "PiecewiseAffine"}
)


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
    for (name, params), i, o in zip(
        applied, in_shapes, out_shapes, strict=False
    ):  # no step applied: one out_shape, no input
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


def augment_sample(
    compose: A.Compose,
    image: np.ndarray,
    instances: Sequence[InstanceGeometry],
    seed: int,
    limits: Limits = Limits(),  # noqa: B008 (frozen: one shared default is safe)
) -> Sample:
    """Sample one transform with ``seed`` and apply it to the image and every instance.

    ``compose`` must have been built by :func:`augmentation.pipelines.load_pipeline` (it records the
    applied parameters and contains only supported transforms).
    """
    compose.set_random_seed(seed)
    result = compose(image=image)
    out_image = result["image"]
    steps = applied_steps(result["applied_transforms"], out_image.shape[:2])
    return transform_sample(out_image, image.shape[:2], steps, instances, limits)
