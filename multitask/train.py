"""Train the multi-task model on a combined COCO file: function, YAML config, CLI.

``train(config)`` is what the backend's RQ job calls; it reports through ``on_progress(step, total,
losses)`` and returns the checkpoint path. The run is seeded (data order, flips, init) and resumable:
the checkpoint holds optimizer and RNG state, and the data order of step ``s`` is a function of the
seed and ``s`` alone, so an interrupted and resumed run sees the same batches as an uninterrupted one.
Images are read in the training process itself: on a 2-core CPU the network, not image decoding, is
the bottleneck, and one process keeps the flip RNG part of the resumable state.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from combined_coco.schema import Schema
from multitask import defaults
from multitask.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from multitask.dataset import CombinedCocoDataset, collate
from multitask.model import ModelConfig, build_model
from multitask.pretrained import RANDOM_INIT, TransferReport, initialize, transfer_weights

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, dict[str, float]], None]


@dataclass
class TrainConfig:
    """Training settings; every field can be set in the YAML file (``train --write-config`` dumps them)."""

    dataset: str = ""  # combined COCO json
    image_root: str | None = None  # default: the json's folder
    output_dir: str = "runs/multitask"
    backbone: str = defaults.BACKBONE
    steps: int = 1000
    epochs: float | None = None  # overrides steps when set: ceil(epochs * images / batch_size)
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LEARNING_RATE
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    lr_decay_at: list[float] = field(default_factory=lambda: [0.7, 0.9])  # fractions of steps, x0.1 each
    clip_grad_norm: float | None = 10.0
    min_size: int = defaults.MIN_SIZE
    max_size: int = defaults.MAX_SIZE
    rois_per_image: int | None = None  # sampled RoIs per image (a quarter positive); None: backbone default
    hflip_prob: float = 0.5
    seed: int = defaults.SEED
    init: str = defaults.INIT  # coco | imagenet | none | path to a local weights file or multi-task checkpoint
    finetune_from: str | None = None  # a multi-task checkpoint to continue from (see start_model)
    resume: bool | str = False  # True: output_dir/last.pt if it exists; a path: that checkpoint
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision, CUDA only
    checkpoint_every: int = 500
    engine: str = "torchvision"  # torchvision | detectron2 (multitask.engines)
    engine_opts: list[str] = field(default_factory=list)  # detectron2: config overrides KEY VALUE KEY VALUE ...

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(num_images: int, batch_size: int, seed: int, start_step: int) -> Iterator[list[int]]:
    """Batches of image indices from ``start_step`` on: epoch ``e`` is a permutation seeded by ``seed + e``
    (the last batch of an epoch may be smaller; a dataset smaller than a batch is one batch)."""
    per_epoch = math.ceil(num_images / batch_size)
    for step in itertools.count(start_step):
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        yield order[offset * batch_size : (offset + 1) * batch_size]


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """Linear warmup, then x0.1 at each ``lr_decay_at`` fraction of the run (Detectron2's schedule)."""
    warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    decays = sum(step >= int(f * total) for f in config.lr_decay_at)
    return config.lr * warmup * 0.1**decays


def train(config: TrainConfig, on_progress: ProgressCallback | None = None) -> Path:
    """Train (or resume) and return the path of the last checkpoint (``output_dir/last.pt``)."""
    device = pick_device(config.device)
    seed_everything(config.seed)
    dataset = CombinedCocoDataset(config.dataset, config.image_root, hflip_prob=config.hflip_prob)
    if len(dataset) == 0:
        raise ValueError(f"{config.dataset} has no images")
    total = config.steps
    if config.epochs is not None:
        total = math.ceil(config.epochs * len(dataset) / config.batch_size)
    out_dir = Path(config.output_dir)
    last = out_dir / "last.pt"
    resume_from = _resume_path(config.resume, last)

    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state.schema != dataset.schema:
            raise ValueError(f"cannot resume {resume_from}: its schema differs from {config.dataset}'s")
        model_config, run_id, start = state.model_config, state.training["run_id"], state.step
        model = build_model(model_config)
        model.load_state_dict(state.state_dict)
        started_from, transfers = state.training.get("started_from"), state.training.get("transfers", [])
    else:
        model_config, model, started_from, reports = start_model(config, dataset.schema)
        transfers = [report.summary() for report in reports]
        run_id, start = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), 0
    model.to(device).train()

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if resume_from is not None:
        optimizer.load_state_dict(state.training["optimizer"])
        scaler.load_state_dict(state.training["scaler"])
        _restore_rng(state.training["rng"])

    def save(step: int) -> Path:
        training = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "run_id": run_id,
            "config": dataclasses.asdict(config),
            "started_from": started_from,
            "transfers": transfers,
        }
        version = f"multitask-{model_config.backbone}-{run_id}-step{step}"
        return save_checkpoint(
            Checkpoint(version, dataset.schema, model_config, model.state_dict(), step, training), last
        )

    batches = batch_indices(len(dataset), config.batch_size, config.seed, start)
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    for step in range(start, total):
        images, targets = collate([dataset[i] for i in next(batches)])
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step, total)
        with torch.autocast(device.type, enabled=use_amp):
            loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"step {step}: loss is {loss.item()} ({ {k: v.item() for k, v in loss_dict.items()} });"
                " lower lr or raise warmup_steps"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()

        losses = {"loss": loss.item(), **{k.removeprefix("loss_"): v.item() for k, v in loss_dict.items()}}
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        if on_progress is not None:
            on_progress(step + 1, total, losses)
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < total:
            save(step + 1)
    bar.close()
    return save(total)


def continues(previous: Checkpoint, schema: Schema, backbone: str) -> bool:
    """Whether a run can start from every tensor of ``previous``: same classes, keypoints and backbone."""
    return previous.schema == schema and previous.model_config.backbone == backbone


def start_model(config: TrainConfig, schema: Schema) -> tuple[ModelConfig, torch.nn.Module, str, list[TransferReport]]:
    """The model a new run starts from: architecture, weights, and what they came from.

    With ``finetune_from`` and the same classes, keypoints and backbone, every tensor of that
    checkpoint loads, class-dependent layers included (their rows still mean the same labels), and
    ``started_from`` is ``checkpoint <path>``. Otherwise ``init`` loads first and the checkpoint's
    tensors that still fit go on top of it; its class-dependent layers stay fresh, and the returned
    reports (also logged) say what loaded.
    """
    previous = load_checkpoint(config.finetune_from) if config.finetune_from else None
    sizes: dict[str, Any] = {
        "min_size": config.min_size,
        "max_size": config.max_size,
        "rois_per_image": config.rois_per_image,
    }
    if previous is not None and continues(previous, schema, config.backbone):
        model_config = dataclasses.replace(previous.model_config, **sizes)
        model = build_model(model_config)
        model.load_state_dict(previous.state_dict)
        log.info("starting from every tensor of %s (same classes and keypoints)", config.finetune_from)
        return model_config, model, f"checkpoint {config.finetune_from}", []
    frozen_bn = config.init != RANDOM_INIT or (previous is not None and previous.model_config.frozen_bn)
    model_config = ModelConfig.for_schema(schema, backbone=config.backbone, frozen_bn=frozen_bn, **sizes)
    model = build_model(model_config)
    reports = initialize(model, config.init, config.backbone)
    if previous is None:
        return model_config, model, config.init, reports
    log.info(
        "classes, keypoints or backbone differ from %s: starting from %s plus the tensors of it that still fit",
        config.finetune_from,
        config.init,
    )
    reports.append(transfer_weights(model, previous.state_dict, f"checkpoint {config.finetune_from}"))
    return model_config, model, f"{config.init} + fitting tensors of checkpoint {config.finetune_from}", reports


def _resume_path(resume: bool | str, last: Path) -> Path | None:
    if resume is True:
        return last if last.exists() else None
    if isinstance(resume, str) and resume:
        if not Path(resume).exists():
            raise FileNotFoundError(f"resume checkpoint {resume} does not exist")
        return Path(resume)
    return None


def _rng_state() -> dict:
    """Tensors and plain values only, so the checkpoint loads with ``torch.load(weights_only=True)``."""
    legacy = np.random.get_state()
    assert isinstance(legacy, tuple), "get_state() of the global MT19937 generator is the legacy tuple"
    name, keys, pos, has_gauss, cached = legacy
    numpy_state = (name, keys.tolist(), pos, has_gauss, cached)
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- CLI --------------------------------------------------------------------------------------
EXAMPLE = """example:
  python -m multitask train --write-config cfg.yaml      # defaults, then edit dataset/output_dir
  python -m multitask train --config cfg.yaml --set steps=300 --set device=cpu
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML training config (fields of TrainConfig)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (YAML value)"
    )
    parser.add_argument("--write-config", type=Path, metavar="PATH", help="write the default config and exit")


def run(args: argparse.Namespace) -> None:
    if args.write_config:
        args.write_config.write_text(TrainConfig().to_yaml())
        print(f"wrote {args.write_config}")
        return
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in {f.name for f in dataclasses.fields(TrainConfig)}:
            raise SystemExit(f"--set {item}: unknown key {key!r}")
        setattr(config, key, yaml.safe_load(value))
    if not config.dataset:
        raise SystemExit("no dataset: set `dataset:` in the config or pass --set dataset=PATH")
    from multitask import engines

    try:
        engine = engines.get(config.engine)
        engine.check(config)
    except (ValueError, engines.EngineUnavailable) as exc:
        raise SystemExit(str(exc)) from None
    print(f"checkpoint: {engine.train(config)}")
