"""What a run was taught: keypoints labelled per category, thresholds calibrated on known score
distributions, vertex medians, and the checkpoint entry that carries them to the predictor."""

from __future__ import annotations

import numpy as np
import pytest

from combined_coco.schema import Category, Schema
from multitask.inference import InstanceMaker
from multitask.taught import Taught, count_labels, keypoint_scores, separating_threshold, training_images


def _balanced_accuracy(threshold: float | None, pos: np.ndarray, neg: np.ndarray) -> float:
    t = -np.inf if threshold is None else threshold
    return float(((pos >= t).mean() + (neg < t).mean()) / 2)


def test_separated_scores_get_a_threshold_between_them() -> None:
    assert separating_threshold([3.0, 4.0, 5.0], [-2.0, 0.0, 1.0]) == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(5))
def test_overlapping_normals_get_the_threshold_of_the_best_balanced_accuracy(seed: int) -> None:
    """Labelled ~ N(4, 1), unlabelled ~ N(1, 1), unequal sizes: the best cut of the populations is 2.5
    (equal variances), and no other cut of these samples does better."""
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(4, 1, 400), rng.normal(1, 1, 1200)
    threshold = separating_threshold(pos.tolist(), neg.tolist())
    assert threshold is not None and abs(threshold - 2.5) < 0.35
    grid = np.linspace(-2, 7, 901)
    assert _balanced_accuracy(threshold, pos, neg) >= max(_balanced_accuracy(t, pos, neg) for t in grid) - 1e-9


def test_one_sided_scores_have_sane_fallbacks() -> None:
    assert separating_threshold([1.0, 2.0], []) is None  # always labelled: hold nothing back
    above = separating_threshold([], [1.0, 7.5])  # never labelled on a matched object: above all it saw
    assert above is not None and above > 7.5 and above - 7.5 < 1e-6
    assert separating_threshold([], []) is None
    assert separating_threshold([float("nan"), 2.0], [float("inf"), 0.0]) == pytest.approx(1.0)


SCHEMA = Schema(
    categories=(Category(1, "cat", ("eye", "paw")), Category(2, "box", ("corner",))),
    keypoint_names=("eye", "paw", "corner"),
)


def _annotation(image_id: int, category_id: int, visible: dict[str, int], vertices: int = 4) -> dict:
    keypoints = []
    for name in SCHEMA.keypoint_names:
        keypoints += [10.0, 10.0, visible.get(name, 0)]
    ring = [c for k in range(vertices) for c in (50 + 40 * np.cos(k), 50 + 40 * np.sin(k))]
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [10, 10, 80, 80],
        "keypoints": keypoints,
        "segmentation": [ring],
    }


def test_counts_come_from_the_original_images_only() -> None:
    coco = {
        "images": [{"id": 1, "aug_copy": 0}, {"id": 2, "aug_copy": 1}, {"id": 3}],
        "annotations": [
            _annotation(1, 1, {"eye": 2}, vertices=6),
            _annotation(2, 1, {"eye": 2, "paw": 2}, vertices=40),  # a copy: clipped, not clicked
            _annotation(3, 1, {"eye": 1}, vertices=8),
            _annotation(3, 2, {"corner": 2}, vertices=4),
        ],
    }
    kept, note = training_images(coco)
    assert "2 original images" in note and "1 augmentation copies" in note
    objects, labelled, medians = count_labels(kept, SCHEMA)
    assert objects == {"cat": 2, "box": 1}
    assert labelled == {"cat": {"eye": 2, "paw": 0}, "box": {"corner": 1}}
    assert medians == {"cat": 7.0, "box": 4.0}
    only_copies, note = training_images({"images": [{"id": 2, "aug_copy": 1}], "annotations": coco["annotations"]})
    assert "copies only" in note and len(only_copies["annotations"]) == 4


class _Detection:
    def __init__(self, category_id: int, score: float, box: tuple, logits: list[float]) -> None:
        self.category_id, self.score, self.box = category_id, score, box
        self.keypoints = np.array([[0.0, 0.0, v] for v in logits])


def test_scores_are_split_by_the_matched_truth() -> None:
    truths = [[_annotation(1, 1, {"eye": 2})]]  # paw left out
    predictions = [
        [
            _Detection(1, 0.9, (12, 10, 90, 88), [5.0, 3.0, 9.0]),  # matches: eye labelled, paw not
            _Detection(1, 0.8, (300, 300, 340, 340), [7.0, 7.0, 7.0]),  # matches nothing
            _Detection(2, 0.95, (10, 10, 90, 90), [1.0, 1.0, 1.0]),  # other category
        ]
    ]
    sides, matched = keypoint_scores(predictions, truths, SCHEMA)
    assert matched == 1
    assert sides == {"eye": ([5.0], []), "paw": ([], [3.0]), "corner": ([], [])}


def test_the_predictor_never_emits_an_untaught_keypoint_and_applies_thresholds() -> None:
    taught = Taught(
        objects={"cat": 3, "box": 2},
        keypoints_labelled={"cat": {"eye": 3, "paw": 0}, "box": {"corner": 2}},
        polygon_vertices={"cat": 9.0},
        keypoint_thresholds={"eye": 2.0, "paw": None, "corner": None},
    )
    restored = Taught.from_dict(taught.to_dict())
    assert restored == taught
    mask = np.ones((20, 20), bool)
    logits = np.array([[5, 5, 1.5], [6, 6, 99.0], [7, 7, 0.0]], np.float32)
    made = InstanceMaker(SCHEMA, taught=restored)(1, 0.9, (0, 0, 20, 20), mask, logits)
    assert made.keypoint_present.tolist() == [False, False, False]  # eye under 2.0; paw never taught
    logits[0, 2] = 2.5
    made = InstanceMaker(SCHEMA, taught=restored)(1, 0.9, (0, 0, 20, 20), mask, logits)
    assert made.keypoint_present.tolist() == [True, False, False]
    # KEYPOINT_THRESHOLD overrides the calibrated thresholds, never the untaught rule
    made = InstanceMaker(SCHEMA, keypoint_threshold=1.0, taught=restored)(1, 0.9, (0, 0, 20, 20), mask, logits)
    assert made.keypoint_present.tolist() == [True, False, False]
    logits[0, 2] = 1.5
    made = InstanceMaker(SCHEMA, keypoint_threshold=1.0, taught=restored)(1, 0.9, (0, 0, 20, 20), mask, logits)
    assert made.keypoint_present.tolist() == [True, False, False]
    # a checkpoint without the entry: every applicable keypoint, as before
    made = InstanceMaker(SCHEMA, taught=Taught.from_dict(None))(1, 0.9, (0, 0, 20, 20), mask, logits)
    assert made.keypoint_present.tolist() == [True, True, False]


def test_a_damaged_entry_reads_as_none() -> None:
    assert Taught.from_dict({"objects": {"cat": "many"}}) is None
    assert Taught.from_dict("nonsense") is None
