"""Weight transfer from COCO checkpoints with torchvision's legacy module names."""

from __future__ import annotations

import re

import torch

from multitask.model import ModelConfig, build_model
from multitask.pretrained import CLASS_DEPENDENT_PREFIXES, rename_legacy_keys, transfer_weights
from multitask.synthetic import SCHEMA

CONFIG = ModelConfig.for_schema(SCHEMA, min_size=64, max_size=64)


def _legacy_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names torchvision's published COCO checkpoints use for FPN, RPN conv and mask head."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", key)
        key = re.sub(r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.", key)
        out[key] = value
    return out


def test_rename_legacy_keys_examples() -> None:
    t = torch.zeros(1)
    renamed = rename_legacy_keys(
        {
            "backbone.fpn.inner_blocks.0.weight": t,
            "backbone.fpn.layer_blocks.3.bias": t,
            "rpn.head.conv.weight": t,
            "roi_heads.mask_head.mask_fcn1.weight": t,
            "roi_heads.mask_head.mask_fcn4.bias": t,
            "backbone.body.0.0.weight": t,
        }
    )
    assert sorted(renamed) == sorted(
        [
            "backbone.fpn.inner_blocks.0.0.weight",
            "backbone.fpn.layer_blocks.3.0.bias",
            "rpn.head.conv.0.0.weight",
            "roi_heads.mask_head.0.0.weight",
            "roi_heads.mask_head.3.0.bias",
            "backbone.body.0.0.weight",
        ]
    )


def test_legacy_checkpoint_transfers_fpn_rpn_and_mask_head() -> None:
    torch.manual_seed(1)
    source = build_model(CONFIG).state_dict()
    legacy = _legacy_names(source)
    torch.manual_seed(2)
    target = build_model(CONFIG)
    own = target.state_dict()
    # a plain name-by-name copy would miss FPN, RPN conv and mask head
    missed = set(legacy) - set(own)
    assert {"backbone.fpn.inner_blocks.0.weight", "rpn.head.conv.weight", "roi_heads.mask_head.mask_fcn1.weight"} <= missed

    report = transfer_weights(target, legacy, "legacy")
    after = target.state_dict()
    assert not report.not_in_model and not report.shape_mismatch
    for key, value in source.items():
        if key.startswith(CLASS_DEPENDENT_PREFIXES):
            assert key in report.class_dependent
            if value.is_floating_point() and value.numel() > 1 and "bias" not in key:
                assert not torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key], value), key
    assert any(k.startswith("roi_heads.mask_head.0.0") for k in report.loaded)
    assert any(k.startswith("backbone.fpn.inner_blocks.0.0") for k in report.loaded)
    assert "rpn.head.conv.0.0.weight" in report.loaded


def test_shape_mismatch_is_reported_not_loaded() -> None:
    target = build_model(CONFIG)
    report = transfer_weights(target, {"backbone.body.0.0.weight": torch.zeros(1, 1, 1, 1)}, "bad")
    assert report.shape_mismatch == ["backbone.body.0.0.weight"] and not report.loaded
