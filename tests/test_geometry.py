"""Clipping and repair keep instances whole and bbox/area consistent with the polygons."""

import numpy as np
import pytest

from combined_coco.geometry import clean_polygons, outline_pixel_iou, polygons_area, polygons_bbox


def test_valid_polygon_inside_image_is_unchanged() -> None:
    square = [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]
    r = clean_polygons([square], 10, 10)
    assert r.polygons == [square] and not r.repaired and not r.clipped


def test_polygon_is_clipped_to_the_image() -> None:
    r = clean_polygons([[-5, -5, 20, -5, 20, 20, -5, 20]], 10, 8)
    assert r.clipped
    assert polygons_bbox(r.polygons) == [0, 0, 10, 8]
    assert polygons_area(r.polygons) == 80


def test_bow_tie_is_repaired_into_two_parts_of_one_instance() -> None:
    r = clean_polygons([[0, 0, 10, 10, 10, 0, 0, 10]], 100, 100)
    assert r.repaired and len(r.polygons) == 2
    assert abs(polygons_area(r.polygons) - 50) < 1e-9


def test_polygon_cut_by_the_frame_stays_one_instance_with_two_parts() -> None:
    u_shape = [-2.0, 0, 8, 0, 8, 10, -2, 10, -2, 8, 6, 8, 6, 2, -2, 2]  # a C opening to the left, beyond x=0
    r = clean_polygons([u_shape], 4, 10)
    assert r.clipped and len(r.polygons) == 2


def test_slivers_under_min_area_are_dropped() -> None:
    r = clean_polygons([[0, 0, 50, 0, 50, 0.01, 0, 0.01]], 100, 100, min_area=1.0)
    assert r.polygons == []


def test_union_area_counts_overlap_once() -> None:
    a = [0.0, 0, 4, 0, 4, 4, 0, 4]
    b = [2.0, 0, 6, 0, 6, 4, 2, 4]
    assert polygons_area([a, b]) == 24


def test_outline_pixel_iou_counts_a_centre_on_an_edge_once() -> None:
    """Outlines traced from masks run through pixel centres. Two 4 x 4 px squares on half-pixel lines, offset
    by 2 px, cover 4 x 4 pixels each and share 2 x 4 (hand-counted: IoU 8 / 24); dropping every centre on an
    edge would count 3 x 3 each and share 1 x 3 (IoU 3 / 15)."""

    def square(x: float, y: float) -> np.ndarray:
        return np.array([[x, y], [x + 4, y], [x + 4, y + 4], [x, y + 4]])

    assert outline_pixel_iou(square(0.5, 0.5), square(2.5, 0.5)) == pytest.approx(8 / 24)
    assert outline_pixel_iou(square(0.5, 0.5), square(0.5, 0.5)) == 1.0
