"""Multi-task vision model (boxes, classes, masks, keypoints from one torchvision network).

Submodules: ``model`` (architecture), ``pretrained`` (COCO/ImageNet weights through torch's cache,
weight transfer), ``dataset`` (combined COCO reader), ``train``, ``evaluate``, ``inference`` (the
backend's ``TorchvisionPredictor``), ``pose_analysis`` (paper section IV.C), ``checkpoint``, ``synthetic`` (the
synthetic datasets of the demo, tests and benchmarks). Import them directly; this
package root stays import-light so ``combined_coco`` users never pay for torch.
"""
