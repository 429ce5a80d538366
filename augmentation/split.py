"""Train/val split that keeps every copy of a source image on the same side.

Augmented copies of one photo are near-duplicates; letting them straddle the split would leak the
validation set into training. Images are grouped by ``source_image_id`` (written by augmentation;
an image without it is its own source) and whole groups are assigned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def split_by_source(coco: dict, val_fraction: float = 0.2, seed: int = 0) -> tuple[dict, dict]:
    """``(train, val)`` datasets; about ``val_fraction`` of the source images go to val (at least one
    when there are two or more sources and the fraction is positive)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    sources = sorted({im.get("source_image_id", im["id"]) for im in coco["images"]})
    n_val = round(len(sources) * val_fraction)
    if val_fraction > 0 and len(sources) > 1:
        n_val = max(n_val, 1)
    order = np.random.default_rng(seed).permutation(len(sources))
    val_sources = {sources[i] for i in order[:n_val]}

    def subset(in_val: bool) -> dict:
        images = [im for im in coco["images"] if (im.get("source_image_id", im["id"]) in val_sources) == in_val]
        ids = {im["id"] for im in images}
        return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}

    return subset(False), subset(True)


def split_file(coco_path: Path, val_fraction: float = 0.2, seed: int = 0) -> tuple[Path, Path]:
    """Write ``<stem>.train.json`` and ``<stem>.val.json`` beside ``coco_path``; returns their paths."""
    coco_path = Path(coco_path)
    train, val = split_by_source(json.loads(coco_path.read_text()), val_fraction, seed)
    paths = coco_path.with_suffix(".train.json"), coco_path.with_suffix(".val.json")
    for path, data in zip(paths, (train, val)):
        path.write_text(json.dumps(data, separators=(",", ":")))
    return paths
