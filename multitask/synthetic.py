"""Synthetic combined COCO datasets with known truth: the one generator of the project's demo, tests and benchmarks.

The sample (:func:`synthetic_coco`): a tiny dataset, the small-data path that shows the model learning on CPU.

Each image holds one red ellipse (``disc``, keypoints ``left``/``right`` at the ends of its major axis
and ``top``) and, from the second image on, a blue rectangle (``plate``, no keypoints), on a grey
background with mild noise. Discs are stored as polygons, plates as RLE, so both segmentation forms
and instances without keypoints are exercised. ``python -m multitask synthetic OUT`` writes it.

``scenes=True`` (``--scenes``) makes it a task a model has to learn rather than memorize, for the
retrain benchmark: :data:`SCENE_SCHEMA` adds upright triangles (``apex``, ``base_left``,
``base_right``), each image holds several objects of each class in jittered colours, on a textured
background (blurred blotches, a grating, noise) with unlabeled clutter (lines, rings, blobs).

:func:`write_parts_dataset`, for the augmentation fidelity tests and benchmark: textured star-shaped
parts (:data:`PARTS_SCHEMA`) placed anywhere, many touching or crossing the image border; some are
two-part instances (one object, two polygons), some are stored as RLE masks. Each part has four
keypoints, a left/right pair among them, so flips can be checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from combined_coco.dataset import rle_area_bbox, rle_encode, rle_text, write_json
from combined_coco.geometry import clean_polygons, polygons_area, polygons_bbox
from combined_coco.schema import Category, Schema

SCHEMA = Schema(
    categories=(Category(1, "disc", ("left", "right", "top")), Category(2, "plate", ())),
    keypoint_names=("left", "right", "top"),
    skeleton=((0, 2), (1, 2)),
    flip_pairs=((0, 1),),
)


SCENE_SCHEMA = Schema(
    categories=SCHEMA.categories + (Category(3, "triangle", ("apex", "base_left", "base_right")),),
    keypoint_names=SCHEMA.keypoint_names + ("apex", "base_left", "base_right"),
    skeleton=SCHEMA.skeleton + ((3, 4), (3, 5)),
    flip_pairs=SCHEMA.flip_pairs + ((4, 5),),
)

_PART_KEYPOINTS = ("left", "right", "centre", "tip")
PARTS_SCHEMA = Schema((Category(1, "part", _PART_KEYPOINTS),), _PART_KEYPOINTS, ((2, 3),), ((0, 1),))


def _ellipse(rng: np.random.Generator, size: int) -> tuple[list[float], list[float]]:
    """Polygon (flat, continuous coords) and keypoints (flat x, y, v) of a random axis-aligned ellipse."""
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    a, b = rng.uniform(0.18, 0.26) * size, rng.uniform(0.10, 0.15) * size
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    polygon = np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1).ravel().round(2).tolist()
    keypoints = [cx - a, cy, 2, cx + a, cy, 2, cx, cy - b, 2]
    return polygon, [round(float(v), 2) for v in keypoints]


def synthetic_coco(
    num_images: int = 4, size: int = 128, seed: int = 0, scenes: bool = False
) -> tuple[dict, list[np.ndarray]]:
    """The combined COCO dict and its RGB images (file names ``img_000.png`` ...)."""
    if scenes:
        return _scene_coco(num_images, size, seed)
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    pixels: list[np.ndarray] = []
    for i in range(num_images):
        canvas: np.ndarray = np.full((size, size, 3), 128, np.uint8)
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
            box_rle = rle_encode(box_mask)
            box = [float(x0), float(y0), float(size // 6), float(size // 8)]
            annotations.append(_annotation(len(annotations) + 1, image_id, 2, box_rle, box, box_rle, [0.0] * 9))
        pixels.append(canvas)
    return _dataset("synthetic multitask sample", SCHEMA, images, annotations), pixels


def _scene_coco(num_images: int, size: int, seed: int) -> tuple[dict, list[np.ndarray]]:
    """Several discs, plates and triangles per image on texture and clutter (all stored as polygons)."""
    rng = np.random.default_rng(seed)
    k = len(SCENE_SCHEMA.keypoint_names)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    pixels: list[np.ndarray] = []
    for i in range(num_images):
        canvas = _texture(rng, size)
        _clutter(rng, canvas)
        taken: list[tuple[float, float, float, float]] = []
        kinds = [1] * int(rng.integers(1, 3)) + [2] * int(rng.integers(1, 3)) + [3] * int(rng.integers(1, 3))
        for category_id in rng.permutation(kinds):
            placed = _place(rng, size, taken)
            if placed is None:  # the image is full
                continue
            cx, cy, r = placed
            keypoints = [0.0] * (3 * k)
            if category_id == 1:  # disc: axis-aligned ellipse, keypoints at the major axis ends and the top
                a, b = r, r * rng.uniform(0.5, 0.75)
                t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
                outline = np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1)
                keypoints[0:9] = [cx - a, cy, 2, cx + a, cy, 2, cx, cy - b, 2]
                color = (220, 40, 40)
            elif category_id == 2:  # plate: a rectangle, no keypoints
                w, h = r * rng.uniform(1.2, 1.8), r * rng.uniform(0.6, 1.0)
                outline = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                                    [cx - w / 2, cy + h / 2]])  # fmt: skip
                color = (40, 60, 220)
            else:  # triangle, apex up: base_left has the smaller x
                outline = np.array([[cx, cy - r], [cx - r * 0.9, cy + r * 0.7], [cx + r * 0.9, cy + r * 0.7]])
                keypoints[9:18] = [*outline[0], 2, *outline[1], 2, *outline[2], 2]
                color = (40, 170, 60)
            jitter = rng.integers(-35, 36, 3)
            fill = tuple(int(v) for v in np.clip(np.asarray(color) + jitter, 0, 255))
            cv2.fillPoly(canvas, [(outline - 0.5).round().astype(np.int32)], fill)
            polygon = outline.ravel().round(2).tolist()
            rle = mask_utils.frPyObjects([polygon], size, size)[0]
            bbox = polygons_bbox([polygon])  # the polygon's, not its pixels'
            kps = [round(float(v), 2) for v in keypoints]
            ann = _annotation(len(annotations) + 1, i + 1, int(category_id), [polygon], bbox, rle, kps)
            ann["area"] = polygons_area([polygon])
            annotations.append(ann)
        images.append({"id": i + 1, "file_name": f"img_{i:03d}.png", "width": size, "height": size})
        pixels.append(np.clip(canvas + rng.normal(0, 8, canvas.shape), 0, 255).astype(np.uint8))
    return _dataset("synthetic multitask scenes", SCENE_SCHEMA, images, annotations), pixels


def _dataset(description: str, schema: Schema, images: list[dict], annotations: list[dict]) -> dict:
    return {
        "info": {"description": description, "keypoint_layout": "global"},
        "images": images,
        "categories": schema.to_coco_categories("global"),
        "annotations": annotations,
    }


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blurred colour blotches plus a grating of random direction and period: no flat background to key on."""
    blotches = cv2.resize(
        rng.normal(0, 30, (max(2, size // 24),) * 2 + (3,)), (size, size), interpolation=cv2.INTER_CUBIC
    )
    yy, xx = np.mgrid[0:size, 0:size]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    grating = 12 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    base = rng.uniform(100, 160, 3)
    return np.clip(base + blotches + grating[..., None], 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Unlabeled lines, rings and blobs in random colours (some close to the objects' own)."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(6, 12))):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        kind = rng.integers(0, 3)
        if kind == 0:
            x2, y2 = (int(v) for v in rng.integers(0, size, 2))
            cv2.line(canvas, (x, y), (x2, y2), color, int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.circle(canvas, (x, y), int(rng.integers(4, size // 10)), color, int(rng.integers(1, 3)))
        else:
            cv2.ellipse(canvas, (x, y), (int(rng.integers(2, size // 16)), int(rng.integers(2, size // 16))),
                        float(rng.uniform(0, 180)), 0, 360, color, -1)  # fmt: skip


def _place(
    rng: np.random.Generator, size: int, taken: list[tuple[float, float, float, float]]
) -> tuple[float, float, float] | None:
    """Centre and radius of a new object whose box overlaps none of ``taken`` (boxes x1, y1, x2, y2)."""
    for _ in range(50):
        r = rng.uniform(0.08, 0.14) * size
        cx, cy = rng.uniform(r * 1.1, size - r * 1.1, 2)
        box = (cx - r * 1.0, cy - r * 1.0, cx + r * 1.0, cy + r * 1.0)
        if all(box[2] < t[0] or t[2] < box[0] or box[3] < t[1] or t[3] < box[1] for t in taken):
            taken.append(box)
            return float(cx), float(cy), float(r)
    return None


def _annotation(
    ann_id: int,
    image_id: int,
    category_id: int,
    segmentation: list | dict,
    bbox: list[float],
    rle: dict,
    keypoints: list[float],
) -> dict:
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


def write_synthetic_dataset(
    out_dir: str | Path, num_images: int = 4, size: int = 128, seed: int = 0, scenes: bool = False
) -> Path:
    """Write images and ``annotations.json`` into ``out_dir``; returns the json path."""
    out = Path(out_dir)
    return _write(*synthetic_coco(num_images, size, seed, scenes), out, out / "annotations.json")


def parts_coco(
    num_images: int, width: int = 1280, height: int = 720, n_objects: int = 8, seed: int = 0, suffix: str = ".png"
) -> tuple[dict, list[np.ndarray]]:
    """The parts dataset (module docstring) and its RGB images (file names ``synthetic_0001<suffix>`` ...)."""
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    pixels: list[np.ndarray] = []
    for i in range(1, num_images + 1):
        image, anns = _parts_image(rng, width, height, n_objects)
        images.append({"id": i, "file_name": f"synthetic_{i:04d}{suffix}", "width": width, "height": height})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i, **ann})
        pixels.append(image)
    return _dataset("synthetic", PARTS_SCHEMA, images, annotations), pixels


def write_parts_dataset(
    out_dir: Path,
    n_images: int,
    width: int = 1280,
    height: int = 720,
    n_objects: int = 8,
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write ``out_dir/images/synthetic_NNNN<suffix>`` and ``out_dir/coco.json``; returns the json path."""
    return _write(
        *parts_coco(n_images, width, height, n_objects, seed, suffix), out_dir / "images", out_dir / "coco.json"
    )


def _write(coco: dict, pixels: list[np.ndarray], image_dir: Path, path: Path) -> Path:
    """The RGB ``pixels`` as ``image_dir/<file_name>`` and ``coco`` as ``path``; returns ``path``."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for info, image in zip(coco["images"], pixels, strict=True):
        cv2.imwrite(str(image_dir / info["file_name"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return write_json(path, coco)


def _parts_image(rng: np.random.Generator, width: int, height: int, n_objects: int) -> tuple[np.ndarray, list[dict]]:
    """A textured RGB image of parts and their annotations (without ids)."""
    image = (rng.integers(0, 60, (height, width, 3))).astype(np.uint8)  # drawn in OpenCV's BGR order
    annotations = []
    for k in range(n_objects):
        radius = float(rng.uniform(0.06, 0.16) * min(width, height))
        # a third of the objects are centred within one radius of a border
        if k % 3 == 0:
            near_left = rng.random() < 0.5
            cx = float(
                rng.uniform(-0.3 * radius, radius) if near_left else rng.uniform(width - radius, width + 0.3 * radius)
            )
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
        ann: dict[str, Any] = {
            "category_id": 1,
            "iscrowd": 0,
            "keypoints": _part_keypoints(rng, cx, cy, radius, width, height),
        }
        if k % 5 == 2:  # stored as a brush mask
            area, bbox = rle_area_bbox(rle)
            ann.update(segmentation=rle_text(rle), area=area, bbox=bbox)
        else:
            ann.update(segmentation=polygons, area=polygons_area(polygons), bbox=polygons_bbox(polygons))
        ann["num_keypoints"] = sum(1 for v in ann["keypoints"][2::3] if v > 0)
        annotations.append(ann)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), annotations


def _star(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    n = int(rng.integers(10, 20))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.0, n)
    return np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]


def _part_keypoints(rng: np.random.Generator, cx: float, cy: float, radius: float, w: int, h: int) -> list[float]:
    """left/right are left/right of the object's centre *in the object's own frame* (x- / x+)."""
    r = 0.4 * radius
    pts = [(cx - r, cy), (cx + r, cy), (cx, cy), (cx, cy - r)]
    out: list[float] = []
    for x, y in pts:
        inside = 0 <= x < w and 0 <= y < h and rng.random() > 0.1
        out += [float(x), float(y), 2.0] if inside else [0.0, 0.0, 0.0]
    return out


EXAMPLE = """example:
  python -m multitask synthetic data/synthetic --images 4 --size 128
  python -m multitask synthetic data/scenes --images 25 --size 256 --scenes   # 3 classes, texture, clutter
  python -m multitask train --set dataset=data/synthetic/annotations.json --set min_size=128 \\
      --set max_size=128 --set steps=300 --set output_dir=runs/synthetic
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenes", action="store_true", help="several objects of 3 classes on texture and clutter")


def run(args: argparse.Namespace) -> None:
    print(write_synthetic_dataset(args.out_dir, args.images, args.size, args.seed, args.scenes))
