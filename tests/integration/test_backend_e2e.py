"""The pre-annotation journey against real processes: Label Studio + backend (uvicorn) + Redis + RQ worker.

Label four images in a generic.xml project through the API, connect the backend as the project's
model, press "Start Training" (the same API call), wait for the published version, then "Retrieve
Predictions" in the Data Manager and check that polygons with nested keypoints of that version are
stored on the tasks. The model is trained for a few dozen steps, so the test checks wiring, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.testing import TrainedProject, retrieve_predictions, shared_trained_project
from stack.testing import LabelStudioServer

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(label_studio: LabelStudioServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> TrainedProject:
    return shared_trained_project(label_studio, redis_url, tmp_path_factory.getbasetemp() / "backend-e2e")


def test_start_training_publishes_a_version(trained: TrainedProject, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert trained.untrained_predictions == 0  # before training: no (empty) predictions were stored
    assert trained.model_version.startswith("v0001-")
    assert trained.run_status["versions"] == [trained.model_version]
    run = trained.run_status["training"]
    assert run["state"] == "succeeded" and run["step"] == run["total"]
    assert run["result"]["annotations"] == len(trained.task_ids)
    models = tmp_path_factory.getbasetemp() / "backend-e2e" / "models" / str(trained.project_id)
    assert (models / "current").read_text().strip() == trained.model_version
    assert (models / trained.model_version / "model.pt").stat().st_size > 1_000_000


def test_label_studio_stores_polygons_with_nested_keypoints(label_studio: LabelStudioServer, trained: TrainedProject) -> None:
    retrieve_predictions(label_studio, trained.project_id)
    ml = label_studio.client.ml.get(id=trained.ml_backend_id)
    assert ml.model_version == trained.model_version
    predictions = label_studio.client.predictions.list(project=trained.project_id)
    by_task = {p.task: p for p in predictions if p.model_version == trained.model_version}
    assert sorted(by_task) == trained.task_ids, [(p.task, p.model_version) for p in predictions]
    with_keypoints = 0
    for prediction in by_task.values():
        regions = prediction.result
        polygons = {r["id"]: r for r in regions if r["type"] == "polygonlabels"}
        for region in regions:
            assert region["to_name"] == "image" and 0 <= region["score"]
            assert (region["original_width"], region["original_height"]) == (224, 160)
            if region["type"] == "keypointlabels":
                assert region["parentID"] in polygons
                assert region["value"]["keypointlabels"][0] in {
                    "ear_tip_left", "ear_tip_right", "eye_left", "eye_right", "nose", "paw_left", "paw_right"
                }
                with_keypoints += 1
        for polygon in polygons.values():
            assert polygon["value"]["polygonlabels"] == ["animal"]
            assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in polygon["value"]["points"])
    assert with_keypoints > 0, [p.result for p in by_task.values()]
