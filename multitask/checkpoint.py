"""Checkpoints that are self-describing: weights + architecture + schema + model version.

The ML backend loads a checkpoint without any other file, so the schema (``Schema.to_dict()``) and the
:class:`~multitask.model.ModelConfig` travel inside it; ``model_version`` is the string shown on
Label Studio predictions. Writes are atomic (:func:`combined_coco.dataset.write_atomic`) so a crash
or a concurrent reader never sees half a file.

Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain Python values
only, so a file dropped into a shared model volume cannot run code when the ML backend loads it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from combined_coco.dataset import write_atomic
from combined_coco.schema import Schema
from multitask.model import ModelConfig, build_model
from multitask.taught import Taught

FORMAT = "ls-multitask-checkpoint/1"


@dataclass
class Checkpoint:
    """Contents of a checkpoint file. ``training`` holds optimizer/scheduler/RNG state for resuming."""

    model_version: str
    schema: Schema
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    step: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    taught: Taught | None = None  # recorded after training (multitask.taught); None in older files

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with these weights, in eval mode."""
        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    payload = {
        "format": FORMAT,
        "model_version": checkpoint.model_version,
        "schema": checkpoint.schema.to_dict(),
        "model_config": checkpoint.model_config.to_dict(),
        "model": checkpoint.state_dict,
        "step": checkpoint.step,
        "training": checkpoint.training,
    }
    if checkpoint.taught is not None:
        payload["taught"] = checkpoint.taught.to_dict()
    return save_payload(payload, path)


def save_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` of a checkpoint dict (any engine's, see ``multitask.engines``), atomically."""
    return write_atomic(path, lambda f: torch.save(payload, f))


# Checkpoints written before the numpy RNG state was stored as lists hold one uint32 numpy array;
# rebuilding an array runs no code, so these (and only these) globals are allowed besides torch's own.
# numpy's stubs omit its private ``_core`` package, the module these pickles name.
_OLD_CHECKPOINT_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]  # type: ignore[attr-defined]


def read_payload(path: str | Path, mmap: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """The raw checkpoint dict of any engine, loaded with ``torch.load(weights_only=True)`` (``mmap``:
    tensors are mapped, not read, for callers that only look at the metadata).

    A file holding anything but tensors and plain values is refused with :class:`ValueError`: a shared
    model folder must not mean code execution.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_OLD_CHECKPOINT_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} holds objects other than tensors and plain values, so it is not loaded (loading it could"
            f" run code); re-train to get a plain checkpoint ({str(exc).splitlines()[-1][:200]})"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    data = read_payload(path, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a multitask checkpoint (train one with `python -m multitask train`); for"
            " pretrained COCO/ImageNet weights set init (coco, imagenet or a weights file) in the training config"
        )
    return Checkpoint(
        model_version=data["model_version"],
        schema=Schema.from_dict(data["schema"]),
        model_config=ModelConfig(**data["model_config"]),
        state_dict=data["model"],
        step=data["step"],
        training=data["training"],
        taught=Taught.from_dict(data.get("taught")),
    )
