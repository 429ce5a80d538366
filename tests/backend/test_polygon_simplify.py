"""Predicted outlines are simplified to about what a person would click, and stay faithful and valid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon

from combined_coco.geometry import sparse_outline


def _contour_of_mask(mask: np.ndarray) -> np.ndarray:
    """Every boundary pixel of the mask as a vertex: what a mask contour gives before simplification."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return max(contours, key=len).reshape(-1, 2).astype(float) + 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


@pytest.mark.parametrize("shape", ["ellipse", "gear"])
def test_simplified_outline_has_few_vertices_and_the_same_area(shape: str) -> None:
    mask = np.zeros((200, 240), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(mask, (120, 100), (90, 60), 20, 0, 360, 1, -1)
    else:  # a gear: 12 teeth, concave corners a person would click too
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.where(np.arange(48) % 4 < 2, 85, 65)
        teeth = np.stack([120 + radii * np.cos(angles), 100 + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [teeth.round().astype(np.int32)], 1)
    dense = _contour_of_mask(mask)
    simple = sparse_outline(dense, 1.5)
    assert len(simple) < len(dense) / 5, (len(dense), len(simple))
    assert Polygon(simple).is_valid
    assert _iou(dense, simple) >= 0.95


def test_zero_tolerance_and_tiny_outlines_are_kept_as_they_are() -> None:
    square = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    assert np.array_equal(sparse_outline(square, 1.5), square)
    dense = _contour_of_mask(np.pad(np.ones((20, 20), np.uint8), 5))
    assert np.array_equal(sparse_outline(dense, 0.0), dense)


def test_a_self_touching_contour_becomes_a_valid_outline() -> None:
    # a figure eight: two squares meeting in one point, traced as one ring (a mask contour can do this)
    ring = np.array([[0, 0], [5, 0], [10, 0], [10, 10], [5, 10], [5, 5], [0, 5], [0, 2], [0, 1]], float)
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [5, 1], [0, 10], [2, 6]], float)
    for points in (ring, bowtie):
        simple = sparse_outline(points, 1.5)
        assert Polygon(simple).is_valid and Polygon(simple).area > 0
