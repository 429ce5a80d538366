"""The Detectron2 engine on the tiny synthetic combined COCO: discs (polygons, 3 keypoints with a
left/right flip pair) and plates (RLE masks, a category without keypoints).

One 2-step R50-FPN run at 128 px (module fixture) from the model-zoo stand-in in ``FVCORE_CACHE``
is shared by the loss, checkpoint, predictor and evaluation tests; truths come from Detectron2's
own ``DefaultPredictor`` / ``DetectionCheckpointer`` and from pycocotools, not from the engine.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from combined_coco.dataset import read_combined_coco
from combined_coco.images import read_image
from multitask import engines
from multitask.evaluate import coco_evaluate, instances_to_detections
from multitask.synthetic import SCHEMA, write_synthetic_dataset
from multitask.train import TrainConfig

pytestmark = [pytest.mark.detectron2, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SIZE = 128


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("d2-synthetic"), num_images=3, size=SIZE)


def d2_config(dataset: Path, output_dir: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, Any] = dict(
        engine="detectron2", backbone="resnet50_fpn", dataset=str(dataset), output_dir=str(output_dir),
        steps=2, batch_size=2, lr=0.001, warmup_steps=1, min_size=SIZE, max_size=SIZE, device="cpu",
        rois_per_image=64, checkpoint_every=1000,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def run(dataset: Path, detectron2_coco_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    progress: list[tuple[int, int, dict[str, float]]] = []
    out = tmp_path_factory.mktemp("d2-run")
    checkpoint = engines.train(d2_config(dataset, out), on_progress=lambda *a: progress.append(a))
    return {"checkpoint": checkpoint, "progress": progress, "out": out}


def test_all_six_losses_are_finite_with_rle_objects_and_a_keypointless_category(run: dict) -> None:
    assert [(step, total) for step, total, _ in run["progress"]] == [(1, 2), (2, 2)]
    for _, _, losses in run["progress"]:
        assert set(losses) == {"loss", "cls", "box_reg", "mask", "keypoint", "rpn_cls", "rpn_loc"}, losses
        assert all(math.isfinite(v) for v in losses.values()), losses
    # brush-like RLE plates need bitmask masks; Detectron2's own files are there for its users
    config = (run["out"] / "config.yaml").read_text()
    assert "MASK_FORMAT: bitmask" in config and "NUM_KEYPOINTS: 3" in config and "NUM_CLASSES: 2" in config
    assert (run["out"] / "model_final.pth").exists() and (run["out"] / "metrics.json").exists()


def test_starts_from_the_model_zoo_checkpoint_in_the_fvcore_cache(run: dict, detectron2_coco_weights: Path) -> None:
    with detectron2_coco_weights.open("rb") as f:
        zoo = pickle.load(f)["model"]
    summary = engines.read_summary(run["checkpoint"])
    (transfer,) = summary.transfers
    assert transfer.startswith("coco: model_final_a6e10b.pkl: loaded"), transfer
    start = torch.load(run["checkpoint"], weights_only=True)["training"]
    assert start["started_from"] == "coco"
    # a backbone stem tensor came from the file (2 steps at lr 0.001 barely move it; frozen stem: not at all)
    stem = "backbone.bottom_up.stem.conv1.weight"
    assert np.allclose(torch.load(run["checkpoint"], weights_only=True)["model"][stem].numpy(), zoo[stem])


def test_checkpoint_loads_weights_only_and_in_detectron2s_own_checkpointer(run: dict) -> None:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    data = torch.load(run["checkpoint"], weights_only=True)
    assert data["engine"] == "detectron2" and data["model_version"].startswith("multitask-detectron2-resnet50_fpn-")
    summary = engines.read_summary(run["checkpoint"])
    assert (summary.engine, summary.schema, summary.backbone, summary.step) == ("detectron2", SCHEMA, "resnet50_fpn", 2)
    cfg = get_cfg()
    cfg.merge_from_file(str(run["out"] / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(run["checkpoint"]))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, data["model"][name]), name


def test_predictor_matches_detectron2s_default_predictor(run: dict, dataset: Path) -> None:
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    # every detection, whatever its score after 2 steps: the comparison needs some; and no mask NMS, which is
    # ours, after Detectron2's (DefaultPredictor keeps same-label duplicates)
    predictor = engines.load_predictor(run["checkpoint"], score_threshold=0.0, mask_nms_iou=None)
    assert (
        predictor.schema == SCHEMA and predictor.model_version == engines.read_summary(run["checkpoint"]).model_version
    )
    image = read_image(dataset.parent / "img_001.png")
    (instances,) = predictor.predict([image])

    cfg = get_cfg()
    cfg.merge_from_file(str(run["out"] / "config.yaml"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = "cpu", str(run["checkpoint"]), 0.0
    truth = DefaultPredictor(cfg)(image[:, :, ::-1])["instances"]
    assert len(instances) == len(truth) > 0
    for inst, box, score, cls, mask, kps in zip(
        instances, truth.pred_boxes.tensor, truth.scores, truth.pred_classes, truth.pred_masks, truth.pred_keypoints
    ):
        assert inst.category_id == int(cls) + 1 and inst.label == SCHEMA.category_by_id(inst.category_id).name
        assert inst.score == pytest.approx(float(score), abs=1e-5)
        assert np.allclose(inst.box, box.numpy(), atol=1e-3)
        assert inst.mask.shape == (SIZE, SIZE) and (inst.mask == mask.numpy()).all()
        assert inst.keypoints.shape == (3, 3)
        assert np.allclose(inst.keypoints[:, :2], kps[:, :2].numpy() - 0.5, atol=1e-3)  # COCO convention
        applies = inst.label == "disc"
        assert inst.keypoint_present.tolist() == [applies] * 3  # plates have no keypoints


def test_evaluation_agrees_with_pycocotools_on_the_models_own_detections_as_ground_truth(
    run: dict, dataset: Path, tmp_path: Path
) -> None:
    """Ground truth = the predictor's detections (box, RLE mask, keypoints of discs): Detectron2's
    COCOEvaluator, on its own loader and model run, must give the AP pycocotools gives on the
    predictor's detections, and 1 for boxes. A 2-step model scores 0 on the real labels,
    so this is what shows that classes, masks and keypoint coordinates line up between the two. No mask NMS:
    the evaluator's own run of the model keeps every detection, as evaluation does."""
    predictor = engines.load_predictor(run["checkpoint"], score_threshold=0.0, mask_nms_iou=None)
    coco, schema = read_combined_coco(dataset)
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for info in coco["images"]:
        (instances,) = predictor.predict([read_image(dataset.parent / info["file_name"])])
        for instance, own in zip(instances, instances_to_detections(info["id"], instances)):
            detections.append(own)
            keypoints = np.asarray(own["keypoints"]).reshape(-1, 3)
            keypoints[:, 2] *= 2  # applicable keypoints labeled visible
            annotations.append({
                "id": len(annotations) + 1, "image_id": info["id"], "category_id": own["category_id"],
                "bbox": own["bbox"], "segmentation": own["segmentation"], "area": float(instance.mask.sum()),
                "iscrowd": 0, "keypoints": keypoints.ravel().tolist(), "num_keypoints": int((keypoints[:, 2] > 0).sum()),
            })  # fmt: skip
    assert {a["category_id"] for a in annotations} == {1, 2}
    own_truth = tmp_path / "own.json"
    own_truth.write_text(json.dumps({**coco, "annotations": annotations}))
    results = engines.evaluate(run["checkpoint"], own_truth, image_root=dataset.parent, score_threshold=0.0)
    truth = coco_evaluate({**coco, "annotations": annotations}, detections, schema)
    assert results["oks_sigmas"] == {"left": 0.05, "right": 0.05, "top": 0.05}
    assert results["model_version"] == predictor.model_version
    for task in ("bbox", "segm", "keypoints"):
        assert results[task]["AP"] == pytest.approx(truth[task]["AP"], abs=1e-6), (task, results[task], truth[task])
    # boxes match themselves exactly; an untrained mask head leaves some masks empty (IoU 0 with
    # anything) and near-duplicate detections share keypoints, so segm and keypoint AP are below 1 —
    # by the same amount in both evaluations
    assert results["bbox"]["AP"] == pytest.approx(1.0) and results["bbox"]["AP-disc"] == pytest.approx(1.0)
    assert 0 < results["segm"]["AP"] <= 1 and 0 < results["keypoints"]["AP"] <= 1


def test_flip_map_swaps_left_and_right(dataset: Path, tmp_path: Path) -> None:
    from multitask.engines.detectron2 import build_config, registered, train_mapper

    coco, schema = read_combined_coco(dataset)
    cfg = build_config(schema, d2_config(dataset, tmp_path), coco)
    with registered(coco, schema, dataset.parent, tmp_path) as name:
        from detectron2.data import DatasetCatalog

        cfg.DATASETS.TRAIN = (name,)
        record = next(r for r in DatasetCatalog.get(name) if r["file_name"].endswith("img_001.png"))
        instances = train_mapper(cfg, hflip_prob=1.0)(record)["instances"]
    disc = next(a for a in coco["annotations"] if a["image_id"] == 2 and a["category_id"] == 1)
    (lx, ly, _), (rx, ry, _), (tx, ty, _) = np.asarray(disc["keypoints"]).reshape(3, 3)
    classes = instances.gt_classes.tolist()
    flipped = instances.gt_keypoints.tensor[classes.index(0)].numpy()
    # after the flip, "left" is the mirrored right end (Detectron2 coordinates: COCO + 0.5)
    assert np.allclose(flipped[0, :2], [SIZE - (rx + 0.5), ry + 0.5], atol=1e-4)
    assert np.allclose(flipped[1, :2], [SIZE - (lx + 0.5), ly + 0.5], atol=1e-4)
    assert np.allclose(flipped[2, :2], [SIZE - (tx + 0.5), ty + 0.5], atol=1e-4)
    plate = instances.gt_keypoints.tensor[classes.index(1)].numpy()
    assert (plate[:, 2] == 0).all()  # the keypoint-less plate: K keypoints, none visible
    assert instances.gt_masks.tensor.shape[1:] == (SIZE, SIZE)  # bitmask (from RLE and polygons)


def test_missing_zoo_weights_fail_in_one_line_naming_file_url_and_folder(dataset: Path, tmp_path: Path) -> None:
    """A fresh process with an empty cache and no route to the zoo: the run stops with what to do."""
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from multitask import engines\n"
        "from multitask.pretrained import PretrainedWeightsUnavailable\n"
        "from multitask.train import TrainConfig\n"
        "config = TrainConfig(**json.loads(sys.argv[1]))\n"
        "try:\n    engines.train(config)\nexcept PretrainedWeightsUnavailable as exc:\n"
        "    print('MESSAGE', json.dumps(str(exc)))\n"
    )
    config = json.dumps(d2_config(dataset, tmp_path / "out").__dict__)
    env = {"FVCORE_CACHE": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + script, config], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert time.monotonic() - began < 200
    messages = [json.loads(x.removeprefix("MESSAGE ")) for x in done.stdout.splitlines() if x.startswith("MESSAGE ")]
    assert len(messages) == 1, (done.stdout[-3000:], done.stderr[-3000:])
    (line,) = messages
    assert "\n" not in line
    url = "https://dl.fbaipublicfiles.com/detectron2/COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x/137849621/model_final_a6e10b.pkl"
    folder = tmp_path / "empty-cache" / "detectron2/COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x/137849621"
    assert "model_final_a6e10b.pkl" in line and url in line and str(folder) in line and "init: none" in line, line


def test_without_detectron2_the_engine_says_how_to_install_it() -> None:
    script = (
        "import sys; sys.modules['detectron2'] = None\n"  # as if it were not installed
        "from multitask import engines\n"
        "try:\n    engines.get('detectron2')\nexcept engines.EngineUnavailable as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1 and "scripts/install.sh --with-detectron2" in done.stdout, done


def test_unknown_engine_and_torchvision_only_backbone_are_refused(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of"):
        engines.get("mmdet")
    with pytest.raises(ValueError, match="not a detectron2 backbone"):
        engines.get("detectron2").check(d2_config(dataset, tmp_path, backbone="mobilenet_v3_large_fpn"))


def test_train_engine_setting_picks_the_engine_and_its_default_backbone() -> None:
    from backend.settings import Settings, SettingsError

    assert (Settings.from_env({}).train_engine, Settings.from_env({}).train_backbone) == (
        "torchvision",
        "mobilenet_v3_large_fpn",
    )
    d2 = Settings.from_env({"TRAIN_ENGINE": "detectron2"})
    assert (d2.train_engine, d2.train_backbone) == ("detectron2", "resnet50_fpn")
    with pytest.raises(SettingsError, match="TRAIN_ENGINE='mmdet'.*torchvision"):
        Settings.from_env({"TRAIN_ENGINE": "mmdet"})


def test_a_version_of_the_other_engine_is_not_continued(run: dict, tmp_path: Path) -> None:
    from backend.model_store import ModelStore
    from backend.settings import Settings
    from backend.training import _start_point

    store = ModelStore(tmp_path / "models")
    version = store.publish(3, run["checkpoint"], {"steps": 2})
    d2 = Settings.from_env({"TRAIN_ENGINE": "detectron2", "MODEL_DIR": str(tmp_path / "models")})
    same = _start_point(3, store, SCHEMA, d2)
    assert (same.finetune_from, same.started_from) == (str(store.checkpoint(3, version)), f"version {version}")
    other = _start_point(3, store, SCHEMA, Settings.from_env({"MODEL_DIR": str(tmp_path / "models")}))
    assert (other.finetune_from, other.started_from, other.transferred_from) == (None, "coco", None)


def test_finetuning_from_a_version_loads_every_tensor(run: dict, dataset: Path, tmp_path: Path) -> None:
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from multitask.engines.detectron2 import start_weights

    cfg = get_cfg()
    cfg.merge_from_file(str(run["out"] / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    config = d2_config(dataset, tmp_path, finetune_from=str(run["checkpoint"]), init="none")
    started_from, (report,) = start_weights(model, config, SCHEMA)
    assert started_from == f"checkpoint {run['checkpoint']}"
    assert report.class_dependent == [] and report.not_in_file == [] and len(report.loaded) == len(model.state_dict())
    saved = torch.load(run["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_cli_predict_and_evaluate_pick_the_engine_from_the_checkpoint(run: dict, dataset: Path, tmp_path: Path) -> None:
    from multitask.__main__ import main

    main(["predict", "--checkpoint", str(run["checkpoint"]), str(dataset.parent / "img_001.png"),
          "--score-threshold", "0", "--out", str(tmp_path / "preds.json")])  # fmt: skip
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds["model_version"].startswith("multitask-detectron2-") and preds["keypoint_names"] == [
        "left",
        "right",
        "top",
    ]
    assert preds["images"][0]["instances"]
    main(
        [
            "evaluate",
            "--checkpoint",
            str(run["checkpoint"]),
            "--dataset",
            str(dataset),
            "--out",
            str(tmp_path / "e.json"),
        ]
    )
    assert json.loads((tmp_path / "e.json").read_text()).keys() >= {"bbox", "segm", "keypoints", "oks_sigmas"}


def test_resume_continues_from_detectron2s_last_checkpoint(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    engines.train(d2_config(dataset, out, steps=1, init="none"))
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    steps: list[tuple[int, int]] = []
    checkpoint = engines.train(
        d2_config(dataset, out, steps=2, init="none", resume=True), on_progress=lambda s, t, _: steps.append((s, t))
    )
    assert steps == [(2, 2)]  # step 1 came from model_final.pth, with its optimizer and scheduler state
    training = torch.load(checkpoint, weights_only=True)["training"]
    assert training["started_from"].startswith("resumed ") and training["started_from"].endswith("model_final.pth")
