"""A tiny synthetic combined COCO dataset: the small-data path that shows the model learning on CPU.

Each image holds one red ellipse (``disc``, keypoints ``left``/``right`` at the ends of its major axis
and ``top``) and, from the second image on, a blue rectangle (``plate``, no keypoints), on a grey
background with mild noise. Discs are stored as polygons, plates as RLE, so both segmentation forms
and instances without keypoints are exercised. ``python -m multitask synthetic OUT`` writes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from combined_coco.geometry import polygons_bbox
from combined_coco.schema import Category, Schema

SCHEMA = Schema(
    categories=(Category(1, "disc", ("left", "right", "top")), Category(2, "plate", ())),
    keypoint_names=("left", "right", "top"),
    skeleton=((0, 2), (1, 2)),
    flip_pairs=((0, 1),),
)


def _ellipse(rng: np.random.Generator, size: int) -> tuple[list[float], list[float]]:
    """Polygon (flat, continuous coords) and keypoints (flat x, y, v) of a random axis-aligned ellipse."""
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    a, b = rng.uniform(0.18, 0.26) * size, rng.uniform(0.10, 0.15) * size
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    polygon = np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1).ravel().round(2).tolist()
    keypoints = [cx - a, cy, 2, cx + a, cy, 2, cx, cy - b, 2]
    return polygon, [round(float(v), 2) for v in keypoints]


def synthetic_coco(num_images: int = 4, size: int = 128, seed: int = 0) -> tuple[dict, list[np.ndarray]]:
    """The combined COCO dict and its RGB images (file names ``img_000.png`` ...)."""
    rng = np.random.default_rng(seed)
    images, annotations, pixels = [], [], []
    for i in range(num_images):
        canvas = np.full((size, size, 3), 128, np.uint8)
        canvas = np.clip(canvas + rng.normal(0, 6, canvas.shape), 0, 255).astype(np.uint8)
        polygon, keypoints = _ellipse(rng, size)
        pts = (np.asarray(polygon).reshape(-1, 2) - 0.5).round().astype(np.int32)
        cv2.fillPoly(canvas, [pts], (220, 40, 40))
        rle = mask_utils.frPyObjects([polygon], size, size)[0]
        # the box from the polygon, as the converter derives it (docs/FORMAT.md): one taken from the
        # rasterised mask lies up to half a pixel inside the polygon and fails validate
        bbox = polygons_bbox([polygon])
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"img_{i:03d}.png", "width": size, "height": size})
        annotations.append(_annotation(len(annotations) + 1, image_id, 1, [polygon], bbox, rle, keypoints))
        if i > 0:
            x0, y0 = int(rng.integers(2, size // 5)), int(rng.integers(2, size // 5))
            canvas[y0 : y0 + size // 8, x0 : x0 + size // 6] = (40, 60, 220)
            box_mask = np.zeros((size, size), np.uint8)
            box_mask[y0 : y0 + size // 8, x0 : x0 + size // 6] = 1
            box_rle = mask_utils.encode(np.asfortranarray(box_mask))
            counts = {"size": box_rle["size"], "counts": box_rle["counts"].decode()}
            box = [float(x0), float(y0), float(size // 6), float(size // 8)]
            annotations.append(_annotation(len(annotations) + 1, image_id, 2, counts, box, box_rle, [0.0] * 9))
        pixels.append(canvas)
    coco = {
        "info": {"description": "synthetic multitask sample", "keypoint_layout": "global"},
        "images": images,
        "categories": SCHEMA.to_coco_categories("global"),
        "annotations": annotations,
    }
    return coco, pixels


def _annotation(ann_id: int, image_id: int, category_id: int, segmentation: list | dict, bbox: list[float],
                rle: dict, keypoints: list[float]) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "segmentation": segmentation,
        "bbox": bbox,
        "area": float(mask_utils.area(rle)),
        "keypoints": keypoints,
        "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
    }


def write_synthetic_dataset(out_dir: str | Path, num_images: int = 4, size: int = 128, seed: int = 0) -> Path:
    """Write images and ``annotations.json`` into ``out_dir``; returns the json path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    coco, pixels = synthetic_coco(num_images, size, seed)
    for info, image in zip(coco["images"], pixels):
        cv2.imwrite(str(out / info["file_name"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    path = out / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


EXAMPLE = """example:
  python -m multitask synthetic data/synthetic --images 4 --size 128
  python -m multitask train --set dataset=data/synthetic/annotations.json --set min_size=128 \\
      --set max_size=128 --set steps=300 --set output_dir=runs/synthetic
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    print(write_synthetic_dataset(args.out_dir, args.images, args.size, args.seed))
