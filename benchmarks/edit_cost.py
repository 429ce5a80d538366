"""Edit cost of the backend's pre-annotations: actions an annotator needs to turn them into the truth, per kind,
as a ratio of drawing everything from scratch (``backend.edit_cost``), on images the model never saw.

Two sets, each trained here as the ML backend trains (its defaults: light model, batch 2, ``TRAIN_LR``, the
backend's image size, a first run of ``--steps`` from ``--init``, then a warm-start retrain of
``--retrain-steps`` at a tenth of the learning rate on 5 more images, as ``RETRAIN_STEPS`` does):

- *scenes*: the retrain benchmark's synthetic scenes (``multitask.synthetic``, ``scenes=True``), 20 + 5 training
  images, ``--test-images`` unseen ones;
- *parts* (harder): the parts generator at 1280x720 (textured star-shaped parts, many cut by the border, some in
  two pieces, some stored as brush masks), the same counts.

The project's labeling config is the set's schema with a RectangleLabels control offering every label too (as
the shipped configs do). The regions are the backend's (``backend.predictions.image_regions`` with its default
settings unless overridden). Three variants per model, in the same run:

- ``main``: what the backend sent before this change: no mask NMS and a rectangle nested under every polygon.
  The rectangles are not drawn again here: each costs exactly one deletion (under a matched polygon:
  ``delete_rectangle``; under a deleted one, one more ``delete_object`` region), added to the next variant;
- ``no boxes``: no rectangle for an object that has a polygon, no mask NMS;
- ``now``: no boxes and mask NMS at ``MASK_NMS_IOU`` (what the backend sends now).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.edit_cost import KINDS, EditCost, dataset_edit_cost  # noqa: E402
from backend.settings import Settings  # noqa: E402
from combined_coco.config_from_description import config_from_description  # noqa: E402
from combined_coco.schema import Schema  # noqa: E402
from multitask import defaults  # noqa: E402

EXAMPLE = """example:
  python benchmarks/edit_cost.py                                  # 300 + 100 steps per set (CPU: tens of minutes)
  python benchmarks/edit_cost.py --steps 20 --retrain-steps 5 --sets scenes   # a quick check of the wiring
  python benchmarks/edit_cost.py --checkpoint model.pt --sets scenes           # score a scenes checkpoint only
"""
FIRST_IMAGES, MORE_IMAGES = 20, 5


def project_schema(schema: Schema) -> Schema:
    """The labeling config a project of ``schema`` would have: polygons, rectangles and keypoints for every label."""
    names = schema.keypoint_names
    description = {
        "title": "edit cost benchmark",
        "rectangles": True,
        "categories": {c.name: list(c.keypoints) for c in schema.categories},
        "flip_pairs": [[names[a], names[b]] for a, b in schema.flip_pairs],
        "skeleton": [[names[a], names[b]] for a, b in schema.skeleton],
    }
    return Schema.from_label_config(config_from_description(description))


def write_set(name: str, root: Path, count: int, size: int, seed: int) -> Path:
    """``count`` images of set ``name``; returns the combined COCO path (images next to it or in ``images/``)."""
    from multitask.synthetic import write_parts_dataset, write_synthetic_dataset

    if name == "scenes":
        return write_synthetic_dataset(root, count, size, seed, scenes=True)
    return write_parts_dataset(root, count, 1280, 720, seed=seed)


def image_root(dataset: Path) -> Path:
    return dataset.parent / "images" if (dataset.parent / "images").is_dir() else dataset.parent


def first_images(dataset: Path, count: int) -> Path:
    """A copy of ``dataset`` with its first ``count`` images (the first run's training set)."""
    coco = json.loads(dataset.read_text())
    keep = {im["id"] for im in coco["images"][:count]}
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = dataset.with_name(f"first{count}.json")
    path.write_text(json.dumps(coco))
    return path


def train_run(dataset: Path, out: Path, steps: int, lr: float, init: str, size: int, start: Path | None) -> Path:
    from multitask.train import TrainConfig, train

    config = TrainConfig(
        dataset=str(dataset), image_root=str(image_root(dataset)), output_dir=str(out), steps=steps, batch_size=2,
        lr=lr, min_size=size, max_size=max(size, defaults.BACKEND_MAX_SIZE), init=init,
        finetune_from=str(start) if start else None, warmup_steps=min(100, max(1, steps // 5)), device="cpu",
        checkpoint_every=10**6,
    )  # fmt: skip
    began = time.monotonic()
    checkpoint = train(config)
    print(f"  trained {out.name}: {steps} steps in {time.monotonic() - began:.0f} s", flush=True)
    return checkpoint


def variants(checkpoint: Path, test: Path, project: Schema, settings: Settings) -> dict[str, EditCost]:
    """``main``, ``no boxes`` and ``now`` (module docstring) on the test set."""
    from multitask import engines

    coco = json.loads(test.read_text())

    def cost(mask_nms_iou: float | None) -> EditCost:
        predictor = engines.load_predictor(
            checkpoint, score_threshold=settings.score_threshold, mask_threshold=settings.mask_threshold,
            keypoint_threshold=settings.keypoint_threshold, max_detections=settings.max_objects,
            mask_nms_iou=mask_nms_iou,
        )  # fmt: skip
        regions = settings.model_copy(update={"mask_nms_iou": 1.0 if mask_nms_iou is None else mask_nms_iou})
        return dataset_edit_cost(predictor, coco, image_root(test), project, regions)  # 1.0: IoU is never above

    no_boxes = cost(None)
    main = EditCost(dict(no_boxes.actions), no_boxes.from_scratch, no_boxes.images, no_boxes.truth_objects,
                    no_boxes.predicted_objects, no_boxes.matched_objects)  # fmt: skip
    main.actions["delete_rectangle"] += no_boxes.matched_objects  # every predicted object is a polygon here
    main.actions["delete_object"] += no_boxes.predicted_objects - no_boxes.matched_objects
    return {"main": main, "no boxes": no_boxes, "now": cost(settings.mask_nms_iou)}


def report(rows: list[tuple[str, str, str, EditCost]]) -> None:
    header = ["set", "model", "regions", "ratio", "actions", "from scratch", "objects (truth/pred/matched)", *KINDS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for set_name, model, variant, cost in rows:
        ratio = "-" if cost.ratio is None else f"{cost.ratio:.3f}"
        objects = f"{cost.truth_objects}/{cost.predicted_objects}/{cost.matched_objects}"
        cells = [set_name, model, variant, ratio, cost.total, cost.from_scratch, objects, *cost.actions.values()]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default="scenes,parts", help="comma-separated: scenes, parts")
    parser.add_argument("--checkpoint", type=Path, help="score this checkpoint instead of training (one set only)")
    parser.add_argument("--steps", type=int, default=Settings().train_steps, help="first run (TRAIN_STEPS)")
    parser.add_argument("--retrain-steps", type=int, default=Settings().retrain_steps, help="RETRAIN_STEPS; 0: none")
    parser.add_argument("--init", default="none", help="TRAIN_INIT of the first run (coco needs the weights cached)")
    parser.add_argument("--size", type=int, default=defaults.BACKEND_MIN_SIZE, help="TRAIN_MIN_SIZE; scenes side")
    parser.add_argument("--test-images", type=int, default=12)
    parser.add_argument("--score-threshold", type=float, default=Settings().score_threshold)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="datasets and checkpoints (default: a temporary folder)")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.checkpoint and len(sets) != 1:
        parser.error("--checkpoint scores one set: pass --sets scenes or --sets parts")
    import torch

    torch.set_num_threads(args.threads)
    root = args.work_dir or Path(tempfile.mkdtemp(prefix="lsmt-edit-cost-"))
    settings = Settings(score_threshold=args.score_threshold)
    started = time.monotonic()
    rows: list[tuple[str, str, str, EditCost]] = []
    for set_name in sets:
        print(f"{set_name}: writing data, training ...", flush=True)
        train_set = write_set(set_name, root / set_name / "train", FIRST_IMAGES + MORE_IMAGES, args.size, args.seed)
        test = write_set(set_name, root / set_name / "test", args.test_images, args.size, args.seed + 1000)
        schema = Schema.from_coco_categories(json.loads(test.read_text())["categories"])
        models: list[tuple[str, Path]] = []
        if args.checkpoint:
            models.append((args.checkpoint.name, args.checkpoint))
        else:
            first = train_run(first_images(train_set, FIRST_IMAGES), root / set_name / "first", args.steps,
                              settings.train_lr, args.init, args.size, None)  # fmt: skip
            models.append((f"first run ({args.steps} steps, {FIRST_IMAGES} images)", first))
            if args.retrain_steps:
                retrained = train_run(train_set, root / set_name / "retrain", args.retrain_steps,
                                      settings.retrain_learning_rate, args.init, args.size, first)  # fmt: skip
                models.append(
                    (f"retrain (+{args.retrain_steps} steps, {FIRST_IMAGES + MORE_IMAGES} images)", retrained)
                )
        for model, checkpoint in models:
            for variant, cost in variants(checkpoint, test, project_schema(schema), settings).items():
                rows.append((set_name, model, variant, cost))
    load = os.getloadavg()
    print(
        f"\nSCORE_THRESHOLD={settings.score_threshold:g}, MASK_NMS_IOU={settings.mask_nms_iou:g}, "
        f"POLYGON_TOLERANCE_PX={settings.polygon_tolerance_px:g}, {args.test_images} test images per set; "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"total {time.monotonic() - started:.0f} s; work dir {root}"
    )
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
