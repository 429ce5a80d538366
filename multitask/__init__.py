"""Multi-task vision model (boxes, classes, masks, keypoints from one torchvision network).

Submodules: ``model`` (architecture), ``pretrained`` (COCO/ImageNet weights through torch's cache,
weight transfer), ``dataset`` (combined COCO reader), ``train``, ``evaluate``, ``inference`` (the
backend's ``TorchvisionPredictor``), ``pose_analysis`` (paper section IV.C), ``checkpoint``, ``synthetic`` (tiny
demo data), ``testing`` (stand-in weight files for offline tests). Import them directly; this
package root stays import-light so ``combined_coco`` users never pay for torch.
"""
