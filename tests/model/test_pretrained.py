"""Weight transfer from COCO checkpoints with torchvision's legacy module names, and `init` through torch's cache."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest
import torch
from torchvision.models._api import Weights, WeightsEnum
from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_FPN_Weights

from multitask.model import ModelConfig, build_model
from multitask.pretrained import (
    CLASS_DEPENDENT_PREFIXES,
    DOWNLOAD_TIMEOUT_S,
    PretrainedWeightsUnavailable,
    initialize,
    published_sources,
    published_state_dict,
    rename_legacy_keys,
    transfer_weights,
)
from multitask.synthetic import SCHEMA
from tests.support.weights import legacy_names, write_stand_in

CONFIG = ModelConfig.for_schema(SCHEMA, min_size=64, max_size=64)


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
    legacy = legacy_names(source)
    torch.manual_seed(2)
    target = build_model(CONFIG)
    own = target.state_dict()
    # a plain name-by-name copy would miss FPN, RPN conv and mask head
    missed = set(legacy) - set(own)
    assert {
        "backbone.fpn.inner_blocks.0.weight",
        "rpn.head.conv.weight",
        "roi_heads.mask_head.mask_fcn1.weight",
    } <= missed

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


# ---- published weights through torchvision's cache (stand-in files, the real loading path) -------------


def _check_loaded(model: torch.nn.Module, fresh: dict[str, torch.Tensor], loads: list[tuple[Path, list[str]]]) -> None:
    """Every tensor loaded from a file equals the file's; conv/linear weights really changed; the rest
    kept their fresh values."""
    after = model.state_dict()
    report_loaded: set[str] = set()
    for path, keys in loads:
        from_file = rename_legacy_keys(torch.load(path, weights_only=True))
        for key in keys:
            assert torch.equal(after[key], from_file[key]), key
        report_loaded |= set(keys)
    changed = [k for k in report_loaded if k.endswith("weight") and after[k].dim() > 1]
    assert changed and all(not torch.equal(after[k], fresh[k]) for k in changed)
    for key in set(after) - report_loaded:
        assert torch.equal(after[key], fresh[key]), key


def test_coco_light_loads_backbone_fpn_rpn_box_head(coco_light_weights: Path) -> None:
    torch.manual_seed(3)
    model = build_model(dataclasses.replace(CONFIG, frozen_bn=True))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    (report,) = initialize(model, "coco", "mobilenet_v3_large_fpn")
    loaded = set(report.loaded)
    _check_loaded(model, fresh, [(coco_light_weights, report.loaded)])
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in loaded}
    assert prefixes == {"backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head"}
    # our FPN taps the stride-16 stage (80 channels), torchvision's the second stride-32 one (160)
    assert report.shape_mismatch == ["backbone.fpn.inner_blocks.0.0.weight"]
    assert sorted(report.class_dependent) == [
        "roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight",
    ]  # fmt: skip
    assert not any(k.startswith(("roi_heads.mask_head", "roi_heads.keypoint_head")) for k in loaded)


def test_coco_r50_loads_mask_rcnn_and_keypoint_head_convolutions(coco_r50_weights: list[Path]) -> None:
    config = ModelConfig.for_schema(SCHEMA, backbone="resnet50_fpn", min_size=64, max_size=64, frozen_bn=True)
    torch.manual_seed(4)
    model = build_model(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    mask_report, keypoint_report = initialize(model, "coco", "resnet50_fpn")
    loaded = set(mask_report.loaded) | set(keypoint_report.loaded)
    _check_loaded(model, fresh, list(zip(coco_r50_weights, [mask_report.loaded, keypoint_report.loaded])))
    assert not mask_report.shape_mismatch and not keypoint_report.shape_mismatch
    assert {k.split(".")[1] for k in keypoint_report.loaded} == {"keypoint_head"}
    assert len(keypoint_report.loaded) == 16  # 8 convolutions, weight and bias
    for prefix in ("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box_head.", "roi_heads.mask_head."):
        assert any(k.startswith(prefix) for k in mask_report.loaded), prefix
    fresh_after = set(model.state_dict()) - loaded
    assert {k for k in fresh_after if not k.startswith(CLASS_DEPENDENT_PREFIXES)} == set()


def test_imagenet_loads_the_backbone_body_only(torch_home: Path) -> None:
    (source,) = published_sources("imagenet", "mobilenet_v3_large_fpn")
    path = write_stand_in(source.weights)
    torch.manual_seed(5)
    model = build_model(dataclasses.replace(CONFIG, frozen_bn=True))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    (report,) = initialize(model, "imagenet", "mobilenet_v3_large_fpn")
    assert report.loaded and all(k.startswith("backbone.body.") for k in report.loaded)
    assert {k.split(".")[0] for k in report.not_in_model} == {"backbone"}  # the classifier
    after = model.state_dict()
    raw = torch.load(path, weights_only=True)
    assert torch.equal(after["backbone.body.0.0.weight"], raw["features.0.0.weight"])
    assert not torch.equal(after["backbone.body.0.0.weight"], fresh["backbone.body.0.0.weight"])


def test_missing_published_weights_fail_fast_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    model = build_model(CONFIG)
    began = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        initialize(model, "coco", "mobilenet_v3_large_fpn")
    assert time.monotonic() - began < DOWNLOAD_TIMEOUT_S
    message = str(error.value)
    weights = FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1
    assert "\n" not in message
    for part in (
        Path(weights.url).name,
        weights.url,
        str(tmp_path / "empty" / "hub" / "checkpoints"),
        "TRAIN_INIT=none",
    ):
        assert part in message, part
    assert not any((tmp_path / "empty" / "hub" / "checkpoints").iterdir())  # no partial file left behind
    assert message in caplog.text  # the same line in the worker log


class _SilentHost:
    """A TCP server that accepts connections and never answers: what a blocked proxy looks like."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/models/silent-0123abcd.pth"


def test_silent_host_times_out_instead_of_hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _SilentHost()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    class SilentWeights(WeightsEnum):
        V1 = Weights(url=host.url, transforms=lambda: None, meta={})

    began = time.monotonic()
    try:
        with pytest.raises(PretrainedWeightsUnavailable, match="timed out") as error:
            published_state_dict(SilentWeights.V1, timeout=1.0)
    finally:
        host.sock.close()
    assert time.monotonic() - began < 5
    assert "silent-0123abcd.pth" in str(error.value) and str(tmp_path / "hub" / "checkpoints") in str(error.value)
    assert socket.getdefaulttimeout() is None  # the process-wide default is restored


def test_init_names_what_it_accepts() -> None:
    with pytest.raises(FileNotFoundError, match="neither 'none', 'coco' nor 'imagenet'"):
        initialize(build_model(CONFIG), "COCO-typo", "mobilenet_v3_large_fpn")
