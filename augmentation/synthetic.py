"""Synthetic combined COCO datasets with known truth, for the fidelity tests and the benchmark.

Objects are textured star-shaped parts placed anywhere, many touching or crossing the image border;
some are two-part instances (one object, two polygons), some are stored as RLE masks. Each object
has four keypoints, a left/right pair among them, so flips can be checked.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from combined_coco.dataset import rle_area_bbox, rle_text, write_json
from combined_coco.geometry import clean_polygons, polygons_area, polygons_bbox
from combined_coco.schema import Category, Schema

KEYPOINTS = ("left", "right", "centre", "tip")
SCHEMA = Schema((Category(1, "part", KEYPOINTS),), KEYPOINTS, ((2, 3),), ((0, 1),))


def _star(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    n = int(rng.integers(10, 20))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.0, n)
    return np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]


def _keypoints(rng: np.random.Generator, cx: float, cy: float, radius: float, w: int, h: int) -> list[float]:
    """left/right are left/right of the object's centre *in the object's own frame* (x- / x+)."""
    r = 0.4 * radius
    pts = [(cx - r, cy), (cx + r, cy), (cx, cy), (cx, cy - r)]
    out: list[float] = []
    for x, y in pts:
        inside = 0 <= x < w and 0 <= y < h and rng.random() > 0.1
        out += [float(x), float(y), 2.0] if inside else [0.0, 0.0, 0.0]
    return out


def make_image(
    rng: np.random.Generator, width: int, height: int, n_objects: int
) -> tuple[np.ndarray, list[dict]]:
    """A textured image and its annotations (without ids)."""
    image = (rng.integers(0, 60, (height, width, 3))).astype(np.uint8)
    annotations = []
    for k in range(n_objects):
        radius = float(rng.uniform(0.06, 0.16) * min(width, height))
        # a third of the objects are centred within one radius of a border
        if k % 3 == 0:
            near_left = rng.random() < 0.5
            cx = float(rng.uniform(-0.3 * radius, radius) if near_left else rng.uniform(width - radius, width + 0.3 * radius))
            cy = float(rng.uniform(0, height))
        else:
            cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        parts = [_star(rng, cx, cy, radius)]
        if k % 4 == 1:  # two-part object: a second blob beside the first
            parts.append(_star(rng, cx + 1.6 * radius, cy, 0.5 * radius))
        polygons = clean_polygons([p.ravel().tolist() for p in parts], width, height, min_area=4.0).polygons
        if not polygons:
            continue
        colour = rng.integers(80, 255, 3).tolist()
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        mask = mask_utils.decode(rle).astype(bool)
        texture = rng.integers(-25, 25, (height, width, 1))
        image[mask] = np.clip(np.array(colour) + texture[mask], 0, 255).astype(np.uint8)
        ann = {"category_id": 1, "iscrowd": 0, "keypoints": _keypoints(rng, cx, cy, radius, width, height)}
        if k % 5 == 2:  # stored as a brush mask
            area, bbox = rle_area_bbox(rle)
            ann.update(segmentation=rle_text(rle), area=area, bbox=bbox)
        else:
            ann.update(segmentation=polygons, area=polygons_area(polygons), bbox=polygons_bbox(polygons))
        ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
        annotations.append(ann)
    return image, annotations


def make_dataset(
    out_dir: Path,
    n_images: int,
    width: int = 1280,
    height: int = 720,
    n_objects: int = 8,
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write ``out_dir/images/synthetic_NNNN<suffix>`` and ``out_dir/coco.json``; returns the json path."""
    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(1, n_images + 1):
        image, anns = make_image(rng, width, height, n_objects)
        name = f"synthetic_{i:04d}{suffix}"
        cv2.imwrite(str(out_dir / "images" / name), image)
        images.append({"id": i, "file_name": name, "width": width, "height": height})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i, **ann})
    coco = {
        "info": {"description": "synthetic", "keypoint_layout": "global"},
        "images": images,
        "categories": SCHEMA.to_coco_categories("global"),
        "annotations": annotations,
    }
    return write_json(out_dir / "coco.json", coco)
