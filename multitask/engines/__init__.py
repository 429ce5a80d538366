"""Training engines behind one interface: the torchvision multi-task model and Detectron2.

An engine trains from a combined COCO file + its schema + a :class:`~multitask.train.TrainConfig`
to a checkpoint, evaluates a checkpoint (COCO AP for bbox, segm and keypoints, with the OKS sigmas of
:func:`multitask.evaluate.oks_sigmas`) and loads a checkpoint into a predictor that returns
:class:`multitask.inference.DetectedInstance` lists. Callers (the ML backend, ``python -m multitask``, the
benchmarks) choose the engine by name when training (``engine`` in the training config,
``TRAIN_ENGINE`` in the backend) and by what the checkpoint says it is when loading; nothing outside
an engine's own module knows anything engine-specific.

This module imports neither torch nor any engine: the backend server reads engine names and default
backbones from it before anything heavy is loaded, and Detectron2 (an optional, source-built
dependency) is imported only when its engine is used.

Checkpoints of both engines are one file format (:data:`multitask.checkpoint.FORMAT`), loadable with
``torch.load(weights_only=True)``: ``engine`` (absent: torchvision, the files written before engines
existed), ``model_version``, ``schema``, ``model_config`` (with ``backbone``), ``model`` (the state
dict), ``step``, ``training`` (with ``transfers``, what the run's start loaded) and ``taught`` (what the
training data taught the run, :mod:`multitask.taught`; absent in files written before it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from multitask import defaults

if TYPE_CHECKING:
    import numpy as np

    from combined_coco.schema import Schema
    from multitask.inference import DetectedInstance
    from multitask.train import TrainConfig

DEFAULT_ENGINE = "torchvision"
# name -> (module, default backbone). Modules are imported on first use.
_ENGINES: dict[str, tuple[str, str]] = {
    "torchvision": ("multitask.engines.torchvision", defaults.BACKBONE),
    "detectron2": ("multitask.engines.detectron2", "resnet50_fpn"),
}
ENGINE_NAMES: tuple[str, ...] = tuple(_ENGINES)

ProgressCallback = Callable[[int, int, dict[str, float]], None]
Sigmas = float | Sequence[float] | Mapping[str, float] | None


class EngineUnavailable(RuntimeError):
    """The engine's library is not installed; the message says in one line how to install it."""


class Predictor(Protocol):
    """A checkpoint loaded for inference."""

    schema: Schema
    model_version: str

    def predict(self, images: Sequence[np.ndarray]) -> list[list[DetectedInstance]]:
        """``images``: HxWx3 uint8 RGB arrays; one list of instances per image."""
        ...


class Engine(Protocol):
    """What every engine module provides (as module-level functions)."""

    def check(self, config: TrainConfig) -> None:
        """ValueError naming the setting when ``config`` cannot be trained by this engine (before any work)."""
        ...

    def train(self, config: TrainConfig, on_progress: ProgressCallback | None = None) -> Path:
        """Train (or resume) per ``config``; returns the checkpoint path (``output_dir/last.pt``)."""
        ...

    def evaluate(
        self,
        checkpoint: str | Path,
        dataset: str | Path,
        image_root: str | Path | None = None,
        sigmas: Sigmas = None,
        device: str = "cpu",
        score_threshold: float = defaults.BOX_SCORE_FLOOR,
        max_detections: int | None = None,
    ) -> dict:
        """``{iou_type: {metric: value in [0, 1] or None}, "oks_sigmas": {...}, "model_version": ...}``.

        ``max_detections`` caps detections per image before the mask and keypoint heads (None: the
        model's own cap, 100), which is most of the scoring time of a barely trained model."""
        ...

    def random_checkpoint(
        self, schema: Schema, path: str | Path, backbone: str, min_size: int, max_size: int, seed: int = 0
    ) -> Path:
        """An untrained (randomly initialized) checkpoint: the same loading and inference cost as a trained
        one, for benchmarks and tests that check wiring, not accuracy."""
        ...

    def load_predictor(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        score_threshold: float = defaults.SCORE_THRESHOLD,
        **options: Any,
    ) -> Predictor:
        """The checkpoint ready for :meth:`Predictor.predict`; ``options``: ``mask_threshold``,
        ``keypoint_threshold``, ``max_detections``."""
        ...


def check_engine(name: str) -> str:
    """``name`` if it is a known engine, else a ValueError listing them."""
    if name not in _ENGINES:
        raise ValueError(f"engine {name!r} unknown; choose one of {list(ENGINE_NAMES)}")
    return name


def default_backbone(engine: str) -> str:
    """The backbone an engine trains when none is chosen."""
    return _ENGINES[check_engine(engine)][1]


def get(name: str) -> Engine:
    """The engine module; :class:`EngineUnavailable` when its library is not installed."""
    module: Any = importlib.import_module(_ENGINES[check_engine(name)][0])
    return module


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint says about itself, read without building its model."""

    engine: str
    model_version: str
    schema: Schema
    backbone: str
    step: int
    transfers: list[str] = field(default_factory=list)
    taught: dict | None = None  # multitask.taught.Taught.to_dict(); None in checkpoints written before it

    def continued_by(self, engine: str, schema: Schema, backbone: str) -> bool:
        """Whether a run of ``engine``/``backbone`` on ``schema`` can start from every tensor of this checkpoint."""
        return self.engine == engine and self.schema == schema and self.backbone == backbone


def read_summary(checkpoint: str | Path) -> CheckpointSummary:
    """Engine, version, schema, backbone and transfers of a checkpoint of any engine.

    The file is memory-mapped, so the tensors are not read. ValueError for a file that is not a
    multitask checkpoint or would need more than plain values to load.
    """
    import pickle

    from combined_coco.schema import Schema
    from multitask.checkpoint import FORMAT, read_payload

    path = Path(checkpoint)
    try:
        data = read_payload(path, mmap=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        raise ValueError(f"{path} is not a loadable multitask checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a multitask checkpoint (train one with `python -m multitask train`)")
    return CheckpointSummary(
        engine=data.get("engine", DEFAULT_ENGINE),
        model_version=data["model_version"],
        schema=Schema.from_dict(data["schema"]),
        backbone=data["model_config"]["backbone"],
        step=data["step"],
        transfers=list(data.get("training", {}).get("transfers", [])),
        taught=data.get("taught") if isinstance(data.get("taught"), dict) else None,
    )


def for_checkpoint(checkpoint: str | Path) -> Engine:
    """The engine that wrote ``checkpoint``."""
    return get(read_summary(checkpoint).engine)


def train(config: TrainConfig, on_progress: ProgressCallback | None = None) -> Path:
    """Train with ``config.engine``."""
    return get(config.engine).train(config, on_progress)


def evaluate(checkpoint: str | Path, dataset: str | Path, **options: Any) -> dict:
    """COCO AP of ``checkpoint`` on ``dataset`` by the engine that wrote it (options: see :meth:`Engine.evaluate`)."""
    return for_checkpoint(checkpoint).evaluate(checkpoint, dataset, **options)


def load_predictor(checkpoint: str | Path, **options: Any) -> Predictor:
    """``checkpoint`` loaded by the engine that wrote it (options: see :meth:`Engine.load_predictor`)."""
    return for_checkpoint(checkpoint).load_predictor(checkpoint, **options)
