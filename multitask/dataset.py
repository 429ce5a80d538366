"""Combined COCO (docs/FORMAT.md) as a torch dataset of ``(image, target)`` pairs for the multi-task model.

A target has ``boxes`` [N,4] xyxy, ``labels`` [N] (category ids 1..C), ``masks`` [N,H,W] uint8 and
``keypoints`` [N,K,3] in the schema's global K order. Every instance carries K keypoints: one without
keypoints gets all zeros, and torchvision's keypoint loss only counts ``v > 0``, so such instances
still train boxes and masks without adding anything to the keypoint loss. Crowd annotations are
skipped (the model never learns from them), as are boxes with no width or height.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from combined_coco.dataset import decode_segmentation, keypoint_array, read_combined_coco, swap_left_right
from combined_coco.images import check_image_size, read_image

Target = dict[str, torch.Tensor]


def hflip(image: torch.Tensor, target: Target, flip_indices: Sequence[int]) -> tuple[torch.Tensor, Target]:
    """Mirror image and every target left-right in COCO continuous coordinates (x -> W - x).

    After mirroring, a left eye sits where the right eye was, so keypoints are also permuted by the
    schema's ``flip_indices``; unlabeled keypoints (v = 0) stay at (0, 0, 0).
    """
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    keypoints = target["keypoints"].clone()
    labeled = keypoints[..., 2] > 0
    keypoints[..., 0] = torch.where(labeled, width - keypoints[..., 0], keypoints[..., 0])
    keypoints = swap_left_right(keypoints, flip_indices)
    flipped = {**target, "boxes": boxes, "masks": target["masks"].flip(-1), "keypoints": keypoints}
    return image.flip(-1), flipped


class CombinedCocoDataset(torch.utils.data.Dataset):
    """Images and multi-task targets of one combined COCO file.

    ``hflip_prob`` mirrors a sample with that probability (drawn from torch's global generator, so a
    seeded run is repeatable).
    """

    def __init__(self, annotation_file: str | Path, image_root: str | Path | None = None, hflip_prob: float = 0.0):
        self.path = Path(annotation_file)
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        self.coco, self.schema = read_combined_coco(self.path)  # global keypoint layout, whatever the file's
        self.hflip_prob = hflip_prob
        self.flip_indices = self.schema.flip_indices
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.annotations: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in self.coco["annotations"]:
            if not ann.get("iscrowd", 0):
                self.annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        info = self.images[index]
        pixels = read_image(self.image_root / info["file_name"])
        check_image_size(pixels, info)
        height, width = pixels.shape[:2]
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        target = self.target(info["id"], height, width)
        if self.hflip_prob > 0 and torch.rand(()) < self.hflip_prob:
            image, target = hflip(image, target, self.flip_indices)
        return image, target

    def target(self, image_id: int, height: int, width: int) -> Target:
        """Tensors for one image (degenerate boxes dropped: torchvision rejects them)."""
        anns = [a for a in self.annotations[image_id] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        k = self.schema.num_keypoints
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        masks = [decode_segmentation(a["segmentation"], height, width) for a in anns]
        return {
            "boxes": torch.from_numpy(boxes.reshape(-1, 4)),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)),
            "keypoints": torch.from_numpy(
                np.stack([keypoint_array(a, k) for a in anns]) if anns else np.zeros((0, k, 3), np.float32)
            ),
            "image_id": torch.tensor(image_id),
        }


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Detection models take lists (images differ in size), not stacked tensors."""
    images, targets = zip(*batch)
    return list(images), list(targets)
