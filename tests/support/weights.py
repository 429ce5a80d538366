"""Stand-ins for torchvision's published weight files, for tests that must run offline.

A stand-in has the published file's name, location (``$TORCH_HOME/hub/checkpoints/<name>``), tensor
names (the legacy FPN/RPN/mask-head names of the real COCO files) and shapes, but the values of a
randomly initialized torchvision model. torchvision's own loading path (``Weights.get_state_dict``)
then finds it in the cache and never downloads, so tests exercise the real loader, and a test can
tell loaded tensors from fresh ones by comparing them with the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, mobilenet_v3_large, resnet50
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    fasterrcnn_mobilenet_v3_large_fpn,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
)

from combined_coco.dataset import write_atomic
from multitask.pretrained import weights_file

_DETECTOR: dict[WeightsEnum, Callable[[], nn.Module]] = {
    MaskRCNN_ResNet50_FPN_Weights.COCO_V1: lambda: maskrcnn_resnet50_fpn(weights=None, weights_backbone=None),
    KeypointRCNN_ResNet50_FPN_Weights.COCO_V1: lambda: keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None),
    FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1: lambda: fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None
    ),
    MobileNet_V3_Large_Weights.IMAGENET1K_V1: lambda: mobilenet_v3_large(weights=None),
    ResNet50_Weights.IMAGENET1K_V1: lambda: resnet50(weights=None),
}


def legacy_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names torchvision's published COCO checkpoints use for FPN, RPN conv and mask head."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", key)
        key = re.sub(
            r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.", key
        )
        out[key] = value
    return out


def write_stand_in(weights: WeightsEnum, seed: int = 0) -> Path:
    """Write a random-valued stand-in for ``weights`` where torch's cache (current ``TORCH_HOME``) looks.

    Batch-norm counters are left out, as in the published files (their models use frozen batch norm).
    """
    torch.manual_seed(seed)
    state = {k: v for k, v in _DETECTOR[weights]().state_dict().items() if not k.endswith("num_batches_tracked")}
    return write_atomic(weights_file(weights), lambda f: torch.save(legacy_names(state), f))


def write_detectron2_stand_in(zoo_config: str = "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml", seed: int = 0) -> Path:
    """A random-valued stand-in for Detectron2's model-zoo checkpoint of ``zoo_config``, written where
    fvcore/iopath's cache (current ``FVCORE_CACHE``) keeps the downloaded URL, in the zoo's own format
    (a pickle of ``{"model": {name: numpy array}, "__author__": ...}``, COCO's 80 classes and 17
    keypoints), so Detectron2's own checkpointer finds it there and never downloads. Written once.
    """
    import pickle
    from urllib.parse import urlparse

    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from iopath.common.file_io import get_cache_dir

    from multitask.engines.detectron2 import zero_residual_scales

    url = model_zoo.get_checkpoint_url(zoo_config)
    path = Path(get_cache_dir()) / urlparse(url).path.lstrip("/")
    if path.exists():
        return path
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(seed)
    model = build_model(cfg)
    zero_residual_scales(model)  # activations in the range a trained file's have
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return write_atomic(
        path, lambda f: pickle.dump({"model": state, "__author__": "stand-in for the Detectron2 Model Zoo"}, f)
    )


def write_coco_stand_ins(engine: str, backbone: str) -> list[Path]:
    """Stand-ins for every file ``init: coco`` loads for ``engine``/``backbone``, each where that engine's
    loader looks (the current ``TORCH_HOME`` / ``FVCORE_CACHE``); files already there are kept."""
    if engine == "detectron2":
        from multitask.engines.detectron2 import zoo_config

        return [write_detectron2_stand_in(zoo_config(backbone))]
    from multitask.pretrained import published_sources

    return [
        weights_file(source.weights) if weights_file(source.weights).exists() else write_stand_in(source.weights)
        for source in published_sources("coco", backbone)
    ]
