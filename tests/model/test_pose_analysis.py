"""Paper IV.C analysis on analytic shapes and on the real quokka depth map."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from multitask.pose_analysis import (
    configuration_check,
    depth_report,
    format_report,
    load_aligned_depth,
    mask_orientation,
)
from tests.support.samples import QUOKKA


def _ellipse(angle: float, size: int = 200) -> np.ndarray:
    """cv2 draws with y down, angle clockwise on screen: the same convention as mask_orientation."""
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (100, 100), (70, 25), angle, 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("angle", [30.0, -45.0, 0.0, 90.0, 75.0])
def test_orientation_of_rotated_ellipse(angle: float) -> None:
    orientation = mask_orientation(_ellipse(angle))
    assert -90 < orientation.angle_deg <= 90
    assert (orientation.angle_deg - angle + 90) % 180 - 90 == pytest.approx(0.0, abs=1.0)
    assert orientation.centroid == pytest.approx((100.5, 100.5), abs=0.2)
    assert orientation.elongation == pytest.approx(70 / 25, rel=0.05)


def test_configuration_check_finds_the_odd_keypoint() -> None:
    orientation = mask_orientation(_ellipse(30.0))
    ax, ay = orientation.axis
    normal = np.array([-ay, ax])  # +90 deg from the axis: positive cross product side
    centre = np.array(orientation.centroid)
    along = np.array([ax, ay])
    points = np.stack([centre + t * along + s * normal for t, s in ((-40, 10), (0, 12), (40, 8), (10, -15))])
    check = configuration_check(orientation, points, ["a", "b", "c", "tab"])
    assert check.sides == {"a": 1, "b": 1, "c": 1, "tab": -1}
    assert check.outer == "tab"
    balanced = configuration_check(orientation, points[[0, 3]], ["a", "tab"])
    assert balanced.outer is None


def test_depth_per_keypoint_and_over_mask() -> None:
    depth = np.tile(np.arange(100, 140, dtype=np.float32), (30, 1))  # depth = 100 + column
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:20] = True
    depth[0, 0] = 0  # no measurement
    report = depth_report(depth, mask, np.array([[10.9, 5.2], [19.5, 14.99], [0.5, 0.5]]), ["a", "b", "hole"])
    assert report.keypoints == {"a": 110.0, "b": 119.0, "hole": None}
    assert report.mask_mean == pytest.approx(114.5)
    assert report.mask_std == pytest.approx(np.arange(10).std())
    assert report.mask_pixels == 100


def test_quokka_real_depth() -> None:
    data = json.loads((QUOKKA / "quokka_annotations.json").read_text())
    image = cv2.imread(str(QUOKKA / "quokka.jpg"))
    assert image is not None
    height, width = image.shape[:2]
    depth = load_aligned_depth(QUOKKA / "quokka_depth_map_halfres.png", height, width)
    raw = cv2.imread(str(QUOKKA / "quokka_depth_map_halfres.png"), cv2.IMREAD_UNCHANGED)
    assert raw is not None
    assert raw.shape == (321, 480) and depth.shape == (643, 960)
    assert depth[2 * 100 + 1, 2 * 200 + 1] == raw[100, 200] and np.array_equal(depth[642], depth[641])

    polygon = [v for p in data["polygons"][0]["keypoints"] for v in (p["x"], p["y"])]
    mask = mask_utils.decode(mask_utils.frPyObjects([polygon], height, width))[:, :, 0].astype(bool)
    names = [k["label"] for k in data["keypoints"]]
    keypoints = np.array([[k["x"], k["y"]] for k in data["keypoints"]], float)

    orientation = mask_orientation(mask)
    assert 60 < abs(orientation.angle_deg) <= 90  # a sitting quokka: a near-vertical body
    sides = configuration_check(orientation, keypoints, names).sides
    assert sides["ear_tip_left"] == sides["eye_left"] == -sides["ear_tip_right"] == -sides["eye_right"]

    report = depth_report(depth, mask, keypoints, names)
    under_mask = depth[mask & (depth > 0)]
    assert all(under_mask.min() <= v <= under_mask.max() for v in report.keypoints.values() if v is not None)
    assert report.mask_std > 0 and report.mask_pixels == int((mask & (depth > 0)).sum())
    text = format_report("animal", orientation, configuration_check(orientation, keypoints, names), report)
    assert "nose" in text and f"{report.mask_mean:.1f}" in text
