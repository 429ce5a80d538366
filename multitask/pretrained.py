"""Start the multi-task model from pretrained weights: torchvision's published COCO / ImageNet weights or a local file.

``init`` names the start: ``coco`` (default), ``imagenet``, ``none`` (random) or a path to a local
file (torchvision-format weights, or a multi-task checkpoint). Published weights come through torchvision's own weights API
(``*_Weights`` enums, ``get_state_dict``): downloaded once into torch's cache
(``$TORCH_HOME/hub/checkpoints``) and reused. A machine that cannot download gets a one-line
:class:`PretrainedWeightsUnavailable` naming the file, its URL and the folder to put it in, within
:data:`DOWNLOAD_TIMEOUT_S` (a socket timeout: urllib would otherwise wait forever on a silent host).

What each ``init`` loads (see :func:`published_sources`):

- ``coco`` + ``resnet50_fpn``: Mask R-CNN R50-FPN COCO for backbone, FPN, RPN, box head and mask head,
  plus the 8x512 keypoint head convolutions of Keypoint R-CNN R50-FPN COCO.
- ``coco`` + ``mobilenet_v3_large_fpn``: Faster R-CNN MobileNetV3-Large-FPN COCO for backbone, FPN,
  RPN and box head. Our FPN takes the stride-16 stage instead of torchvision's second stride-32 one,
  so its first lateral 1x1 conv has another input width and stays fresh; torchvision publishes no
  mask or keypoint head for this backbone, so those stay fresh too.
- ``imagenet``: the ImageNet classification weights torchvision's detectors start from, for the
  backbone body only.

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
import pickle
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)

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

PUBLISHED_INITS: tuple[str, ...] = ("coco", "imagenet")
RANDOM_INIT = "none"
# Seconds a download may wait for a connection or for the next bytes: an unreachable or silent host
# fails the run with a message instead of hanging it until the job timeout.
DOWNLOAD_TIMEOUT_S = 30.0


# The way out when weights cannot be had, ending every "could not be loaded" message, worded for each way of running
OFFLINE_ALTERNATIVE = (
    "or train from random weights: TRAIN_INIT=none (scripts/stack.sh: put that line in .env in the repository"
    " and restart the stack; python -m multitask train: --set init=none or init: none in its config)"
)


class PretrainedWeightsUnavailable(RuntimeError):
    """Published weights are neither in torch's cache nor downloadable; the message says what to do."""


@dataclass(frozen=True)
class PublishedSource:
    """One published weights file and which of its tensors the multi-task model takes."""

    weights: WeightsEnum
    classification: bool = False  # ImageNet classifier names, mapped onto ``backbone.body.``
    only: tuple[str, ...] = ()  # take only tensors with these prefixes (empty: every one that fits)


def published_sources(init: str, backbone: str) -> list[PublishedSource]:
    """The torchvision weights that ``init`` (``coco`` / ``imagenet``) means for ``backbone``."""
    light = backbone == "mobilenet_v3_large_fpn"
    if init == "coco" and light:
        return [PublishedSource(FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1)]
    if init == "coco":
        return [
            PublishedSource(MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
            # person keypoints: the predictor is class-dependent, the 8x512 convolutions are not
            PublishedSource(KeypointRCNN_ResNet50_FPN_Weights.COCO_V1, only=("roi_heads.keypoint_head.",)),
        ]
    if init == "imagenet":
        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if light else ResNet50_Weights.IMAGENET1K_V1
        return [PublishedSource(weights, classification=True)]
    raise ValueError(f"init {init!r} is not published weights; choose one of {list(PUBLISHED_INITS)}")


def weights_file(weights: WeightsEnum) -> Path:
    """Where torch's cache keeps (or will keep) ``weights``: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def published_state_dict(weights: WeightsEnum, timeout: float = DOWNLOAD_TIMEOUT_S) -> dict[str, torch.Tensor]:
    """The tensors of ``weights`` from torch's cache, downloaded once (hash-checked) when missing."""
    path = weights_file(weights)
    if not path.exists():
        log.info("downloading %s from %s into %s (once; later runs reuse it)", path.name, weights.url, path.parent)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return weights.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split()) or type(exc).__name__
        message = (
            f"pretrained weights {path.name} could not be loaded ({reason}): download {weights.url} into"
            f" {path.parent} (TORCH_HOME={path.parent.parent.parent}), {OFFLINE_ALTERNATIVE}"
        )
        log.error(message)  # one line in the worker log, above the traceback
        raise PretrainedWeightsUnavailable(message) from None
    finally:
        socket.setdefaulttimeout(previous)


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
    """Tensors of a local weights file or multi-task checkpoint (unwraps ``{"model": ...}`` / ``{"state_dict": ...}``)."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # a checkpoint written by `train` also holds RNG state, which weights_only refuses
        from multitask.checkpoint import load_checkpoint

        return load_checkpoint(path).state_dict
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


def backbone_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet classifier's tensors (torchvision ``resnet50`` / ``mobilenet_v3_large``) under detector names.

    ResNet names (``layer1.0.conv1.weight``) live under ``backbone.body.``; MobileNet's
    ``features.N.…`` become ``backbone.body.N.…`` because the FPN extractor wraps ``features`` itself.
    The classifier ends up reported as unused.
    """
    return {"backbone.body." + key.removeprefix("features."): value for key, value in state_dict.items()}


def is_classifier(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an ImageNet classification file, False for a detector's (whose names start ``backbone.``)."""
    return not any(key.startswith(("backbone.", "module.backbone.")) for key in state_dict)


def initialize(model: nn.Module, init: str, backbone: str) -> list[TransferReport]:
    """Load ``init`` into a freshly built model: ``none``, ``coco``, ``imagenet`` or a local weights file."""
    if init == RANDOM_INIT:
        return []
    if init in PUBLISHED_INITS:
        reports = []
        for source in published_sources(init, backbone):
            tensors = published_state_dict(source.weights)
            if source.classification:
                tensors = backbone_names(tensors)
            if source.only:
                tensors = {k: v for k, v in tensors.items() if k.startswith(source.only)}
            reports.append(transfer_weights(model, tensors, f"{init}: {weights_file(source.weights).name}"))
        return reports
    if not Path(init).is_file():
        raise FileNotFoundError(
            f"init {init!r} is neither {RANDOM_INIT!r}, {' nor '.join(map(repr, PUBLISHED_INITS))} nor an existing weights file"
        )
    tensors = read_state_dict(init)
    return [transfer_weights(model, backbone_names(tensors) if is_classifier(tensors) else tensors, init)]
