"""Properties: whatever pipeline sample or input, the output is a valid instance; RLE shortcuts
equal pycocotools' own encoding."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from augmentation.albumentations_steps import augment_sample
from augmentation.geometry_transform import InstanceGeometry, window_rle
from augmentation.pipelines import build_pipeline
from combined_coco.geometry import polygons_area

BORDER = cv2.BORDER_CONSTANT
PIPELINE = build_pipeline(
    A.to_dict(
        A.Compose(
            [
                A.D4(p=0.5),
                A.Affine(
                    scale=(0.5, 1.5),
                    rotate=(-180, 180),
                    translate_percent=(-0.4, 0.4),
                    shear=(-15, 15),
                    border_mode=BORDER,
                    p=0.9,
                ),
                A.Perspective(scale=(0.02, 0.1), border_mode=BORDER, p=0.5),
                A.OneOf(
                    [
                        A.RandomResizedCrop((90, 130)),
                        A.LongestMaxSize(150),
                        A.PadIfNeeded(160, 220, border_mode=BORDER),
                    ],
                    p=0.7,
                ),
            ]
        )
    )
)
IMAGE = np.zeros((100, 140, 3), np.uint8)

coord = st.floats(-30, 170, allow_nan=False)
polygon = st.lists(st.tuples(coord, coord), min_size=3, max_size=8).map(lambda pts: [c for p in pts for c in p])


@settings(max_examples=60, deadline=None)
@given(polygons=st.lists(polygon, min_size=1, max_size=2), seed=st.integers(0, 2**31 - 1))
def test_any_sample_gives_a_valid_clipped_instance_or_a_drop(polygons: list[list[float]], seed: int) -> None:
    kps = [60.0, 50.0, 2.0, 80.0, 50.0, 1.0, 0.0, 0.0, 0.0]
    sample = augment_sample(PIPELINE, IMAGE, [InstanceGeometry(polygons, None, kps, [1, 0, 2])], seed)
    h, w = sample.image.shape[:2]
    out = sample.instances[0]
    if out is None:
        return
    xs = [x for p in out.segmentation for x in p[0::2]]
    ys = [y for p in out.segmentation for y in p[1::2]]
    assert all(len(p) >= 6 for p in out.segmentation)
    assert -1e-9 <= min(xs) and max(xs) <= w + 1e-9 and -1e-9 <= min(ys) and max(ys) <= h + 1e-9
    assert out.bbox == [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    assert isinstance(out.segmentation, list)
    assert out.area == polygons_area(out.segmentation) > 0
    triples = np.reshape(out.keypoints, (-1, 3))
    assert out.num_keypoints == int((triples[:, 2] > 0).sum())
    assert sorted(triples[:, 2].tolist()) in ([0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 2])
    for x, y, v in triples:
        assert (v == 0 and x == y == 0) or (0 <= x < w and 0 <= y < h)


@settings(max_examples=80, deadline=None)
@given(
    window=st.integers(1, 6).flatmap(
        lambda h: st.integers(1, 6).flatmap(
            lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(lambda v: np.reshape(v, (h, w)))
        )
    ),
    x0=st.integers(0, 4),
    y0=st.integers(0, 4),
)
def test_window_rle_equals_encoding_the_whole_frame(window: np.ndarray, x0: int, y0: int) -> None:
    full = np.zeros((11, 12), np.uint8, order="F")
    full[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]] = window
    assert window_rle(window.astype(np.uint8), x0, y0, 11, 12) == mask_utils.encode(full)
