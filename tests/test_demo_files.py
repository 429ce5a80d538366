"""The ``--demo`` project's shipped files (``demo/``): what the generator drew, readable by the converter.

The truth is the generator's own COCO dataset (:func:`multitask.synthetic.synthetic_coco` with the demo's
parameters); the shipped Label Studio annotations must come back from the project's converter as the
same objects, and the shipped JPEGs must show the generator's pixels.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from combined_coco.converter import convert_tasks
from combined_coco.labelstudio import task
from combined_coco.schema import Schema
from combined_coco.validate import validate_coco
from multitask.synthetic import synthetic_coco
from stack.demo import DEMO_CONFIG, DEMO_DIR, DEMO_TASKS, LABELLED, SEED, SIZE, UNLABELLED


@pytest.fixture(scope="module")
def truth() -> tuple[dict, list[np.ndarray]]:
    return synthetic_coco(LABELLED + UNLABELLED, SIZE, SEED, scenes=True)


def test_demo_has_labelled_and_unlabelled_tasks() -> None:
    tasks = json.loads(DEMO_TASKS.read_text())
    assert [bool(t.get("annotations")) for t in tasks] == [True] * LABELLED + [False] * UNLABELLED
    assert LABELLED >= 10, "HOLDOUT_MIN_TASKS (10): the first version should have a held-out score"


def test_shipped_annotations_convert_to_the_generated_objects(truth: tuple[dict, list[np.ndarray]]) -> None:
    coco, _ = truth
    schema = Schema.from_label_config(DEMO_CONFIG.read_text())
    shipped = json.loads(DEMO_TASKS.read_text())[:LABELLED]
    tasks = [task(i, f"/data/upload/1/0a1b2c3d-{t['data']['image']}", t["annotations"][0]["result"]) for i, t in
             enumerate(shipped, 1)]  # fmt: skip
    res = convert_tasks(tasks, schema)
    assert not res.issues, res.issues
    assert not validate_coco(res.coco)
    expected = [a for a in coco["annotations"] if a["image_id"] <= LABELLED]
    got = res.coco["annotations"]
    assert [(a["image_id"], a["category_id"]) for a in got] == [(a["image_id"], a["category_id"]) for a in expected]
    for a, b in zip(got, expected):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=0.01)
        assert a["keypoints"] == pytest.approx(b["keypoints"], abs=0.01)
        assert a["segmentation"][0] == pytest.approx(b["segmentation"][0], abs=0.01)


def test_shipped_images_are_the_generated_ones(truth: tuple[dict, list[np.ndarray]]) -> None:
    _, pixels = truth
    tasks = json.loads(DEMO_TASKS.read_text())
    assert len(tasks) == len(pixels)
    for t, rgb in zip(tasks, pixels):
        bgr = cv2.imread(str(DEMO_DIR / t["data"]["image"]))
        assert bgr is not None and bgr.shape == (SIZE, SIZE, 3), t["data"]["image"]
        # JPEG (quality 85) drops most of the per-pixel noise: compare blurred, ~2 levels apart on average
        # (two different scenes: ~40)
        shipped = cv2.GaussianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (5, 5), 0).astype(int)
        assert np.abs(shipped - cv2.GaussianBlur(rgb, (5, 5), 0)).mean() < 4, t["data"]["image"]
