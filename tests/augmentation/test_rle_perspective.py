"""RLE instances after a perspective step are kept or dropped exactly like the same objects as polygons.

The share of an object left in the frame used to be measured against ``det`` of the matrix's 2x2
part, which is not the area scale of a projective map (it varies across the image): RLE objects
still showing a tenth of their area were dropped while their polygon twins were kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from augmentation.albumentations_steps import augment_sample
from augmentation.geometry_transform import InstanceGeometry, warped_area
from augmentation.pipelines import build_pipeline
from combined_coco.geometry import polygons_area
from multitask.synthetic import write_parts_dataset
from tests.augmentation.truth import rasterize


def _as_rle(polygons: list, height: int, width: int) -> dict:
    return mask_utils.encode(np.asfortranarray(rasterize(polygons, height, width).astype(np.uint8)))


def test_polygon_and_rle_twins_agree_after_perspective(tmp_path: Path) -> None:
    coco = json.loads(write_parts_dataset(tmp_path, n_images=2, width=320, height=240, n_objects=8).read_text())
    compose = build_pipeline(A.to_dict(A.Compose([A.Perspective(scale=(0.1, 0.15), border_mode=0, p=1)])))
    compared, kept = 0, 0
    for im in coco["images"]:
        h, w = im["height"], im["width"]
        image = np.zeros((h, w, 3), np.uint8)
        polygons = [
            a["segmentation"]
            for a in coco["annotations"]
            if a["image_id"] == im["id"] and isinstance(a["segmentation"], list)
        ]
        as_polygons = [InstanceGeometry(p, None, [], []) for p in polygons]
        as_rle = [InstanceGeometry([], _as_rle(p, h, w), [], []) for p in polygons]
        for seed in range(40):
            by_polygon = augment_sample(compose, image, as_polygons, seed).instances
            by_mask = augment_sample(compose, image, as_rle, seed).instances
            for poly, rle in zip(by_polygon, by_mask):
                compared += 1
                assert (poly is None) == (rle is None), (im["id"], seed)
                if poly is not None and rle is not None:
                    kept += 1
                    assert rle.area == pytest.approx(poly.area, rel=0.1, abs=20)
    assert compared == 40 * sum(1 for a in coco["annotations"] if isinstance(a["segmentation"], list)) and kept > 0


def test_warped_area_follows_the_local_scale_of_a_projective_map() -> None:
    """A 40x40 square far along a perspective map's x axis shrinks to ~1/40 of its area, while
    ``det`` of the 2x2 part says it keeps all of it."""
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.02, 0.0, 1.0]])
    square = [[100.0, 0.0, 140.0, 0.0, 140.0, 40.0, 100.0, 40.0]]
    pts = np.reshape(square, (-1, 2))
    mapped = np.c_[pts, np.ones(4)] @ m.T
    truth = polygons_area([(mapped[:, :2] / mapped[:, 2:]).ravel().tolist()])
    mask = rasterize(square, 60, 200).astype(np.uint8)
    assert warped_area((mask, 0, 0), m) == pytest.approx(truth, rel=0.01)
    assert abs(np.linalg.det(m[:2, :2])) * mask.sum() > 20 * truth
