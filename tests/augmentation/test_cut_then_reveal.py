"""A step that cuts content off at its frame edge, followed by a step that shows the area beyond it.

Truth is a label image (instance k painted k + 1) carried by Albumentations itself through the same
sampled pipeline as a nearest-neighbour mask target (truth.warped_labels): the annotations must
describe those pixels (IoU per instance), and every visible keypoint must sit on its own instance's
label pixels, never on the black fill where a cut-off part would have been.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from augmentation.albumentations_steps import augment_sample
from augmentation.geometry_transform import InstanceGeometry
from augmentation.pipelines import build_pipeline
from tests.augmentation.truth import iou, label_image, rasterize, warped_labels

BORDER = cv2.BORDER_CONSTANT


def _scene(height: int = 180, width: int = 240) -> tuple[np.ndarray, list[list | dict], list[InstanceGeometry]]:
    """Non-overlapping star-shaped objects on a 4x3 grid, half of them pushed against a border,
    every third one stored as RLE; keypoints are pixel centres well inside their object."""
    rng = np.random.default_rng(7)
    image = rng.integers(40, 200, (height, width, 3)).astype(np.uint8)
    segs: list[list | dict] = []
    instances = []
    cw, ch = width / 4, height / 3
    for k in range(12):
        col, row = k % 4, k // 4
        r = 0.45 * min(cw, ch)
        cx, cy = (col + 0.5) * cw, (row + 0.5) * ch
        if k % 2:  # touch the nearest border of the cell grid's outer ring
            cx = r * 0.7 if col == 0 else width - r * 0.7 if col == 3 else cx
            cy = r * 0.7 if row == 0 else height - r * 0.7 if row == 2 else cy
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radii = r * rng.uniform(0.7, 1.0, 12)
        pts = np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]
        pts = np.clip(pts, 0, [width, height])
        polygon = [pts.ravel().tolist()]
        mask = rasterize(polygon, height, width)
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8), borderValue=0)
        rows, cols = np.nonzero(inner)
        pick = rng.choice(len(rows), 4, replace=False)
        kps = [v for i in pick for v in (cols[i] + 0.5, rows[i] + 0.5, 2.0)]
        if k % 3 == 2:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            segs.append(rle)
            instances.append(InstanceGeometry([], rle, kps, [0, 1, 2, 3]))
        else:
            segs.append(polygon)
            instances.append(InstanceGeometry(polygon, None, kps, [0, 1, 2, 3]))
    return image, segs, instances


def _check_against_labels(pipeline: dict, seeds: range) -> dict[str, float]:
    """Annotations vs the warped label image over ``seeds``; returns the measured figures."""
    image, segs, instances = _scene()
    h, w = image.shape[:2]
    labels = label_image(segs, h, w)
    compose = build_pipeline(pipeline)
    ious, phantom_kps, absent_kept, lost, kps_checked = [], 0, 0, 0, 0
    for seed in seeds:
        sample = augment_sample(compose, image, instances, seed)
        truth = warped_labels(pipeline, seed, image, labels)
        assert truth.shape == sample.image.shape[:2]
        oh, ow = truth.shape
        for k, out in enumerate(sample.instances):
            real = truth == k + 1
            if out is None:
                lost += real.sum() >= 100  # a clearly visible object must not be dropped
                continue
            if real.sum() < 4:
                absent_kept += 1  # annotated but not in the image
                continue
            got = rasterize(out.segmentation, oh, ow)
            if real.sum() >= 100:
                ious.append(iou(got, real))
            for x, y, v in np.reshape(out.keypoints, (-1, 3)):
                if v > 0:
                    kps_checked += 1
                    c, r = int(x), int(y)
                    near = truth[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]  # 1 px: nearest-neighbour ties
                    phantom_kps += not (near == k + 1).any()
    return {
        "min_iou": min(ious),
        "mean_iou": float(np.mean(ious)),
        "phantom_keypoints": phantom_kps,
        "absent_kept": absent_kept,
        "lost": lost,
        "keypoints": kps_checked,
        "instances": len(ious),
    }


CUT_THEN_REVEAL = {
    "rotate_then_pad": [A.Rotate(limit=(25, 45), border_mode=BORDER, p=1), A.PadIfNeeded(260, 330, border_mode=BORDER)],
    "scale_up_then_down": [
        A.Affine(scale=(1.3, 1.3), border_mode=BORDER, p=1),
        A.Affine(scale=(0.7, 0.7), border_mode=BORDER, p=1),
    ],
    "crop_then_pad": [A.RandomCrop(110, 150), A.PadIfNeeded(180, 240, border_mode=BORDER)],
    "translate_out_and_back": [
        A.Affine(translate_px={"x": (-30, 30), "y": (-30, 30)}, border_mode=BORDER, p=1),
        A.Affine(scale=(0.6, 0.8), translate_px={"x": (-20, 20), "y": (-20, 20)}, border_mode=BORDER, p=1),
    ],
}


@pytest.mark.parametrize("name", sorted(CUT_THEN_REVEAL))
def test_cut_content_stays_cut(name: str) -> None:
    figures = _check_against_labels(A.to_dict(A.Compose(CUT_THEN_REVEAL[name])), range(6))
    print(name, figures)
    assert figures["keypoints"] > 50 and figures["instances"] > 30
    assert figures["phantom_keypoints"] == 0, figures
    assert figures["absent_kept"] == 0 and figures["lost"] == 0, figures
    assert figures["min_iou"] >= 0.85 and figures["mean_iou"] >= 0.95, figures


@pytest.mark.parametrize("as_rle", [False, True])
def test_translate_down_and_back_up_keeps_only_what_stayed(as_rle: bool) -> None:
    """Issue 12's minimal repro: a 40x40 square touching the bottom of a 100x100 image, moved 20 px
    down (its lower half leaves the frame) and 20 px back up: the image shows a 40x20 rectangle."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[60:100, 30:70] = 255
    square = [[30.0, 60.0, 70.0, 60.0, 70.0, 100.0, 30.0, 100.0]]
    kps = [50.0, 65.0, 2.0, 50.0, 95.0, 2.0]  # one in the half that stays, one in the half cut off
    if as_rle:
        rle = mask_utils.encode(np.asfortranarray(rasterize(square, 100, 100).astype(np.uint8)))
        inst = InstanceGeometry([], rle, kps, [0, 1])
    else:
        inst = InstanceGeometry(square, None, kps, [0, 1])
    pipeline = A.to_dict(
        A.Compose(
            [
                A.Affine(translate_px={"x": (0, 0), "y": (20, 20)}, border_mode=BORDER, p=1),
                A.Affine(translate_px={"x": (0, 0), "y": (-20, -20)}, border_mode=BORDER, p=1),
            ]
        )
    )
    sample = augment_sample(build_pipeline(pipeline), image, [inst], 0)
    shown = sample.image[:, :, 0] > 127
    out = sample.instances[0]
    assert out is not None
    assert shown.sum() == 40 * 20 and np.array_equal(np.argwhere(shown).min(0), [60, 30])
    assert np.allclose(out.bbox, [30.0, 60.0, 40.0, 20.0]) and out.area == pytest.approx(800.0)
    assert iou(rasterize(out.segmentation, 100, 100), shown) == 1.0
    assert out.keypoints == [50.0, 65.0, 2.0, 0.0, 0.0, 0.0] and out.num_keypoints == 1
