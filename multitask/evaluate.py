"""COCO mAP for boxes, masks and keypoints (pycocotools), with per-keypoint OKS sigmas.

Keypoint AP depends strongly on the OKS sigma (on the same predictions it moved from 0.57 to 0.99
between sigmas in our runs), so every keypoint AP is printed and saved together with its sigmas.
Default: 0.05 for every keypoint. COCO's person sigmas (0.025 eyes ... 0.107 hips) encode how
precisely *people* place each human keypoint and mean nothing for engine parts or gearboxes; a
uniform 0.05 sits in the middle of that range. Set per-keypoint values (by name) when annotator
spread is known.

Keypoints use the global K list: every category's keypoint list is K long (docs/FORMAT.md), and
``COCOeval.params.kpt_oks_sigmas`` is set to an array of length K. Ground truth without labeled
keypoints (``num_keypoints == 0``) is ignored by the keypoint evaluation, as in COCO.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from combined_coco.dataset import global_layout, keypoint_array, read_combined_coco, rle_encode
from combined_coco.images import check_image_size, read_image
from combined_coco.schema import Schema
from multitask import defaults
from multitask.inference import TorchvisionPredictor

DEFAULT_OKS_SIGMA = 0.05
IOU_TYPES = ("bbox", "segm", "keypoints")
_STAT_NAMES = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
}
_STAT_NAMES["segm"] = _STAT_NAMES["bbox"]

Sigmas = float | Sequence[float] | Mapping[str, float] | None


def oks_sigmas(schema: Schema, sigmas: Sigmas = None) -> np.ndarray:
    """Per-keypoint sigmas [K]: one value for all, a K-list, or ``{name: sigma}`` over the default."""
    names = schema.keypoint_names
    if sigmas is None or isinstance(sigmas, (int, float)):
        return np.full(len(names), DEFAULT_OKS_SIGMA if sigmas is None else float(sigmas))
    if isinstance(sigmas, Mapping):
        unknown = sorted(set(sigmas) - set(names))
        if unknown:
            raise ValueError(f"OKS sigmas given for unknown keypoints {unknown}; keypoints are {list(names)}")
        return np.array([float(sigmas.get(n, DEFAULT_OKS_SIGMA)) for n in names])
    values = np.asarray(sigmas, float)
    if values.shape != (len(names),):
        raise ValueError(f"{len(values)} OKS sigmas for {len(names)} keypoints {list(names)}")
    return values


def global_ground_truth(coco: dict, schema: Schema) -> dict:
    """A copy of the file in the global keypoint layout with ``num_keypoints`` recomputed (COCOeval
    ignores ground truth with ``num_keypoints == 0`` for keypoints, so it must be right)."""
    gt = copy.deepcopy(global_layout(coco, schema))
    for ann in gt["annotations"]:
        keypoints = keypoint_array(ann, schema.num_keypoints)
        ann["keypoints"] = keypoints.ravel().tolist()
        ann["num_keypoints"] = int((keypoints[:, 2] > 0).sum())
        ann.setdefault("iscrowd", 0)
    return gt


def coco_evaluate(gt: dict, detections: list[dict], schema: Schema, sigmas: Sigmas = None) -> dict:
    """AP/AR per IoU type. ``gt``: combined COCO (any layout); ``detections``: COCO results with
    ``image_id, category_id, score`` and any of ``bbox`` (xywh), ``segmentation`` (RLE), ``keypoints``
    (3K, global order). Returns ``{iou_type: {stat: value}, "oks_sigmas": {name: sigma}}``."""
    sigma = oks_sigmas(schema, sigmas)
    ground_truth = _quiet_coco(global_ground_truth(gt, schema))
    results: dict = {"oks_sigmas": dict(zip(schema.keypoint_names, sigma.tolist()))}
    for iou_type in IOU_TYPES:
        if iou_type == "keypoints" and schema.num_keypoints == 0:
            continue
        field_name = "bbox" if iou_type == "bbox" else "segmentation" if iou_type == "segm" else "keypoints"
        dets = [
            {k: d[k] for k in ("image_id", "category_id", "score", field_name)} for d in detections if field_name in d
        ]
        if not dets:
            results[iou_type] = {name: 0.0 for name in _STAT_NAMES[iou_type]}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval(ground_truth, ground_truth.loadRes(dets), iou_type)
            if iou_type == "keypoints":
                evaluator.params.kpt_oks_sigmas = sigma
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # -1 means "no ground truth in this area range"; report it as such, not as an AP.
        results[iou_type] = {n: (float(v) if v >= 0 else None) for n, v in zip(_STAT_NAMES[iou_type], evaluator.stats)}
    return results


def _quiet_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instances_to_detections(image_id: int, instances: Sequence) -> list[dict]:
    """Predictor output for one image -> COCO results (absent keypoints get v = 0)."""
    dets = []
    for inst in instances:
        x1, y1, x2, y2 = inst.box
        rle = rle_encode(inst.mask)
        keypoints = inst.keypoints.astype(float).copy()
        keypoints[:, 2] = inst.keypoint_present.astype(float)
        dets.append(
            {
                "image_id": image_id,
                "category_id": inst.category_id,
                "score": inst.score,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "segmentation": rle,
                "keypoints": keypoints.ravel().tolist(),
            }
        )
    return dets


def format_table(results: dict) -> str:
    """AP table; the keypoint row names its sigmas, since its AP is meaningless without them."""
    lines = [f"{'task':<10} {'AP':>6} {'AP50':>6} {'AP75':>6}"]
    for iou_type in IOU_TYPES:
        if iou_type in results:
            r = results[iou_type]
            lines.append(f"{iou_type:<10} " + " ".join(_cell(r[k]) for k in ("AP", "AP50", "AP75")))
    sigmas = sorted(set(results["oks_sigmas"].values()))
    if "keypoints" in results:
        text = f"{sigmas[0]:g} for all keypoints" if len(sigmas) == 1 else json.dumps(results["oks_sigmas"])
        lines.append(f"keypoint OKS sigma: {text}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'n/a':>6}" if value is None else f"{value:6.3f}"


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: str | Path,
    image_root: str | Path | None = None,
    sigmas: Sigmas = None,
    device: str = "cpu",
    score_threshold: float = defaults.BOX_SCORE_FLOOR,
    max_detections: int | None = None,
) -> dict:
    """Predict every image of ``dataset`` with the checkpoint and score it.

    Without mask NMS: AP scores the model, as the Detectron2 engine's evaluation (which has none) does."""
    predictor = TorchvisionPredictor.from_checkpoint(
        checkpoint, device=device, score_threshold=score_threshold, max_detections=max_detections, mask_nms_iou=None
    )
    coco, schema = read_combined_coco(dataset)
    if schema != predictor.schema:
        raise ValueError(f"{dataset}'s categories/keypoints differ from those the checkpoint was trained on")
    root = Path(image_root) if image_root else Path(dataset).parent
    detections: list[dict] = []
    for info in coco["images"]:
        pixels = read_image(root / info["file_name"])
        check_image_size(pixels, info)
        instances = predictor.predict([pixels])[0]
        detections.extend(instances_to_detections(info["id"], instances))
    results = coco_evaluate(coco, detections, schema, sigmas)
    results["model_version"] = predictor.model_version
    return results


EXAMPLE = """example:
  python -m multitask evaluate --checkpoint runs/multitask/last.pt --dataset data/val/annotations.json \\
      --sigma 0.05 --out eval.json
  python -m multitask evaluate --checkpoint last.pt --dataset val.json --sigmas '{"nose": 0.026}'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="combined COCO json with ground truth")
    parser.add_argument("--image-root", type=Path, help="default: the dataset's folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--sigma", type=float, help=f"one OKS sigma for all keypoints (default {DEFAULT_OKS_SIGMA})")
    group.add_argument("--sigmas", type=json.loads, help="JSON list of K sigmas or {keypoint name: sigma}")
    parser.add_argument("--score-threshold", type=float, default=defaults.BOX_SCORE_FLOOR)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("eval.json"), help="JSON results (default eval.json)")


def run(args: argparse.Namespace) -> None:
    sigmas = args.sigmas if args.sigmas is not None else args.sigma
    from multitask import engines

    results = engines.evaluate(
        args.checkpoint, args.dataset, image_root=args.image_root, sigmas=sigmas, device=args.device,
        score_threshold=args.score_threshold,
    )  # fmt: skip
    print(format_table(results))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")
