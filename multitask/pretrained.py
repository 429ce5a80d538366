"""Start the multi-task model from local weight files: a COCO detection checkpoint or an ImageNet backbone.

A COCO Mask R-CNN / Keypoint R-CNN checkpoint is transferred tensor by tensor where name and shape
match; the class-dependent layers (box classifier/regressor, mask logits, keypoint predictor) are
always left at their fresh initialization because their rows mean COCO's classes and keypoints, not
the project's.

The published torchvision COCO checkpoints predate torchvision's renaming of the FPN, RPN and mask
head modules. torchvision renames them inside ``load_state_dict`` (version hooks), but a transfer that
builds its own filtered dict never reaches those hooks, and FPN, RPN conv and mask head would stay
random without any error. :func:`rename_legacy_keys` applies the same renaming up front.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

_LEGACY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    (re.compile(r"^(rpn\.head\.conv)\.(weight|bias)$"), r"\1.0.0.\2"),
)
_LEGACY_MASK_HEAD = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")

# Layers whose shape or meaning depends on the dataset's classes or keypoints.
CLASS_DEPENDENT_PREFIXES: tuple[str, ...] = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
    "roi_heads.keypoint_predictor.",
)


@dataclass
class TransferReport:
    """What a weight transfer did, tensor names by outcome (logged, and returned for tests/UIs)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    class_dependent: list[str] = field(default_factory=list)  # present in the file, re-initialized
    shape_mismatch: list[str] = field(default_factory=list)
    not_in_model: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, re-initialized {len(self.class_dependent)}"
            f" class-dependent, {len(self.shape_mismatch)} shape mismatches, {len(self.not_in_model)} unused,"
            f" {len(self.not_in_file)} model tensors left at init"
        )


def rename_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision's pre-0.13 FPN/RPN/mask-head names onto the current module names.

    ``backbone.fpn.inner_blocks.0.weight -> backbone.fpn.inner_blocks.0.0.weight``,
    ``rpn.head.conv.weight -> rpn.head.conv.0.0.weight``,
    ``roi_heads.mask_head.mask_fcn1.weight -> roi_heads.mask_head.0.0.weight``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, replacement in _LEGACY_PATTERNS:
            new = pattern.sub(replacement, new)
        match = _LEGACY_MASK_HEAD.match(new)
        if match:
            new = f"roi_heads.mask_head.{int(match.group(1)) - 1}.0.{match.group(2)}"
        out[new] = value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file, unwrapping ``{"model": ...}`` / ``{"state_dict": ...}``."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(data).__name__}")
    return {k.removeprefix("module."): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def transfer_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> TransferReport:
    """Copy every tensor whose (renamed) name and shape match, except class-dependent layers."""
    report = TransferReport(source)
    own = model.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for key, value in rename_legacy_keys(state_dict).items():
        if key not in own:
            report.not_in_model.append(key)
        elif key.startswith(CLASS_DEPENDENT_PREFIXES):
            report.class_dependent.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append(key)
        else:
            matched[key] = value
    model.load_state_dict(matched, strict=False)
    report.loaded = sorted(matched)
    report.not_in_file = sorted(set(own) - set(matched) - set(report.class_dependent))
    log.info(report.summary())
    return report


def load_backbone_weights(model: nn.Module, path: str | Path) -> TransferReport:
    """An ImageNet classification checkpoint (torchvision ``resnet50`` / ``mobilenet_v3_large``).

    ResNet names (``layer1.0.conv1.weight``) live under ``backbone.body.``; MobileNet's
    ``features.N.…`` become ``backbone.body.N.…`` because the FPN extractor wraps ``features`` itself.
    The classifier is reported as unused.
    """
    renamed = {
        "backbone.body." + key.removeprefix("features."): value for key, value in read_state_dict(path).items()
    }
    return transfer_weights(model, renamed, str(path))


def load_detection_weights(model: nn.Module, path: str | Path) -> TransferReport:
    """A COCO Mask R-CNN / Keypoint R-CNN checkpoint, legacy names included."""
    return transfer_weights(model, read_state_dict(path), str(path))
