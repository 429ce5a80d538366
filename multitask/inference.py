"""Inference API used by the ML backend: images in, :class:`DetectedInstance` lists out.

Polygons trace the outer boundary of each mask's pixels (COCO continuous coordinates, docs/FORMAT.md):
:func:`combined_coco.geometry.mask_to_polygons`.

Keypoint scores are the keypoint head's heatmap logits (torchvision's ``keypoints_scores``), not
probabilities. A keypoint is *present* only if it applies to the predicted category
(``schema.categories[i].keypoints``), was labelled on that category at least once in the run's training
data, and its score reaches ``keypoint_threshold`` when set, else the run's calibrated threshold for that
keypoint (:mod:`multitask.taught`; a checkpoint without those keeps every applicable keypoint).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from combined_coco.dataset import rle_encode
from combined_coco.geometry import mask_to_polygons, suppress_overlaps
from combined_coco.images import read_image
from combined_coco.schema import Schema
from multitask import defaults
from multitask.checkpoint import load_checkpoint
from multitask.taught import Taught


@dataclass
class DetectedInstance:
    """One detected object in pixel coordinates of the input image."""

    category_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    mask: np.ndarray  # bool [H, W]
    polygons: list[list[float]]  # flat [x1, y1, x2, y2, ...] per outer contour
    keypoints: np.ndarray  # [K, 3] float: x, y, score
    keypoint_present: np.ndarray  # [K] bool


class Detections(list):
    """The instances of one image (a plain list) plus ``candidates``: how many detections the model had
    before ``score_threshold`` (down to :data:`multitask.defaults.BOX_SCORE_FLOOR`, after NMS and the per-image cap).

    An empty list with ``candidates > 0`` means "the model saw objects but was not sure enough", which
    tells the user to train longer or lower the threshold rather than to look for a bug.
    """

    def __init__(self, instances: Sequence[DetectedInstance] = (), candidates: int = 0) -> None:
        super().__init__(instances)
        self.candidates = candidates


class InstanceMaker:
    """One detection (in input-image pixels) -> :class:`DetectedInstance`, by the rules every engine's predictor
    shares: the label from the schema, polygons from the mask, and keypoints present only where the
    category has them and was taught them (``taught``), and where their score reaches ``keypoint_threshold``
    or, without it, the run's calibrated threshold per keypoint."""

    def __init__(
        self,
        schema: Schema,
        keypoint_threshold: float | None = None,
        polygon_tolerance: float = 0.5,
        taught: Taught | None = None,
    ):
        self.schema = schema
        self.keypoint_threshold = keypoint_threshold
        self.polygon_tolerance = polygon_tolerance
        names = schema.keypoint_names
        # [max category id + 1, K]: row c says which keypoints category c has (row 0 = background, none).
        self._applicable = np.zeros((max((c.id for c in schema.categories), default=0) + 1, len(names)), bool)
        for category in schema.categories:
            self._applicable[category.id, [names.index(n) for n in category.keypoints]] = True
        self._thresholds = np.full(len(names), -np.inf if keypoint_threshold is None else keypoint_threshold)
        if taught is not None:
            self._applicable &= taught.labelled(schema)
            if keypoint_threshold is None:
                self._thresholds = taught.thresholds(schema)

    def __call__(
        self, category_id: int, score: float, box: Sequence[float], mask: np.ndarray, keypoints: np.ndarray
    ) -> DetectedInstance:
        """``mask``: bool [H, W]; ``keypoints``: [K, 3] x, y, score in COCO coordinates."""
        present = self._applicable[category_id] & (keypoints[:, 2] >= self._thresholds)
        x1, y1, x2, y2 = (float(v) for v in box)
        return DetectedInstance(
            category_id=category_id,
            label=self.schema.category_by_id(category_id).name,
            score=float(score),
            box=(x1, y1, x2, y2),
            mask=mask,
            # 0.01 px is far below a pixel and keeps predictions and ``predict --out`` compact
            polygons=[[round(v, 2) for v in p] for p in mask_to_polygons(mask, self.polygon_tolerance)],
            keypoints=keypoints.astype(np.float32),
            keypoint_present=present,
        )


def distinct_masks(
    labels: Sequence[int], scores: Sequence[float], masks: Sequence[np.ndarray], max_iou: float | None
) -> list[int]:
    """Indices (ascending) of the detections to keep after mask NMS: greedily by score, a detection is dropped
    when its mask overlaps a kept one of the same label by a mask IoU above ``max_iou`` (None: keep all;
    :func:`combined_coco.geometry.suppress_overlaps`).

    The model's own NMS compares boxes, so two detections of one object whose boxes differ (one box around
    a part, one around the whole) both survive it, and an annotator gets a duplicate polygon to delete
    with everything nested under it. Masks are compared on the crop where both bounding boxes overlap, so
    a full-image mask per detection costs only its own extent.
    """
    if max_iou is None:
        return list(range(len(masks)))
    extents = [_extent(mask) for mask in masks]
    areas = [int(mask.sum()) for mask in masks]

    def iou(i: int, j: int) -> float:
        return _mask_iou(masks[i], masks[j], extents[i], extents[j], areas[i] + areas[j])

    return suppress_overlaps(labels, scores, iou, max_iou)


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Rows and columns ``(y1, y2, x1, x2)`` (end exclusive) that hold the mask's pixels; None when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _mask_iou(
    a: np.ndarray, b: np.ndarray, ea: tuple[int, int, int, int] | None, eb: tuple[int, int, int, int] | None, total: int
) -> float:
    if ea is None or eb is None:
        return 0.0
    y1, y2, x1, x2 = max(ea[0], eb[0]), min(ea[1], eb[1]), max(ea[2], eb[2]), min(ea[3], eb[3])
    if y1 >= y2 or x1 >= x2:
        return 0.0
    inter = int(np.logical_and(a[y1:y2, x1:x2], b[y1:y2, x1:x2]).sum())
    return inter / (total - inter)


def check_rgb_image(image: np.ndarray) -> None:
    """ValueError unless ``image`` is what predictors take: HxWx3 uint8 RGB."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")


class TorchvisionPredictor:
    """A trained multi-task model with its schema, ready for batched prediction.

    ``score_threshold`` drops low-scoring detections; ``mask_threshold`` binarizes the mask
    probabilities; ``keypoint_threshold`` (logit, optional) additionally requires a keypoint score,
    over the run's calibrated ones (``taught``, see :mod:`multitask.taught`); ``polygon_tolerance`` is
    the contour simplification in pixels; ``max_detections`` caps the objects per image; ``mask_nms_iou``
    drops same-label detections whose masks overlap a higher-scoring one by more than this IoU
    (:func:`distinct_masks`; None: off).

    Both limits are applied inside torchvision's RoIHeads (before NMS and before the mask and
    keypoint heads), not after: on CPU the per-detection heads are most of a request, and detections
    under the threshold could never be returned anyway. Same objects, about 5x faster.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        schema: Schema,
        model_version: str,
        device: str | torch.device = "cpu",
        score_threshold: float = defaults.SCORE_THRESHOLD,
        mask_threshold: float = defaults.MASK_THRESHOLD,
        keypoint_threshold: float | None = None,
        polygon_tolerance: float = 0.5,
        batch_size: int = 2,
        max_detections: int | None = None,
        mask_nms_iou: float | None = defaults.MASK_NMS_IOU,
        taught: Taught | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # torchvision's RoIHeads: torchvision is untyped, and Module.__getattr__ is typed Tensor | Module.
        heads: Any = self.model.roi_heads
        heads.score_thresh = max(heads.score_thresh, score_threshold)
        if max_detections is not None:
            heads.detections_per_img = min(heads.detections_per_img, max_detections)
        self._candidates: list[int] = []
        heads.postprocess_detections = self._counting_postprocess(heads)
        self.schema = schema
        self.model_version = model_version
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.keypoint_threshold = keypoint_threshold
        self.polygon_tolerance = polygon_tolerance
        self.batch_size = batch_size
        self.mask_nms_iou = mask_nms_iou
        self.taught = taught
        self._make_instance = InstanceMaker(schema, keypoint_threshold, polygon_tolerance, taught)

    def _counting_postprocess(self, heads: Any) -> Callable[..., tuple[list[torch.Tensor], ...]]:
        """RoIHeads' box post-processing, run down to the candidate floor so that the number of candidates
        under the threshold is known; only boxes at or above ``heads.score_thresh`` go on to the mask and
        keypoint heads. NMS is greedy by score, so boxes under the threshold never suppress one above it:
        the objects returned are the same as with the threshold applied inside."""
        original = heads.postprocess_detections

        def postprocess(*args: object) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
            threshold = heads.score_thresh
            heads.score_thresh = min(threshold, defaults.BOX_SCORE_FLOOR)
            try:
                boxes, scores, labels = original(*args)
            finally:
                heads.score_thresh = threshold
            self._candidates = [len(s) for s in scores]
            keep = [s >= threshold for s in scores]
            return (
                [b[k] for b, k in zip(boxes, keep)],
                [s[k] for s, k in zip(scores, keep)],
                [lab[k] for lab, k in zip(labels, keep)],
            )

        return postprocess

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        score_threshold: float = defaults.SCORE_THRESHOLD,
        **options: Any,  # the other keyword arguments of __init__
    ) -> TorchvisionPredictor:
        checkpoint = load_checkpoint(path, map_location=device)
        model = checkpoint.build(device)
        return cls(
            model,
            checkpoint.schema,
            checkpoint.model_version,
            device,
            score_threshold,
            taught=checkpoint.taught,
            **options,
        )

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """``images``: HxWx3 uint8 RGB arrays (any sizes); one list of instances per image."""
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            tensors = [self._to_tensor(image) for image in chunk]
            outputs = self.model(tensors)
            results.extend(
                Detections(self._instances(output), candidates) for output, candidates in zip(outputs, self._candidates)
            )
        return results

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        check_rgb_image(image)
        array = np.ascontiguousarray(image) if image.flags.writeable else image.copy()  # from_numpy warns on read-only
        return torch.from_numpy(array).to(self.device).permute(2, 0, 1).float().div_(255.0)

    def _instances(self, output: dict[str, torch.Tensor]) -> list[DetectedInstance]:
        keep = output["scores"] >= self.score_threshold
        out = {k: v[keep].cpu() for k, v in output.items()}
        k = self.schema.num_keypoints
        count = len(out["scores"])
        if "keypoints" in out:
            keypoints = torch.cat([out["keypoints"][..., :2], out["keypoints_scores"][..., None]], -1).numpy()
        else:
            keypoints = np.zeros((count, k, 3), np.float32)
        masks = [(out["masks"][i, 0] >= self.mask_threshold).numpy() for i in range(count)]
        labels = out["labels"].tolist()
        return [
            self._make_instance(labels[i], float(out["scores"][i]), out["boxes"][i].tolist(), masks[i], keypoints[i])
            for i in distinct_masks(labels, out["scores"].tolist(), masks, self.mask_nms_iou)
        ]


def instance_to_json(instance: DetectedInstance) -> dict:
    """JSON form of an instance (mask as compressed COCO RLE), as written by ``predict --out``."""
    return {
        "category_id": instance.category_id,
        "label": instance.label,
        "score": round(instance.score, 5),
        "box": [round(v, 2) for v in instance.box],
        "polygons": instance.polygons,
        "mask_rle": rle_encode(instance.mask),
        "keypoints": np.round(instance.keypoints, 3).tolist(),
        "keypoint_present": instance.keypoint_present.tolist(),
    }


EXAMPLE = """example:
  python -m multitask predict --checkpoint runs/multitask/last.pt photo1.jpg photo2.jpg --out preds.json
  python -m multitask predict --checkpoint last.pt images/*.png --score-threshold 0.3 --device cuda
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("preds.json"))
    parser.add_argument("--score-threshold", type=float, default=defaults.SCORE_THRESHOLD)
    parser.add_argument("--keypoint-threshold", type=float, help="minimum keypoint score (heatmap logit)")
    parser.add_argument(
        "--mask-nms-iou", type=float, default=defaults.MASK_NMS_IOU,
        help="drop a detection whose mask overlaps a higher-scoring one of its label by more than this IoU (1: keep all)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> None:
    from multitask import engines

    predictor = engines.load_predictor(
        args.checkpoint, device=args.device, score_threshold=args.score_threshold,
        keypoint_threshold=args.keypoint_threshold, mask_nms_iou=args.mask_nms_iou,
    )  # fmt: skip
    images = []
    for path in args.images:
        pixels = read_image(path)
        instances = predictor.predict([pixels])[0]
        height, width = pixels.shape[:2]
        images.append(
            {"file": str(path), "height": height, "width": width, "instances": [instance_to_json(i) for i in instances]}
        )
        print(f"{path}: {len(instances)} instances")
    payload = {
        "model_version": predictor.model_version,
        "keypoint_names": list(predictor.schema.keypoint_names),
        "images": images,
    }
    args.out.write_text(json.dumps(payload))
    print(f"saved {args.out}")
