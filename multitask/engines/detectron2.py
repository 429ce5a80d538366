"""The Detectron2 engine: Keypoint R-CNN R50-FPN with ``MODEL.MASK_ON``, the paper's own setup.

Everything is Detectron2's: the model-zoo config ``COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml``,
the dataset registered with ``register_coco_instances``, ``DatasetMapper``, ``DefaultTrainer`` with its
checkpointer (``model_final.pth``, ``last_checkpoint`` and ``config.yaml`` in ``output_dir``),
``COCOEvaluator`` and ``DefaultPredictor``. What the project adds around it:

- the config comes from the schema and the :class:`~multitask.train.TrainConfig`: ``NUM_CLASSES``,
  ``ROI_KEYPOINT_HEAD.NUM_KEYPOINTS`` (the global keypoint list K), image sizes, solver (steps, lr,
  warmup, decays at ``lr_decay_at``, gradient clipping), ``TEST.KEYPOINT_OKS_SIGMAS`` from
  :func:`multitask.evaluate.oks_sigmas`; ``engine_opts`` (``KEY VALUE`` pairs) go on top, as on
  Detectron2's command line;
- the dataset is registered in the global keypoint layout (every annotation K keypoints: Detectron2
  needs every instance to have keypoints when they are on; objects of keypoint-less categories carry
  K zeros with v=0) with ``keypoint_names``, ``keypoint_flip_map`` and ``keypoint_connection_rules``
  from the schema; ``INPUT.MASK_FORMAT=bitmask`` when any object is RLE (brush); and
  ``MIN_KEYPOINTS_PER_IMAGE=0`` so images whose objects have no keypoints still train boxes and masks;
- ``init``: ``coco`` loads the model zoo's COCO keypoint checkpoint through Detectron2's checkpointer
  (downloaded once into fvcore/iopath's cache, ``$FVCORE_CACHE`` or ``~/.torch/iopath_cache``),
  ``imagenet`` the zoo config's ImageNet backbone, ``none`` nothing, or a local Detectron2 weights
  file. Class-dependent layers (box predictor, mask logits, keypoint logits) always start fresh;
- the checkpoint ``output_dir/last.pt`` is a multitask checkpoint (:mod:`multitask.engines`) whose
  ``model_config`` holds the full Detectron2 config as YAML; it loads with
  ``torch.load(weights_only=True)``, and Detectron2's own ``DetectionCheckpointer`` loads it too.

Detectron2's keypoint coordinates are continuous (its loader adds 0.5 to COCO's, its evaluator
subtracts it again): predictions are returned in the COCO convention of the input file, like the
torchvision engine's.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import re
import socket
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from combined_coco.dataset import read_combined_coco
from combined_coco.schema import Schema
from multitask import defaults
from multitask.checkpoint import FORMAT, read_payload, save_payload
from multitask.engines import EngineUnavailable, ProgressCallback, Sigmas, read_summary
from multitask.evaluate import global_ground_truth, oks_sigmas
from multitask.inference import DetectedInstance, InstanceMaker, check_rgb_image
from multitask.pretrained import (
    DOWNLOAD_TIMEOUT_S,
    OFFLINE_ALTERNATIVE,
    RANDOM_INIT,
    PretrainedWeightsUnavailable,
    TransferReport,
)
from multitask.train import TrainConfig, pick_device

try:
    import detectron2  # noqa: F401  (the build is optional: say how to get it)
except ImportError:
    raise EngineUnavailable(
        "the detectron2 engine needs Detectron2, which has no wheel: build it with"
        " `scripts/install.sh --with-detectron2` (or the Docker build argument WITH_DETECTRON2=1)"
    ) from None

from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultPredictor, DefaultTrainer, HookBase
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures.keypoints import heatmaps_to_keypoints
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from iopath.common.file_io import get_cache_dir

log = logging.getLogger(__name__)

NAME = "detectron2"
# backbone name -> model-zoo config (a zoo config path is accepted as a backbone too)
BACKBONES: dict[str, str] = {"resnet50_fpn": "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml"}
CLASS_DEPENDENT_PREFIXES: tuple[str, ...] = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_head.predictor.",
    "roi_heads.keypoint_head.score_lowres.",
)
_LOSS_PREFIX = "loss_"


# ---- config and dataset -----------------------------------------------------------------------
def zoo_config(backbone: str) -> str:
    """The model-zoo config of ``backbone`` (a name of :data:`BACKBONES` or a zoo config path)."""
    if backbone in BACKBONES:
        return BACKBONES[backbone]
    if backbone.endswith((".yaml", ".py")):
        return backbone
    raise ValueError(
        f"backbone {backbone!r} is not a detectron2 backbone; choose one of {list(BACKBONES)} or a model-zoo"
        " config such as COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x.yaml"
    )


def build_config(schema: Schema, config: TrainConfig, coco: dict | None = None) -> CfgNode:
    """Detectron2 config for a run of ``config`` on a dataset with ``schema`` (``coco``: its annotations,
    which decide ``INPUT.MASK_FORMAT``)."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config(config.backbone)))
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.KEYPOINT_ON = schema.num_keypoints > 0
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(schema.categories)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = schema.num_keypoints
    cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 0
    cfg.MODEL.DEVICE = str(pick_device(config.device))
    if config.rois_per_image:
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = config.rois_per_image
    cfg.TEST.KEYPOINT_OKS_SIGMAS = oks_sigmas(schema).tolist()
    rle = coco is not None and any(isinstance(a.get("segmentation"), dict) for a in coco["annotations"])
    cfg.INPUT.MASK_FORMAT = "bitmask" if rle else "polygon"
    cfg.INPUT.MIN_SIZE_TRAIN = (config.min_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = config.max_size
    cfg.INPUT.MIN_SIZE_TEST = config.min_size
    cfg.INPUT.MAX_SIZE_TEST = config.max_size
    cfg.INPUT.RANDOM_FLIP = "horizontal" if config.hflip_prob > 0 else "none"
    cfg.DATALOADER.NUM_WORKERS = 0  # images are read in the training process (see multitask.train)
    cfg.SOLVER.IMS_PER_BATCH = config.batch_size
    cfg.SOLVER.BASE_LR = config.lr
    cfg.SOLVER.MOMENTUM = config.momentum
    cfg.SOLVER.WEIGHT_DECAY = config.weight_decay
    cfg.SOLVER.WARMUP_ITERS = config.warmup_steps
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = bool(config.clip_grad_norm)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = float(config.clip_grad_norm or 1.0)
    cfg.SOLVER.CHECKPOINT_PERIOD = config.checkpoint_every
    cfg.SOLVER.AMP.ENABLED = config.amp and cfg.MODEL.DEVICE.startswith("cuda")
    cfg.SEED = config.seed
    cfg.OUTPUT_DIR = config.output_dir
    if config.engine_opts:
        cfg.merge_from_list(list(config.engine_opts))
    return cfg


def schedule(cfg: CfgNode, config: TrainConfig, total: int) -> None:
    """Steps and lr decays (``lr_decay_at`` fractions of the run) for a run of ``total`` steps."""
    cfg.SOLVER.MAX_ITER = total
    cfg.SOLVER.STEPS = tuple(sorted({int(f * total) for f in config.lr_decay_at if 0 < int(f * total) < total}))
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, total)


@contextlib.contextmanager
def registered(coco: dict, schema: Schema, image_root: str | Path, folder: Path) -> Iterator[str]:
    """``coco`` registered as a Detectron2 dataset (``register_coco_instances``) for the duration; yields its name.

    The file is written to ``folder`` in the global keypoint layout with ``num_keypoints`` recomputed,
    and the metadata carries the schema's keypoint names, flip map and skeleton.
    """
    name = f"lsmt_{uuid.uuid4().hex[:12]}"
    json_file = folder / f"{name}.json"
    json_file.write_text(json.dumps(global_ground_truth(coco, schema)))
    names = schema.keypoint_names
    register_coco_instances(name, {}, str(json_file), str(image_root))
    metadata = MetadataCatalog.get(name)
    metadata.set(thing_classes=[c.name for c in sorted(schema.categories, key=lambda c: c.id)])
    if names:
        metadata.set(
            keypoint_names=list(names),
            keypoint_flip_map=[(names[a], names[b]) for a, b in schema.flip_pairs],
            keypoint_connection_rules=[(names[a], names[b], (0, 255, 0)) for a, b in schema.skeleton],
        )
    try:
        yield name
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def train_mapper(cfg: CfgNode, hflip_prob: float) -> DatasetMapper:
    """Detectron2's ``DatasetMapper`` with its resize and a horizontal flip of probability ``hflip_prob``
    (keypoints swapped by the metadata's ``keypoint_flip_map``)."""
    augmentations: list[T.Augmentation] = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if hflip_prob > 0:
        augmentations.append(T.RandomFlip(prob=hflip_prob, horizontal=True, vertical=False))
    return DatasetMapper(cfg, is_train=True, augmentations=augmentations)


# ---- training ---------------------------------------------------------------------------------
class _Progress(HookBase):
    """Reports ``(step, total, losses)`` after every step, losses named like the torchvision engine's."""

    def __init__(self, on_progress: ProgressCallback) -> None:
        self.on_progress = on_progress

    def after_step(self) -> None:
        latest = self.trainer.storage.latest()
        losses = {"loss": float(latest["total_loss"][0])}
        losses |= {k.removeprefix(_LOSS_PREFIX): float(v) for k, (v, _) in latest.items() if k.startswith(_LOSS_PREFIX)}
        self.on_progress(self.trainer.iter + 1, self.trainer.max_iter, losses)


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with the flip probability of the config and no TensorBoard writer."""

    def __init__(self, cfg: CfgNode, hflip_prob: float = 0.5) -> None:
        self.hflip_prob = hflip_prob  # read by build_train_loader inside DefaultTrainer.__init__
        super().__init__(cfg)

    def build_train_loader(self, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=train_mapper(cfg, self.hflip_prob))

    def build_writers(self) -> list:
        return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]


def check(config: TrainConfig) -> None:
    zoo_config(config.backbone)
    if len(config.engine_opts) % 2:
        raise ValueError(f"engine_opts {config.engine_opts}: Detectron2 config overrides come as KEY VALUE pairs")


def train(config: TrainConfig, on_progress: ProgressCallback | None = None) -> Path:
    """Train with Detectron2's trainer; returns ``output_dir/last.pt``. ``resume: true`` continues from
    Detectron2's ``last_checkpoint`` in ``output_dir``; a path resumes from that Detectron2 checkpoint."""
    check(config)
    coco, schema = read_combined_coco(config.dataset)
    if not coco["images"]:
        raise ValueError(f"{config.dataset} has no images")
    total = config.steps
    if config.epochs is not None:
        total = math.ceil(config.epochs * len(coco["images"]) / config.batch_size)
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = build_config(schema, config, coco)
    schedule(cfg, config, total)
    seed_all_rng(config.seed)
    image_root = config.image_root or str(Path(config.dataset).parent)
    with tempfile.TemporaryDirectory(prefix="lsmt-d2-") as tmp, registered(coco, schema, image_root, Path(tmp)) as name:
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
        cfg.MODEL.WEIGHTS = ""  # the start is loaded below, so class-dependent layers can be kept fresh
        trainer = Trainer(cfg, config.hflip_prob)
        if on_progress is not None:
            trainer.register_hooks([_Progress(on_progress)])
        transfers: list[str]  # summaries of the transfer reports
        if config.resume is True and trainer.checkpointer.has_checkpoint():
            trainer.resume_or_load(resume=True)
            started_from, transfers = f"resumed {trainer.checkpointer.get_checkpoint_file()}", []
        elif isinstance(config.resume, str) and config.resume:
            if not Path(config.resume).exists():
                raise FileNotFoundError(f"resume checkpoint {config.resume} does not exist")
            trainer.checkpointer.load(config.resume)
            trainer.start_iter = trainer.iter + 1
            started_from, transfers = f"resumed {config.resume}", []
        else:
            started_from, reports = start_weights(trainer.model, config, schema)
            transfers = [report.summary() for report in reports]
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        trainer.train()
    cfg.DATASETS.TRAIN = ()
    (out_dir / "config.yaml").write_text(cfg.dump())
    training = {
        "run_id": run_id,
        "config": dataclasses.asdict(config),
        "started_from": started_from,
        "transfers": transfers,
    }
    version = f"multitask-detectron2-{config.backbone.replace('/', '_')}-{run_id}-step{total}"
    return save_payload(
        _payload(cfg, schema, trainer.model, config.backbone, version, total, training), out_dir / "last.pt"
    )


def _payload(
    cfg: CfgNode, schema: Schema, model: torch.nn.Module, backbone: str, version: str, step: int, training: dict
) -> dict[str, Any]:
    """A multitask checkpoint (plain values and tensors only) of a Detectron2 model and its config."""
    return {
        "format": FORMAT,
        "engine": NAME,
        "model_version": version,
        "schema": schema.to_dict(),
        "model_config": {"backbone": backbone, "config": cfg.dump()},
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "training": training,
    }


def random_checkpoint(
    schema: Schema, path: str | Path, backbone: str, min_size: int, max_size: int, seed: int = 0
) -> Path:
    cfg = build_config(schema, TrainConfig(backbone=backbone, min_size=min_size, max_size=max_size, device="cpu"))
    torch.manual_seed(seed)
    model = build_model(cfg)
    zero_residual_scales(model)
    return save_payload(_payload(cfg, schema, model, backbone, "random-init", 0, {}), path)


@torch.no_grad()
def zero_residual_scales(model: torch.nn.Module) -> None:
    """Zero the scale of each residual branch's last norm (as ``zero_init_residual`` does).

    A randomly initialized Detectron2 ResNet has frozen batch norm with identity statistics, so its
    activations grow block after block until class scores saturate and keypoint heatmaps overflow
    (NaN); trained weights never behave like that. Random weights stand in for trained ones (tests,
    benchmarks) only after this.
    """
    for name, module in model.named_modules():
        if re.fullmatch(r"backbone\.bottom_up\.res\d\.\d+\.conv3", name):
            module.norm.weight.zero_()


def start_weights(model: torch.nn.Module, config: TrainConfig, schema: Schema) -> tuple[str, list[TransferReport]]:
    """Load the start of a new run into ``model``; returns what it started from and the transfer reports.

    ``finetune_from`` with the same engine, schema and backbone: every tensor of it. Otherwise ``init``
    first, then the tensors of ``finetune_from`` (if any) that still fit, class-dependent layers fresh.
    """
    source = config.finetune_from
    previous = read_summary(source) if source else None
    if source and previous is not None and previous.continued_by(NAME, schema, config.backbone):
        report = transfer(model, _plain_state(source), f"checkpoint {source}", True)
        return f"checkpoint {source}", [report]
    reports = [] if config.init == RANDOM_INIT else [transfer(model, *_init_weights(config))]
    if not source or previous is None:
        return config.init, reports
    reports.append(transfer(model, _plain_state(source), f"checkpoint {source}"))
    return f"{config.init} + fitting tensors of checkpoint {source}", reports


def _init_weights(config: TrainConfig) -> tuple[dict, str]:
    """``(checkpoint dict, source name)`` for ``init``, read by Detectron2's checkpointer (URLs through
    fvcore/iopath's cache: downloaded once, then reused)."""
    if config.init == "coco":
        url = model_zoo.get_checkpoint_url(zoo_config(config.backbone))
    elif config.init == "imagenet":
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(zoo_config(config.backbone)))
        url = cfg.MODEL.WEIGHTS
    elif Path(config.init).is_file():
        return _read_weights(config.init), config.init
    else:
        raise FileNotFoundError(
            f"init {config.init!r} is neither 'none', 'coco', 'imagenet' nor an existing Detectron2 weights file"
        )
    return _download(url), f"{config.init}: {url.rsplit('/', 1)[-1]}"


def _read_weights(path: str) -> dict:
    checkpointer = DetectionCheckpointer(torch.nn.Module())
    checkpointer._parsed_url_during_load = urlparse(path)  # what DetectionCheckpointer.load sets before _load_file
    return checkpointer._load_file(checkpointer.path_manager.get_local_path(path))


def _download(url: str) -> dict:
    """The checkpoint at ``url`` from iopath's cache, downloaded once; a one-line
    :class:`PretrainedWeightsUnavailable` (never a hang) when that fails."""
    https = url.replace("detectron2://", "https://dl.fbaipublicfiles.com/detectron2/")
    folder = Path(get_cache_dir()) / os.path.dirname(urlparse(https).path.lstrip("/"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return _read_weights(url)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())[:200] or type(exc).__name__
        raise PretrainedWeightsUnavailable(
            f"pretrained weights {https.rsplit('/', 1)[-1]} could not be loaded ({reason}): download {https} into"
            f" {folder} (FVCORE_CACHE={get_cache_dir()}), {OFFLINE_ALTERNATIVE}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _plain_state(checkpoint: str | Path) -> dict:
    """A multitask checkpoint's tensors, loaded with ``weights_only=True``."""
    return {"model": read_payload(checkpoint)["model"]}


def transfer(
    model: torch.nn.Module, checkpoint: dict, source: str, keep_class_dependent: bool = False
) -> TransferReport:
    """Load ``checkpoint["model"]`` into ``model`` with Detectron2's checkpointer (name heuristics for
    Caffe2-era files, shape mismatches skipped); class-dependent layers are dropped first unless kept."""
    report = TransferReport(source)
    state = dict(checkpoint["model"])
    if not keep_class_dependent:
        report.class_dependent = sorted(k for k in state if k.startswith(CLASS_DEPENDENT_PREFIXES))
        state = {k: v for k, v in state.items() if k not in report.class_dependent}
    own = set(model.state_dict())
    incompatible = DetectionCheckpointer(model)._load_model({**checkpoint, "model": state})
    report.shape_mismatch = sorted(k for k, *_ in incompatible.incorrect_shapes)
    report.not_in_model = sorted(incompatible.unexpected_keys)
    missing = set(incompatible.missing_keys)
    report.loaded = sorted(own - missing)
    report.not_in_file = sorted(missing - set(report.shape_mismatch) - set(report.class_dependent))
    log.info(report.summary())
    return report


# ---- loading, prediction, evaluation ----------------------------------------------------------
@dataclasses.dataclass
class Loaded:
    """A detectron2-engine checkpoint read with ``torch.load(weights_only=True)``, its model not built yet."""

    cfg: CfgNode
    state_dict: dict[str, torch.Tensor]
    schema: Schema
    model_version: str

    def build(self) -> torch.nn.Module:
        """Detectron2's model for ``cfg`` (thresholds as set on it now) with these weights, in eval mode."""
        model = build_model(self.cfg)
        model.load_state_dict(self.state_dict)
        return model.eval()


def read_checkpoint(checkpoint: str | Path, device: str = "cpu") -> Loaded:
    data = read_payload(checkpoint)
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("engine") != NAME:
        raise ValueError(f"{checkpoint} is not a detectron2-engine checkpoint")
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(data["model_config"]["config"]))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    return Loaded(cfg, data["model"], Schema.from_dict(data["schema"]), data["model_version"])


class Detectron2Predictor:
    """Detectron2's ``DefaultPredictor`` (its resize and input format) returning :class:`DetectedInstance` lists.

    Options as :class:`multitask.inference.TorchvisionPredictor`: ``score_threshold`` and ``max_detections`` act
    inside the ROI heads (``SCORE_THRESH_TEST``, ``DETECTIONS_PER_IMAGE``), ``mask_threshold`` when
    pasting masks; keypoint scores are heatmap logits, as in the torchvision engine.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        score_threshold: float = defaults.SCORE_THRESHOLD,
        mask_threshold: float = defaults.MASK_THRESHOLD,
        keypoint_threshold: float | None = None,
        polygon_tolerance: float = 0.5,
        batch_size: int = 2,
        max_detections: int | None = None,
    ) -> None:
        loaded = read_checkpoint(checkpoint, device)
        cfg, self.schema, self.model_version = loaded.cfg, loaded.schema, loaded.model_version
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
        if max_detections is not None:
            cfg.TEST.DETECTIONS_PER_IMAGE = min(cfg.TEST.DETECTIONS_PER_IMAGE, max_detections)
        with _quiet_checkpointer():
            self._d2 = DefaultPredictor(cfg)  # builds a model with the thresholds above (no weights: WEIGHTS="")
        self._d2.model.load_state_dict(loaded.state_dict)
        self.mask_threshold, self.batch_size = mask_threshold, batch_size
        self._category_ids = sorted(c.id for c in self.schema.categories)  # Detectron2's contiguous class order
        self._make_instance = InstanceMaker(self.schema, keypoint_threshold, polygon_tolerance)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[list[DetectedInstance]]:
        """``images``: HxWx3 uint8 RGB arrays (any sizes); one list of instances per image."""
        results: list[list[DetectedInstance]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            inputs = [self._input(image) for image in chunk]
            outputs = self._d2.model.inference(inputs, do_postprocess=False)
            for image, output in zip(chunk, outputs):
                results.append(self._instances(output, *image.shape[:2]))
        return results

    def _input(self, image: np.ndarray) -> dict:
        check_rgb_image(image)
        pixels = image if self._d2.input_format == "RGB" else image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self._d2.aug.get_transform(pixels).apply_image(pixels)
        tensor = torch.as_tensor(np.ascontiguousarray(resized).transpose(2, 0, 1).astype("float32"))
        return {"image": tensor.to(self._d2.cfg.MODEL.DEVICE), "height": height, "width": width}

    def _instances(self, output: Any, height: int, width: int) -> list[DetectedInstance]:
        k = self.schema.num_keypoints
        logits = None
        if output.has("pred_keypoint_heatmaps") and len(output):
            logits = (
                heatmaps_to_keypoints(output.pred_keypoint_heatmaps, output.pred_boxes.tensor)[:, :, 2].cpu().numpy()
            )
        out = detector_postprocess(output, height, width, self.mask_threshold).to("cpu")
        instances = []
        for i in range(len(out)):
            keypoints = np.zeros((k, 3), np.float32)
            if logits is not None:
                keypoints[:, :2] = out.pred_keypoints[i, :, :2].numpy() - 0.5  # continuous -> COCO convention
                keypoints[:, 2] = logits[i]
            category_id = self._category_ids[int(out.pred_classes[i])]
            mask = out.pred_masks[i].numpy().astype(bool)
            instances.append(
                self._make_instance(
                    category_id, float(out.scores[i]), out.pred_boxes.tensor[i].tolist(), mask, keypoints
                )
            )
        return instances


@contextlib.contextmanager
def _quiet_checkpointer() -> Iterator[None]:
    """DefaultPredictor warns that it found no checkpoint: the weights are loaded right after, from ours."""
    logger = logging.getLogger("fvcore.common.checkpoint")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_predictor(
    checkpoint: str | Path, device: str = "cpu", score_threshold: float = defaults.SCORE_THRESHOLD, **options: Any
) -> Detectron2Predictor:
    return Detectron2Predictor(checkpoint, device, score_threshold, **options)


def evaluate(
    checkpoint: str | Path,
    dataset: str | Path,
    image_root: str | Path | None = None,
    sigmas: Sigmas = None,
    device: str = "cpu",
    score_threshold: float = defaults.BOX_SCORE_FLOOR,
    max_detections: int | None = None,
) -> dict:
    """Detectron2's ``COCOEvaluator`` on ``dataset``; AP as fractions (like the torchvision engine), ``None``
    where Detectron2 reports NaN (no ground truth of that size), per-class ``AP-<name>`` kept."""
    loaded = read_checkpoint(checkpoint, device)
    cfg, schema = loaded.cfg, loaded.schema
    coco, data_schema = read_combined_coco(dataset)
    if data_schema != schema:
        raise ValueError(f"{dataset}'s categories/keypoints differ from those the checkpoint was trained on")
    sigma = oks_sigmas(schema, sigmas)
    cfg.TEST.KEYPOINT_OKS_SIGMAS = sigma.tolist()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
    if max_detections is not None:
        cfg.TEST.DETECTIONS_PER_IMAGE = min(cfg.TEST.DETECTIONS_PER_IMAGE, max_detections)
    model = loaded.build()
    root = image_root or Path(dataset).parent
    tasks = ("bbox", "segm") + (("keypoints",) if schema.num_keypoints else ())
    with tempfile.TemporaryDirectory(prefix="lsmt-d2-eval-") as tmp, registered(coco, schema, root, Path(tmp)) as name:
        evaluator = COCOEvaluator(
            name, tasks=tasks, distributed=False, output_dir=None, kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS
        )
        cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (name,)  # DatasetMapper reads the flip map from DATASETS.TRAIN
        loader = build_detection_test_loader(cfg, name)
        raw = inference_on_dataset(model, loader, evaluator)
    results: dict = {"oks_sigmas": dict(zip(schema.keypoint_names, sigma.tolist()))}
    for task in tasks:
        metrics = copy.deepcopy(raw.get(task)) or {}
        results[task] = {k: (v / 100.0 if math.isfinite(v) else None) for k, v in metrics.items()}
        if not metrics:  # no detections at all: Detectron2 returns nothing for the task
            results[task] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    results["model_version"] = loaded.model_version
    return results
