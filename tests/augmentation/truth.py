"""Exact rasterization for fidelity checks: a pixel belongs to a shape when its centre lies inside."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import shapely
from pycocotools import mask as mask_utils

from combined_coco.geometry import polygon_geometry


def rasterize(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """Boolean mask of polygons (tested at pixel centres, COCO coordinates) or of an RLE."""
    if isinstance(segmentation, dict):
        return mask_utils.decode(segmentation).astype(bool)
    out = np.zeros((height, width), bool)
    geom = polygon_geometry(segmentation)
    if geom.is_empty:
        return out
    x0, y0, x1, y1 = geom.bounds
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        return out
    xs, ys = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
    shapely.prepare(geom)
    out[r0:r1, c0:c1] = shapely.contains_xy(geom, xs, ys)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def measured_matrix(pipeline: dict, seed: int, image: np.ndarray) -> np.ndarray:
    """The 3x3 map (COCO continuous coordinates) that the pixels really underwent, measured
    independently of the code under test: warp an image whose channels hold each pixel centre's
    own coordinates with the same sampled transform (bilinear, so coordinates interpolate exactly),
    then fit output-centre -> source-coordinate with a homography and invert it."""
    compose = A.from_dict(pipeline)
    for leaf in _leaves(compose):
        if hasattr(leaf, "mask_interpolation"):
            leaf.mask_interpolation = cv2.INTER_LINEAR
    h, w = image.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32) + 0.5, np.arange(h, dtype=np.float32) + 0.5)
    compose.set_random_seed(seed)
    out = compose(image=image, masks=[xs, ys, np.ones_like(xs)])["masks"]
    mx, my, valid = (np.asarray(m) for m in out)
    ok = cv2.erode((valid >= 0.9999).astype(np.uint8), np.ones((5, 5), np.uint8), borderValue=0).astype(bool)
    rows, cols = np.nonzero(ok)
    pick = np.random.default_rng(0).choice(len(rows), min(4000, len(rows)), replace=False)
    dst = np.c_[cols[pick] + 0.5, rows[pick] + 0.5]
    src = np.c_[mx[rows[pick], cols[pick]], my[rows[pick], cols[pick]]]
    back, _ = cv2.findHomography(dst.astype(np.float64), src.astype(np.float64), 0)
    forward = np.linalg.inv(back)
    return forward / forward[2, 2]


def _leaves(t):
    if isinstance(t, A.BaseCompose):
        for c in t.transforms:
            yield from _leaves(c)
    else:
        yield t


def label_image(segmentations: list[list | dict], height: int, width: int) -> np.ndarray:
    """uint16 image with instance ``k`` painted as ``k + 1`` (0 = background); the instances must not overlap."""
    labels = np.zeros((height, width), np.uint16)
    for k, seg in enumerate(segmentations):
        mask = rasterize(seg, height, width)
        assert not labels[mask].any(), "label-image instances must not overlap"
        labels[mask] = k + 1
    return labels


def warped_labels(pipeline: dict, seed: int, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The label image carried by Albumentations itself through the same sampled pipeline, as a mask
    target with nearest-neighbour interpolation and zero fill: where each instance's pixels really are
    after every step, cuts included, independently of the matrices of the code under test."""
    compose = A.from_dict(pipeline)
    for leaf in _leaves(compose):
        if hasattr(leaf, "mask_interpolation"):
            leaf.mask_interpolation = cv2.INTER_NEAREST
        if hasattr(leaf, "fill_mask"):
            leaf.fill_mask = 0
    compose.set_random_seed(seed)
    return np.asarray(compose(image=image, mask=labels)["mask"])
