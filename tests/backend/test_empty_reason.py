"""When a version predicts nothing on an image, the reason says what to do."""

from __future__ import annotations

from backend.predictions import empty_reason
from multitask.inference import Detections


def test_candidates_under_the_threshold_are_counted() -> None:
    assert empty_reason(Detections([], candidates=12), 0.5) == (
        "0 of 12 detections above SCORE_THRESHOLD=0.5 -- train longer or lower the threshold"
    )


def test_no_candidates_at_all_asks_for_training_not_a_lower_threshold() -> None:
    reason = empty_reason(Detections([], candidates=0), 0.5)
    assert "no object candidates" in reason and "threshold" not in reason


def test_a_predictor_without_counts_and_undrawable_detections() -> None:
    assert empty_reason([], 0.3) == "no detection above SCORE_THRESHOLD=0.3 -- train longer or lower the threshold"
    assert empty_reason(["an instance"], 0.3).startswith("1 detection(s) above SCORE_THRESHOLD=0.3 but none")
