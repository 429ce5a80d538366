"""What a run was taught, recorded in its checkpoint under ``taught`` for the predictor of either engine.

- **Keypoints labelled per category**: how many of a category's objects had each keypoint labelled
  (``v > 0``). A keypoint head still answers for a keypoint nobody ever placed on that category (its
  heatmap peaks somewhere, often at 0.99); the predictor never emits such a keypoint for it.
- **Keypoint thresholds**: for each keypoint, the heatmap logit that best separates points the
  annotators labelled from points they left out, calibrated on the run's own training images
  (:func:`separating_threshold`). ``KEYPOINT_THRESHOLD`` overrides them all.
- **Polygon vertices**: the median vertex count of each label's labelled polygons, so a predicted
  outline gets about the clicks a person gives that label (``backend.regions``).

Counts come from the training file's original images: an augmentation copy (``aug_copy > 0``,
:mod:`augmentation.dataset_augment`) repeats its photo's labels and clips polygons at the frame, which
adds vertices nobody clicked. When a file holds copies only (``keep_originals: false``) every image
counts, and ``source`` says so.

Checkpoints written before this have no ``taught``: their predictor emits every keypoint of the
category (with ``KEYPOINT_THRESHOLD`` if set), and outlines are simplified by size alone.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from combined_coco.dataset import keypoint_array, read_combined_coco
from combined_coco.schema import Schema

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 64  # training images predicted for calibration: enough points, bounded time
MATCH_IOU = 0.5  # a detection stands for a labelled object when their boxes overlap this much


@dataclass(frozen=True)
class Taught:
    """The ``taught`` entry of a checkpoint (plain values: JSON for ``meta.json``, ``weights_only`` loads)."""

    objects: dict[str, int]  # category -> labelled objects
    keypoints_labelled: dict[str, dict[str, int]]  # category -> keypoint -> objects with it labelled
    polygon_vertices: dict[str, float]  # category -> median vertex count of its labelled polygons
    keypoint_thresholds: dict[str, float | None]  # keypoint -> heatmap logit (None: emit whatever the score)
    calibration: dict[str, int] = field(default_factory=dict)  # images, objects matched, points per side
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Taught | None:
        """None for a checkpoint without the entry (written before it existed) or with a damaged one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                objects={str(k): int(v) for k, v in data["objects"].items()},
                keypoints_labelled={
                    str(c): {str(k): int(n) for k, n in counts.items()}
                    for c, counts in data["keypoints_labelled"].items()
                },
                polygon_vertices={str(k): float(v) for k, v in data["polygon_vertices"].items()},
                keypoint_thresholds={
                    str(k): None if v is None else float(v) for k, v in data["keypoint_thresholds"].items()
                },
                calibration={str(k): int(v) for k, v in data.get("calibration", {}).items()},
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("checkpoint's 'taught' entry is damaged; predicting as for a checkpoint without it")
            return None

    def labelled(self, schema: Schema) -> np.ndarray:
        """[max category id + 1, K] bool: keypoint k was labelled at least once on category c."""
        names = schema.keypoint_names
        table = np.zeros((max((c.id for c in schema.categories), default=0) + 1, len(names)), bool)
        for category in schema.categories:
            counts = self.keypoints_labelled.get(category.name, {})
            table[category.id] = [counts.get(name, 0) > 0 for name in names]
        return table

    def thresholds(self, schema: Schema) -> np.ndarray:
        """[K] heatmap logits a keypoint must reach; -inf where the run set none."""
        values = [self.keypoint_thresholds.get(name) for name in schema.keypoint_names]
        return np.array([-np.inf if v is None else v for v in values], dtype=np.float64)


def training_images(coco: dict) -> tuple[dict, str]:
    """The file restricted to its original images (no augmentation copies), and a note of which it used."""
    images = coco["images"]
    originals = [im for im in images if int(im.get("aug_copy", 0)) == 0]
    copies = len(images) - len(originals)
    if not originals:
        return coco, f"all {len(images)} images (augmentation copies only, no originals kept)"
    ids = {im["id"] for im in originals}
    kept = {**coco, "images": originals, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    note = f"{len(originals)} original images" + (f" (before {copies} augmentation copies)" if copies else "")
    return kept, note


def count_labels(coco: dict, schema: Schema) -> tuple[dict[str, int], dict[str, dict[str, int]], dict[str, float]]:
    """Objects per category, keypoints labelled (``v > 0``) per category, and the median vertex count of
    each category's polygons (categories without polygons left out). ``coco`` in the global layout."""
    names = schema.keypoint_names
    objects = {c.name: 0 for c in schema.categories}
    labelled = {c.name: dict.fromkeys(c.keypoints, 0) for c in schema.categories}
    vertices: dict[str, list[int]] = {c.name: [] for c in schema.categories}
    for ann in coco["annotations"]:
        category = schema.category_by_id(ann["category_id"]).name
        objects[category] += 1
        visible = keypoint_array(ann, len(names))[:, 2] > 0
        for k in np.flatnonzero(visible):
            labelled[category][names[k]] = labelled[category].get(names[k], 0) + 1
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):
            vertices[category].extend(len(p) // 2 for p in segmentation if len(p) >= 6)
    medians = {name: float(statistics.median(counts)) for name, counts in vertices.items() if counts}
    return objects, labelled, medians


def separating_threshold(labelled: Sequence[float], unlabelled: Sequence[float]) -> float | None:
    """The score that best tells points annotators labelled from points they left out (balanced accuracy:
    the mean of the shares of each side on its correct side of the threshold).

    Candidates lie halfway between neighbouring distinct scores; among equally good ones the middle one
    is taken, so one more point does not flip it. No unlabelled points: None (every point of this
    keypoint was labelled, so none is held back). No labelled points: just above the highest unlabelled
    score (the run never saw this point wanted on a detected object).
    """
    pos = np.sort(np.asarray(labelled, dtype=np.float64))
    neg = np.sort(np.asarray(unlabelled, dtype=np.float64))
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if len(neg) == 0:
        return None
    if len(pos) == 0:
        return float(np.nextafter(neg[-1], np.inf))
    scores = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[scores[0] - 1.0], (scores[:-1] + scores[1:]) / 2, [scores[-1] + 1.0]])
    kept = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)  # labelled at or above
    dropped = np.searchsorted(neg, candidates, side="left") / len(neg)  # unlabelled below
    balanced = (kept + dropped) / 2
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(candidates[best[len(best) // 2]])


def keypoint_scores(
    predictions: Sequence[Sequence[Any]], truths: Sequence[Sequence[dict]], schema: Schema
) -> tuple[dict[str, tuple[list[float], list[float]]], int]:
    """Per keypoint, the scores of predicted points whose matched truth object had it labelled and of those
    where the object's category has it but the annotator left it out; and how many objects matched.

    ``predictions``: per image, instances with ``category_id``, ``score``, ``box`` (x1, y1, x2, y2) and
    ``keypoints`` [K, 3]; ``truths``: per image, its annotations (global layout). Each truth object takes
    the best-scoring unmatched detection of its category whose box overlaps it by :data:`MATCH_IOU`.
    """
    names = schema.keypoint_names
    sides: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    matched = 0
    for instances, image_truths in zip(predictions, truths, strict=True):
        taken: set[int] = set()
        order = sorted(range(len(instances)), key=lambda i: -float(instances[i].score))
        for ann in image_truths:
            x, y, w, h = ann["bbox"]
            best = next(
                (
                    i
                    for i in order
                    if i not in taken
                    and instances[i].category_id == ann["category_id"]
                    and _box_iou(instances[i].box, (x, y, x + w, y + h)) >= MATCH_IOU
                ),
                None,
            )
            if best is None:
                continue
            taken.add(best)
            matched += 1
            truth = keypoint_array(ann, len(names))
            applicable = schema.category_by_id(ann["category_id"]).keypoints
            for k, name in enumerate(names):
                if name in applicable:
                    sides[name][0 if truth[k, 2] > 0 else 1].append(float(instances[best].keypoints[k, 2]))
    return sides, matched


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def record(checkpoint: str | Path, dataset: str | Path, image_root: str | Path | None, device: str = "cpu") -> Taught:
    """Count what ``dataset`` taught, calibrate the keypoint thresholds on its images with ``checkpoint``'s
    model, and store the result in the checkpoint (rewritten atomically). Called by each engine's ``train``."""
    from combined_coco.images import read_image
    from multitask import defaults, engines
    from multitask.checkpoint import read_payload, save_payload

    full, schema = read_combined_coco(dataset)
    coco, source = training_images(full)
    objects, labelled, medians = count_labels(coco, schema)
    root = Path(image_root) if image_root else Path(dataset).parent
    images = sorted(coco["images"], key=lambda im: im["id"])[:CALIBRATION_IMAGES]
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
    for ann in coco["annotations"]:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    thresholds: dict[str, float | None] = dict.fromkeys(schema.keypoint_names)
    calibration = {"images": len(images), "objects_matched": 0}
    if schema.num_keypoints and images:
        predictor = engines.load_predictor(
            checkpoint, device=device, score_threshold=defaults.BOX_SCORE_FLOOR, max_detections=2 * _most(by_image)
        )
        predictions = [predictor.predict([read_image(root / im["file_name"])])[0] for im in images]
        sides, calibration["objects_matched"] = keypoint_scores(predictions, list(by_image.values()), schema)
        for name, (pos, neg) in sides.items():
            thresholds[name] = separating_threshold(pos, neg)
        calibration["labelled_points"] = sum(len(pos) for pos, _ in sides.values())
        calibration["unlabelled_points"] = sum(len(neg) for _, neg in sides.values())
    taught = Taught(objects, labelled, medians, thresholds, calibration, source)
    payload = read_payload(checkpoint)
    payload["taught"] = taught.to_dict()
    save_payload(payload, checkpoint)
    log.info("recorded what the run was taught (%s): %s", source, taught.calibration)
    return taught


def _most(by_image: Mapping[int, Sequence[dict]]) -> int:
    """The most objects on one image (at least 1): detections beyond twice that cannot all be matched."""
    return max(1, max((len(v) for v in by_image.values()), default=1))
