"""One torchvision network with box, mask and keypoint heads on a shared backbone and RPN.

torchvision's :class:`MaskRCNN` already runs a keypoint branch when ``roi_heads`` has the three
keypoint modules set, so the multi-task model is a Mask R-CNN with the Keypoint R-CNN modules added:
one backbone, one RPN, one set of RoIs feeding the box, mask and keypoint heads, six losses
(``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_keypoint``, ``loss_objectness``,
``loss_rpn_box_reg``).

Two backbones:

- ``resnet50_fpn``: the paper's (Detectron2 Keypoint R-CNN R50-FPN with ``MASK_ON``): 8x512 keypoint
  head, 512 sampled RoIs per image.
- ``mobilenet_v3_large_fpn``: the CPU default: torchvision's light detector backbone (FPN on the
  stride-16 and stride-32 stages), 4x256 keypoint head, 128 sampled RoIs per image, 300
  proposals per image at test time.

``build_model`` never downloads (``weights`` / ``weights_backbone`` are always ``None``): pretrained
weights are loaded afterwards by :mod:`multitask.pretrained`, which reports what fitted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import nn
from torchvision.models import mobilenet_v3_large, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from combined_coco.schema import Schema
from multitask import defaults

Backbone = Literal["resnet50_fpn", "mobilenet_v3_large_fpn"]
BACKBONES: tuple[str, ...] = ("resnet50_fpn", "mobilenet_v3_large_fpn")

# Feature maps both backbones may return; MultiScaleRoIAlign uses those that exist
# (ResNet-FPN: "0".."3", MobileNet-FPN: "0", "1").
_FEATURE_MAPS = ["0", "1", "2", "3"]
# MobileNetV3 stages fed to the FPN: the stride-16 and the last stride-32 stage. torchvision's default
# (two stride-32 stages) leaves a 4x4 map on a 128 px image, too coarse for masks and keypoints;
# adding stride 8 would cost more than the whole backbone at 1280x720.
_MOBILENET_STAGES = [3, 5]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the same architecture; stored in every checkpoint.

    ``frozen_bn`` follows torchvision: batch norm is frozen when the backbone starts from trained
    weights (statistics of a 2-image batch would destroy them) and trainable from random init.
    ``detections_per_img`` / ``box_score_thresh`` are inference settings kept here so a benchmark can
    force every model to return the same number of detections.
    """

    num_classes: int  # object categories, without background
    num_keypoints: int
    backbone: str = defaults.BACKBONE
    min_size: int = defaults.MIN_SIZE
    max_size: int = defaults.MAX_SIZE
    frozen_bn: bool = False
    trainable_backbone_layers: int | None = None  # None: all when random, 3 when pretrained
    detections_per_img: int = defaults.MAX_DETECTIONS
    box_score_thresh: float = defaults.BOX_SCORE_FLOOR
    rois_per_image: int | None = None  # RoIs sampled per training image; None: 64 light, 512 R50

    @classmethod
    def for_schema(cls, schema: Schema, **kwargs: Any) -> ModelConfig:
        return cls(num_classes=len(schema.categories), num_keypoints=schema.num_keypoints, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(config: ModelConfig, *, with_masks: bool = True, with_keypoints: bool = True) -> MaskRCNN:
    """The multi-task network, randomly initialized.

    ``with_masks`` / ``with_keypoints`` switch heads off only to build the single-task baselines of
    the Table II benchmark (Faster / Mask / Keypoint R-CNN on the same backbone); training and
    inference always use both.
    """
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {list(BACKBONES)}")
    light = config.backbone == "mobilenet_v3_large_fpn"
    norm_layer = FrozenBatchNorm2d if config.frozen_bn else nn.BatchNorm2d
    trainable = config.trainable_backbone_layers
    if light:
        trainable = (3 if config.frozen_bn else 6) if trainable is None else trainable
        body = mobilenet_v3_large(weights=None, norm_layer=norm_layer)
        backbone = _mobilenet_extractor(body, True, trainable, returned_layers=_MOBILENET_STAGES)
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        # 300 proposals at test time (not 1000): the box head's 12544->1024 layer on every proposal
        # is the largest single cost of the light model on CPU.
        extra: dict[str, Any] = {
            "rpn_anchor_generator": anchors,
            "rpn_score_thresh": 0.05,
            "rpn_post_nms_top_n_test": 300,
        }
        # A quarter of the sampled RoIs are positives, and the mask and keypoint heads (4 convs of 256
        # channels at 14x14 each) run on every positive: on the light model they are three quarters of a
        # training step. Once the RPN has learnt, the positives fill the cap, so at 128 RoIs a 256 px step of
        # 2 images grew from 1.4 s to 2.3 s on a 2-core CPU; at 64 it stays near 1.5 s (README: retrain loop).
        box_batch, keypoint_layers = 64, [256] * 4
    else:
        trainable = (3 if config.frozen_bn else 5) if trainable is None else trainable
        backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=norm_layer), trainable)
        extra, box_batch, keypoint_layers = {}, 512, [512] * 8

    model = MaskRCNN(
        backbone,
        num_classes=config.num_classes + 1,
        min_size=config.min_size,
        max_size=config.max_size,
        box_batch_size_per_image=config.rois_per_image or box_batch,
        box_detections_per_img=config.detections_per_img,
        box_score_thresh=config.box_score_thresh,
        **extra,
    )
    if not with_masks:
        model.roi_heads.mask_roi_pool = model.roi_heads.mask_head = model.roi_heads.mask_predictor = None
    if with_keypoints and config.num_keypoints > 0:
        heads = model.roi_heads
        heads.keypoint_roi_pool = MultiScaleRoIAlign(_FEATURE_MAPS, output_size=14, sampling_ratio=2)
        heads.keypoint_head = KeypointRCNNHeads(backbone.out_channels, keypoint_layers)
        heads.keypoint_predictor = KeypointRCNNPredictor(keypoint_layers[-1], config.num_keypoints)
    return model
