"""Training and inference defaults, each written once.

``TrainConfig`` and ``ModelConfig`` (the CLI and the checkpoint), the engines' predictors, the
``python -m multitask`` commands and the ML backend's :class:`backend.settings.Settings` take their
defaults from here. The module imports nothing, so the backend server reads it before torch is loaded.
Where the backend deliberately differs from the CLI, both values are here, side by side, with the reason.
"""

from __future__ import annotations

BACKBONE = "mobilenet_v3_large_fpn"  # the torchvision engine's backbone (multitask.engines.default_backbone)
INIT = "coco"  # coco | imagenet | none | path to a weights file (multitask.pretrained)
BATCH_SIZE = 2
LEARNING_RATE = 0.01
SEED = 0

# Image size: the shorter side is scaled to MIN_SIZE unless the longer one would then exceed MAX_SIZE
# (853 = 512 * 16 / 9: a 16:9 frame keeps its 512 px). Stored in every checkpoint (ModelConfig).
MIN_SIZE = 512
MAX_SIZE = 853
# The ML backend trains on a CPU worker while annotators wait for the next pre-annotations; at
# 320/512 an image has 2.7x fewer pixels than at the CLI's 512/853, and the backbone's cost grows with
# the pixels (README: TRAIN_MIN_SIZE, TRAIN_MAX_SIZE).
BACKEND_MIN_SIZE = 320
BACKEND_MAX_SIZE = 512

# Detections: the model keeps at most MAX_DETECTIONS per image scoring at least BOX_SCORE_FLOOR
# (torchvision's default; below it the detector does not consider a box a candidate; ModelConfig).
# COCO AP needs those low-scoring detections too (evaluation uses the floor), while a prediction shown to
# a person (predict CLI, ML backend SCORE_THRESHOLD) keeps only those reaching SCORE_THRESHOLD.
MAX_DETECTIONS = 100
BOX_SCORE_FLOOR = 0.05
SCORE_THRESHOLD = 0.5
MASK_THRESHOLD = 0.5  # mask probability that counts as inside the object
# Mask NMS after the model's box NMS (multitask.inference.distinct_masks): a same-label detection whose mask
# overlaps a higher-scoring one by more than this IoU is a duplicate of it (predict CLI, ML backend MASK_NMS_IOU).
MASK_NMS_IOU = 0.5
