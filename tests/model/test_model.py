"""The one network: all six losses, and instances without keypoints leave the keypoint loss alone."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.models.detection.roi_heads import keypointrcnn_loss

from multitask.dataset import CombinedCocoDataset, collate
from multitask.model import ModelConfig, build_model
from multitask.synthetic import SCHEMA

LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_keypoint", "loss_objectness", "loss_rpn_box_reg"}


def test_every_head_has_a_finite_loss(small_model: torch.nn.Module, synthetic_json: Path) -> None:
    images, targets = collate([CombinedCocoDataset(synthetic_json)[i] for i in (1, 2)])
    losses = small_model.train()(images, targets)
    assert set(losses) == LOSSES
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_keypoint"].item() > 0


def test_batch_without_any_keypoint_gives_zero_finite_keypoint_loss(
    small_model: torch.nn.Module, synthetic_json: Path
) -> None:
    images, targets = collate([CombinedCocoDataset(synthetic_json)[i] for i in (1, 2)])
    for target in targets:
        target["keypoints"] = torch.zeros_like(target["keypoints"])
    losses = small_model.train()(images, targets)
    assert set(losses) == LOSSES
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_keypoint"].item() == 0.0
    sum(losses.values()).backward()  # and the graph stays differentiable


def test_instance_without_keypoints_does_not_change_keypoint_loss() -> None:
    """Proposals matched to a keypoint-less instance add nothing: same loss as without them."""
    torch.manual_seed(0)
    k, side = 3, 56
    labeled = torch.tensor([[[20.0, 20.0, 2.0], [30.0, 25.0, 2.0], [25.0, 35.0, 1.0]]])
    unlabeled = torch.zeros(1, k, 3)
    proposals = torch.tensor([[10.0, 10.0, 50.0, 50.0], [12.0, 8.0, 48.0, 52.0], [0.0, 0.0, 40.0, 40.0]])
    logits = torch.randn(3, k, side, side)
    both = keypointrcnn_loss(logits, [proposals], [torch.cat([labeled, unlabeled])], [torch.tensor([0, 0, 1])])
    only = keypointrcnn_loss(logits[:2], [proposals[:2]], [labeled], [torch.tensor([0, 0])])
    assert torch.isfinite(both) and torch.allclose(both, only)


def test_backbones_share_the_same_heads() -> None:
    for backbone, layers in (("mobilenet_v3_large_fpn", 4), ("resnet50_fpn", 8)):
        model = build_model(ModelConfig.for_schema(SCHEMA, backbone=backbone, min_size=64, max_size=64))
        heads = model.roi_heads
        assert heads.has_mask() and heads.has_keypoint()
        assert len([m for m in heads.keypoint_head if isinstance(m, torch.nn.Conv2d)]) == layers
        assert heads.keypoint_predictor.out_channels == SCHEMA.num_keypoints
        assert heads.box_predictor.cls_score.out_features == len(SCHEMA.categories) + 1
