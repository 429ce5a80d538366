"""Paper section IV.C: object orientation, configuration check and depth, from one mask and its keypoints.

- **Orientation**: the principal axis of the mask from its second-order central moments,
  ``angle = 0.5 * atan2(2 mu11, mu20 - mu02)``. Image coordinates (x right, y *down*), so a positive
  angle turns from +x towards +y, i.e. clockwise on screen; range (-90, 90] degrees (an axis, not a
  direction). Centroid in COCO continuous coordinates (pixel centres at +0.5).
- **Configuration check**: for each keypoint p, the sign of the 2-D cross product
  ``axis x (p - centroid)`` says on which side of the principal axis it lies. The one keypoint whose
  sign differs from all others marks the object's outer side (e.g. the part that sticks out); if no
  single keypoint stands out, the configuration is reported as ambiguous.
- **Depth**: from a depth image aligned with the photo: one value per keypoint (the pixel containing
  it) against the mean and spread over the mask, printed side by side. Zero depth is "no
  measurement" for most sensors and is left out of the mask statistics and reported as missing.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from combined_coco.dataset import decode_segmentation, keypoint_array, read_combined_coco, rle_decode
from combined_coco.images import read_depth_image


@dataclass(frozen=True)
class Orientation:
    centroid: tuple[float, float]  # x, y (continuous coordinates)
    angle_deg: float  # principal axis, (-90, 90], clockwise on screen from +x
    axis: tuple[float, float]  # unit vector along the principal axis
    elongation: float  # sqrt(major / minor eigenvalue); ~1 means the angle is ill-defined


@dataclass(frozen=True)
class ConfigurationCheck:
    sides: dict[str, int]  # keypoint name -> +1 / -1 / 0 (on the axis)
    outer: str | None  # the keypoint whose side differs from all others, None if ambiguous


@dataclass(frozen=True)
class DepthReport:
    keypoints: dict[str, float | None]  # name -> depth at the keypoint (None: outside image / no data)
    mask_mean: float
    mask_std: float
    mask_pixels: int


def mask_orientation(mask: np.ndarray) -> Orientation:
    """Principal axis of a bool/0-1 mask from its central moments."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 2:
        raise ValueError("the mask needs at least two pixels to have an orientation")
    x, y = cols + 0.5, rows + 0.5
    cx, cy = x.mean(), y.mean()
    mu20, mu02, mu11 = ((x - cx) ** 2).mean(), ((y - cy) ** 2).mean(), ((x - cx) * (y - cy)).mean()
    theta = 0.5 * math.atan2(2 * mu11, mu20 - mu02)
    spread = math.hypot(2 * mu11, mu20 - mu02) / 2
    major, minor = (mu20 + mu02) / 2 + spread, (mu20 + mu02) / 2 - spread
    angle = math.degrees(theta)
    if angle <= -90 + 1e-6:  # an axis: -90 and 90 are the same one
        angle += 180
    return Orientation(
        (float(cx), float(cy)),
        angle,
        (math.cos(theta), math.sin(theta)),
        math.sqrt(major / minor) if minor > 0 else math.inf,
    )


def configuration_check(orientation: Orientation, keypoints: np.ndarray, names: Sequence[str]) -> ConfigurationCheck:
    """Side of the principal axis of each keypoint ([n,2] x, y) and the odd one out, if exactly one."""
    ax, ay = orientation.axis
    cx, cy = orientation.centroid
    cross = ax * (keypoints[:, 1] - cy) - ay * (keypoints[:, 0] - cx)
    sides = {name: int(np.sign(round(float(c), 6))) for name, c in zip(names, cross)}
    outer = None
    nonzero = [(n, s) for n, s in sides.items() if s != 0]
    for sign in (1, -1):
        odd = [n for n, s in nonzero if s == sign]
        if len(odd) == 1 and len(nonzero) >= 3:
            outer = odd[0]
    return ConfigurationCheck(sides, outer)


def depth_report(depth: np.ndarray, mask: np.ndarray, keypoints: np.ndarray, names: Sequence[str]) -> DepthReport:
    """Depth at each keypoint ([n,2] continuous x, y: the pixel ``floor(x), floor(y)``) and over the mask."""
    height, width = depth.shape[:2]
    values: dict[str, float | None] = {}
    for name, (x, y) in zip(names, keypoints[:, :2]):
        col, row = int(math.floor(x)), int(math.floor(y))
        inside = 0 <= col < width and 0 <= row < height
        values[name] = float(depth[row, col]) if inside and depth[row, col] > 0 else None
    region = depth[mask.astype(bool) & (depth > 0)].astype(np.float64)
    if region.size == 0:
        raise ValueError("no depth measurement under the mask")
    return DepthReport(values, float(region.mean()), float(region.std()), int(region.size))


def load_aligned_depth(path: str | Path, height: int, width: int) -> np.ndarray:
    """A depth image upsampled by the integer factor to the photo and cut/padded to ``height x width``.

    Nearest-neighbour repetition keeps measured values (interpolation would invent depths across
    object edges). A half-resolution map of an odd-sized photo (quokka: 480x321 for 960x643) is one
    row short after x2; the last row is repeated.
    """
    depth = read_depth_image(path)
    factor_y, factor_x = round(height / depth.shape[0]), round(width / depth.shape[1])
    up = np.repeat(np.repeat(depth, factor_y, axis=0), factor_x, axis=1)[:height, :width]
    return np.pad(up, ((0, height - up.shape[0]), (0, width - up.shape[1])), mode="edge")


def format_report(label: str, orientation: Orientation, check: ConfigurationCheck, depth: DepthReport | None) -> str:
    lines = [
        f"{label}: centroid ({orientation.centroid[0]:.1f}, {orientation.centroid[1]:.1f}),"
        f" principal axis {orientation.angle_deg:.1f} deg (clockwise from +x), elongation {orientation.elongation:.2f}",
        f"  outer side marked by: {check.outer or 'ambiguous (no single keypoint on its own side)'}",
        f"  {'keypoint':<16} {'side':>4} {'depth':>8}   mask depth",
    ]
    for i, (name, side) in enumerate(check.sides.items()):
        value = "" if depth is None else "n/a" if depth.keypoints[name] is None else f"{depth.keypoints[name]:.1f}"
        mask_text = ""
        if depth is not None and i == 0:
            mask_text = f"mean {depth.mask_mean:.1f} +- {depth.mask_std:.1f} ({depth.mask_pixels} px)"
        lines.append(f"  {name:<16} {side:>+4d} {value:>8}   {mask_text}")
    return "\n".join(lines)


# (label, mask, present keypoints [n,2], their names) per object, and the image (height, width)
AnalysisInput = tuple[list[tuple[str, np.ndarray, np.ndarray, list[str]]], tuple[int, int]]


def _objects_from_predictions(data: dict, index: int) -> AnalysisInput:
    names = data["keypoint_names"]
    image = data["images"][index]
    objects = []
    for inst in image["instances"]:
        kp = np.asarray(inst["keypoints"], float).reshape(-1, 3)
        present = np.asarray(inst["keypoint_present"], bool)
        mask = rle_decode(inst["mask_rle"])
        objects.append((inst["label"], mask, kp[present, :2], [n for n, p in zip(names, present) if p]))
    return objects, (image["height"], image["width"])


def _objects_from_coco(path: Path, image_id: int) -> AnalysisInput:
    coco, schema = read_combined_coco(path)
    info = next(im for im in coco["images"] if im["id"] == image_id)
    objects = []
    for ann in (a for a in coco["annotations"] if a["image_id"] == image_id and not a.get("iscrowd")):
        kp = keypoint_array(ann, schema.num_keypoints)
        present = kp[:, 2] > 0
        mask = decode_segmentation(ann["segmentation"], info["height"], info["width"])
        label = schema.category_by_id(ann["category_id"]).name
        objects.append((label, mask, kp[present, :2], [n for n, p in zip(schema.keypoint_names, present) if p]))
    return objects, (info["height"], info["width"])


EXAMPLE = """example:
  python -m multitask predict --checkpoint last.pt photo.jpg --out preds.json
  python -m multitask analyze --predictions preds.json --depth depth.png
  python -m multitask analyze --coco annotations.json --image-id 1 --depth depth_halfres.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="output of `python -m multitask predict`")
    source.add_argument("--coco", type=Path, help="a combined COCO file (analyze ground truth)")
    parser.add_argument("--image-index", type=int, default=0, help="with --predictions: which image (default 0)")
    parser.add_argument("--image-id", type=int, default=1, help="with --coco: which image id (default 1)")
    parser.add_argument("--depth", type=Path, help="depth image aligned with the photo (any integer downscale)")


def run(args: argparse.Namespace) -> None:
    if args.predictions:
        objects, (height, width) = _objects_from_predictions(json.loads(args.predictions.read_text()), args.image_index)
    else:
        objects, (height, width) = _objects_from_coco(args.coco, args.image_id)
    depth = load_aligned_depth(args.depth, height, width) if args.depth else None
    for label, mask, keypoints, names in objects:
        if mask.sum() < 2:
            print(f"{label}: mask has fewer than 2 pixels, no orientation")
            continue
        orientation = mask_orientation(mask)
        check = configuration_check(orientation, keypoints, names)
        report = depth_report(depth, mask, keypoints, names) if depth is not None else None
        print(format_report(label, orientation, check, report))
