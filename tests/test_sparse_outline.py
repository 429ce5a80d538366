"""Predicted outlines come back as sparse as people draw them: no staircase from the upsampled mask
head, about the labelled vertex count, and still the same object.

The oracle is independent of ``combined_coco.geometry``: the returned points are rasterised with
PIL's polygon fill and compared pixel by pixel with the mask they were traced from.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from shapely.geometry import Polygon

from combined_coco.geometry import largest_polygon, mask_to_polygons, sparse_outline, staircase_tolerance

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MIN_IOU = 0.9


def vertex_bound(median: int) -> int:
    """At most 1.5x the labelled median, or the median + 2 for very simple shapes."""
    return max(math.floor(1.5 * median), median + 2)


def rasterised(points: np.ndarray, shape: tuple[int, ...], scale: int = 8) -> np.ndarray:
    """PIL's fill of the outline at ``scale`` x resolution, then a pixel is inside when most of it is
    (PIL also fills every pixel the outline touches, a full pixel too many all round at 1x). COCO
    coordinates put pixel centres at +0.5, PIL at integers."""
    canvas = Image.new("L", (shape[1] * scale, shape[0] * scale), 0)
    ImageDraw.Draw(canvas).polygon([(float(x) * scale - 0.5, float(y) * scale - 0.5) for x, y in points], fill=1)
    fine = np.asarray(canvas, dtype=np.float32).reshape(shape[0], scale, shape[1], scale)
    return fine.mean(axis=(1, 3)) >= 0.5


def pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@st.composite
def staircase_masks(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A convex shape of ``corners`` corners filling a mask head's 28 x 28 grid (both engines' grid; the
    grid covers the detected box, so the object fills it), pasted (bilinear, threshold 0.5, as both
    engines paste masks) onto a box 2x to 40x larger; and the corners a person clicks for it."""
    grid = 28
    corners = draw(st.integers(3, 10))
    # corners around the centre, each moved up to a third of the gap: a needle-sharp corner would be
    # rounded off by the paste, and the mask would no longer be the shape a person clicks
    jitter = draw(st.lists(st.floats(-1 / 3, 1 / 3), min_size=corners, max_size=corners))
    angles = (np.arange(corners) + np.asarray(jitter)) * 2 * math.pi / corners + draw(st.floats(0, 2 * math.pi))
    radius = grid * draw(st.floats(0.4, 0.5))
    centre = grid / 2
    fine = np.zeros((grid * 8, grid * 8), np.float32)  # the head's probabilities: the share of each cell covered
    points = np.stack([centre + radius * np.cos(angles), centre + radius * np.sin(angles)], 1)
    cv2.fillPoly(fine, [np.round((points * 8 + 3.5) * 16).astype(np.int32)], 1.0, shift=4)
    small = cv2.resize(fine, (grid, grid), interpolation=cv2.INTER_AREA)
    width, height = draw(st.integers(grid * 2, grid * 40)), draw(st.integers(grid * 2, grid * 40))
    mask = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    # the bound is what a person's corners give: only where those corners still describe the pasted mask
    # (the paste rounds corners; a thin stretched triangle loses its tips)
    # fillPoly puts pixel centres at integers, COCO coordinates at +0.5
    truth = (points + 0.5) * [width / grid, height / grid]
    assume(pixel_iou(rasterised(truth, mask.shape), mask) >= 0.95)
    median = draw(st.integers(corners, corners + 12))  # people click each corner, some a few more
    return mask, median


def staircase_steps(points: np.ndarray, step: float) -> int:
    """Pairs of consecutive edges that are both axis-parallel, at right angles, and at most a grid step
    long: the stair treads and risers of a mask pasted from a coarse grid."""
    edges = np.roll(points, -1, axis=0) - points
    parallel = (np.abs(edges) < 0.5).any(axis=1) & (np.hypot(*edges.T) <= 1.5 * step)
    turns = (np.abs(edges[:, 0]) < 0.5) != (np.abs(np.roll(edges, -1, axis=0)[:, 0]) < 0.5)
    return int((parallel & np.roll(parallel, -1) & turns).sum())


@SETTINGS
@given(staircase_masks())
def test_sparse_outline_is_valid_within_the_vertex_bound_and_faithful_to_the_mask(case: tuple[np.ndarray, int]) -> None:
    mask, median = case
    raw = largest_polygon(mask_to_polygons(mask, 0.5))
    assert raw is not None
    simple = sparse_outline(raw, staircase_tolerance(raw, floor=1.5), median, vertex_bound(median), MIN_IOU)
    assert len(simple) >= 3 and Polygon(simple).is_valid
    assert len(simple) <= vertex_bound(median), (len(raw), len(simple), median)
    assert pixel_iou(rasterised(simple, mask.shape), mask) >= 0.9


@SETTINGS
@given(staircase_masks())
def test_without_a_labelled_median_the_staircase_still_goes(case: tuple[np.ndarray, int]) -> None:
    """An older checkpoint has no median: the size-relative tolerance alone. A mask pasted from a
    grid cell of s pixels has a step every s pixels along a slanted edge; the image-pixel tolerance
    kept every tread and riser. Steps of a pixel or two are invisible and not counted."""
    mask, _ = case
    raw = largest_polygon(mask_to_polygons(mask, 0.5))
    assert raw is not None
    simple = sparse_outline(raw, staircase_tolerance(raw, floor=1.5), min_iou=MIN_IOU)
    assert Polygon(simple).is_valid
    assert pixel_iou(rasterised(simple, mask.shape), mask) >= 0.9
    step = min(mask.shape) / 28
    if step >= 3:
        assert staircase_steps(simple, step) <= 1, (staircase_steps(raw, step), len(raw), len(simple))


def test_a_shape_more_complex_than_its_label_keeps_the_vertices_it_needs() -> None:
    """A gear labelled with a median of 4: no 6-vertex outline is the gear, so fidelity wins over the count."""
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radii = np.where(np.arange(48) % 4 < 2, 85, 55)
    mask = np.zeros((200, 240), np.uint8)
    cv2.fillPoly(mask, [np.stack([120 + radii * np.cos(angles), 100 + radii * np.sin(angles)], 1).astype(np.int32)], 1)
    raw = largest_polygon(mask_to_polygons(mask.astype(bool), 0.5))
    assert raw is not None
    simple = sparse_outline(raw, staircase_tolerance(raw, floor=1.5), 4, vertex_bound(4), MIN_IOU)
    assert len(simple) > vertex_bound(4)
    assert pixel_iou(rasterised(simple, mask.shape), mask.astype(bool)) >= 0.9


def test_an_outline_already_sparse_is_kept() -> None:
    square = np.array([[10.0, 10.0], [90.0, 10.0], [90.0, 70.0], [10.0, 70.0]])
    assert np.array_equal(sparse_outline(square, 5.0, 4, 6), square)
