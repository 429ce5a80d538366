"""Train/val split that keeps every image of one photo on the same side.

Augmented copies of one photo are near-duplicates; letting them straddle the split would leak the
validation set into training. The same holds for several image entries of one photo (two tasks on
one file, several Label Studio annotations of one task). Images are grouped by ``source_image_id``
(written by augmentation; an image without it is its own source) joined with the photo they show
(``source_file_name``, or ``file_name`` for an image that is not an augmented copy), and whole
groups are assigned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from combined_coco.dataset import read_combined_coco, write_json
from combined_coco.validate import is_augmented_copy


def photo_groups(images: list[dict]) -> list[int]:
    """Per image, the index of its group: images sharing a source image or a photo are one group."""
    parent = list(range(len(images)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple, int] = {}
    for i, im in enumerate(images):
        photo = im.get("source_file_name") or (None if is_augmented_copy(im) else im["file_name"])
        for key in (("source", im.get("source_image_id", im["id"])), ("photo", photo)):
            if key[1] is not None:
                parent[root(i)] = root(first.setdefault(key, i))
    return [root(i) for i in range(len(images))]


def split_by_source(coco: dict, val_fraction: float = 0.2, seed: int = 0) -> tuple[dict, dict]:
    """``(train, val)`` datasets; about ``val_fraction`` of the source images go to val (at least one
    when there are two or more sources and the fraction is positive)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = photo_groups(coco["images"])
    sources = sorted(set(groups))
    n_val = round(len(sources) * val_fraction)
    if val_fraction > 0 and len(sources) > 1:
        n_val = max(n_val, 1)
    order = np.random.default_rng(seed).permutation(len(sources))
    val_sources = {sources[i] for i in order[:n_val]}

    def subset(in_val: bool) -> dict:
        images = [im for im, group in zip(coco["images"], groups) if (group in val_sources) == in_val]
        ids = {im["id"] for im in images}
        return {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}

    return subset(False), subset(True)


def split_file(coco_path: Path, val_fraction: float = 0.2, seed: int = 0) -> tuple[Path, Path]:
    """Write ``<stem>.train.json`` and ``<stem>.val.json`` beside ``coco_path``; returns their paths."""
    coco_path = Path(coco_path)
    coco, _ = read_combined_coco(coco_path)
    train, val = split_by_source(coco, val_fraction, seed)
    paths = coco_path.with_suffix(".train.json"), coco_path.with_suffix(".val.json")
    for path, data in zip(paths, (train, val)):
        write_json(path, data)
    return paths
