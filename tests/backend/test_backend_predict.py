"""/health, /setup and /predict against the real app: response shapes Label Studio accepts."""

from __future__ import annotations

import logging

import pytest

from backend.predictions import NO_VERSION_REASON
from backend.settings import Settings
from combined_coco.schema import Schema
from tests.backend.backend_fakes import (
    GENERIC,
    Backend,
    FakePredictor,
    animal,
    make_backend,
    png_bytes,
    predict_payload,
)

NO_BOX_CONFIG = GENERIC.replace(GENERIC[GENERIC.index("  <RectangleLabels") : GENERIC.index("  <KeyPointLabels")], "")


def test_health_and_root_answer_up(backend: Backend) -> None:
    for path in ("/health", "/"):
        response = backend.client.get(path)
        assert response.status_code == 200
        assert response.json()["status"] == "UP"


def test_setup_reports_untrained_then_the_published_version(backend: Backend) -> None:
    body = {"project": "1.1700000000", "schema": GENERIC, "hostname": "http://x", "access_token": "t"}
    assert backend.client.post("/setup", json=body).json() == {"model_version": "untrained"}
    version = backend.publish(1)
    assert backend.client.post("/setup", json=body).json() == {"model_version": version}
    assert (
        backend.client.post("/setup", json={**body, "project": "2.1700000000"}).json()["model_version"] == "untrained"
    )


def test_predict_without_model_is_empty_not_an_error(backend: Backend) -> None:
    """One empty list of predictions per task: Label Studio stores none and logs no error
    (tests/integration/test_untrained_backend.py checks that in a real one), and says why."""
    response = backend.client.post("/predict", json=predict_payload())
    assert response.status_code == 200
    assert response.json() == {"results": [[]], "model_version": "untrained", "empty_reason": NO_VERSION_REASON}
    assert "Start Training" in NO_VERSION_REASON
    assert backend.client.get("/runs/1").json()["empty_reason"] == NO_VERSION_REASON
    backend.publish(1)
    assert backend.client.get("/runs/1").json()["empty_reason"] is None


def test_predict_returns_polygon_and_nested_keypoints_in_percent(backend: Backend) -> None:
    version = backend.publish(1)
    response = backend.client.post("/predict", json=predict_payload())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    [prediction] = body["results"]
    assert prediction["model_version"] == version
    assert prediction["score"] == pytest.approx(0.8)
    by_type: dict[str, list[dict]] = {}
    for region in prediction["result"]:
        by_type.setdefault(region["type"], []).append(region)
        assert region["to_name"] == "image"
        assert (region["original_width"], region["original_height"], region["image_rotation"]) == (128, 64, 0)
        assert isinstance(region["score"], float)
    [polygon] = by_type["polygonlabels"]
    assert polygon["from_name"] == "polygon"
    assert polygon["value"]["polygonlabels"] == ["animal"]
    # the 128x64 image: (32, 16) px is (25 %, 25 %); the tiny second part of the mask is dropped
    assert polygon["value"]["points"] == [[25.0, 25.0], [75.0, 25.0], [75.0, 75.0], [25.0, 75.0]]
    # the config has RectangleLabels "animal" too, but an object with a polygon gets no box: the export derives it
    assert "rectanglelabels" not in by_type
    keypoints = by_type["keypointlabels"]
    schema = backend.predictor.schema
    assert [k["value"]["keypointlabels"][0] for k in keypoints] == list(schema.category("animal").keypoints)
    for k in keypoints:
        assert k["from_name"] == "keypoint"
        assert k["parentID"] == polygon["id"]
        i = schema.keypoint_index(k["value"]["keypointlabels"][0])
        assert k["value"]["x"] == pytest.approx(100 * (40 + 4 * i) / 128)
        assert k["value"]["y"] == pytest.approx(100 * (16 + i) / 64)
    assert len({r["id"] for r in prediction["result"]}) == len(prediction["result"])


def test_only_present_keypoints_become_regions(settings: Settings, schema: Schema, backend_redis_url: str) -> None:
    backend = make_backend(
        settings, FakePredictor(schema, [animal(schema, present={"nose", "tip"})]), backend_redis_url
    )
    backend.publish(1)
    result = backend.client.post("/predict", json=predict_payload()).json()["results"][0]["result"]
    # "tip" is present in the model output but belongs to "tool", not "animal"
    assert [r["value"]["keypointlabels"] for r in result if r["type"] == "keypointlabels"] == [["nose"]]


def test_no_rectangle_control_means_no_rectangles(backend: Backend) -> None:
    backend.publish(1)
    result = backend.client.post("/predict", json=predict_payload(config=NO_BOX_CONFIG)).json()["results"][0]["result"]
    assert {r["type"] for r in result} == {"polygonlabels", "keypointlabels"}


def test_labels_the_project_no_longer_has_are_skipped_with_a_warning(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.publish(1)
    renamed = GENERIC.replace('value="animal"', 'value="quokka"').replace('category="animal"', 'category="quokka"')
    with caplog.at_level(logging.WARNING):
        body = backend.client.post("/predict", json=predict_payload(config=renamed)).json()
    assert body["results"][0]["result"] == []
    assert "'animal'" in caplog.text and "no longer has" in caplog.text
    assert body["results"][0]["empty_reason"].startswith("1 detection(s) above SCORE_THRESHOLD=0.5 but none")


def test_an_empty_prediction_says_why_in_the_response_and_the_log(
    settings: Settings, schema: Schema, backend_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(settings, FakePredictor(schema, []), backend_redis_url)
    version = backend.publish(1)
    with caplog.at_level(logging.INFO):
        [item] = backend.client.post("/predict", json=predict_payload()).json()["results"]
    reason = "no detection above SCORE_THRESHOLD=0.5 -- train longer or lower the threshold"
    assert item["result"] == [] and item["empty_reason"] == reason
    assert f"model {version} predicts nothing for 1 of 1 task(s): task 11: {reason}" in caplog.text


def test_batch_keeps_one_result_per_task_and_reports_bad_media_per_task(backend: Backend, media_server) -> None:
    backend.publish(1)
    payload = predict_payload()
    payload["tasks"] = [
        {"id": 1, "data": {"image": "/data/upload/1/cat.png"}},
        {"id": 2, "data": {"image": "http://169.254.169.254/latest/meta-data"}},
        {"id": 3, "data": {"image": "/data/upload/1/missing.png"}},
        {"id": 4, "data": {"image": f"{media_server.url}/data/upload/1/cat.png"}},
    ]
    results = backend.client.post("/predict", json=payload).json()["results"]
    assert len(results) == 4
    assert results[0]["result"] and results[3]["result"]
    assert results[1]["result"] == [] and "not served by Label Studio" in results[1]["error"]
    assert results[2]["result"] == [] and "HTTP 404" in results[2]["error"]
    assert not any("169.254" in path for path in media_server.requests)


def test_images_over_the_pixel_limit_are_refused(
    settings: Settings, schema: Schema, media_server, backend_redis_url: str
) -> None:
    media_server.files["/data/upload/1/big.png"] = png_bytes(300, 200)
    small = Settings(**{**settings.__dict__, "max_image_pixels": 50_000})
    backend = make_backend(small, FakePredictor(schema, [animal(schema)]), backend_redis_url)
    backend.publish(1)
    [result] = backend.client.post("/predict", json=predict_payload("/data/upload/1/big.png")).json()["results"]
    assert "300x200, over MAX_IMAGE_PIXELS=50000" in result["error"]


def test_model_is_reloaded_only_when_a_new_version_is_published(backend: Backend) -> None:
    first = backend.publish(1)
    for _ in range(3):
        assert backend.client.post("/predict", json=predict_payload()).json()["model_version"] == first
    assert len(backend.loads) == 1
    second = backend.publish(1)
    assert second != first
    assert backend.client.post("/predict", json=predict_payload()).json()["model_version"] == second
    assert [p.parent.name for p in backend.loads] == [first, second]
    assert backend.store.versions(1) == [first, second]  # the old version stays on disk


def test_at_most_max_objects_per_image_highest_scores_first(
    settings: Settings, schema: Schema, backend_redis_url: str
) -> None:
    instances = [animal(schema) for _ in range(4)]
    for i, inst in enumerate(instances):
        inst.score = 0.1 * (i + 1)
    # four copies of one square: MASK_NMS_IOU=1 keeps the duplicates, so that only the cap picks
    capped = Settings(**{**settings.__dict__, "max_objects": 2, "mask_nms_iou": 1.0})
    backend = make_backend(capped, FakePredictor(schema, instances), backend_redis_url)
    backend.publish(1)
    result = backend.client.post("/predict", json=predict_payload()).json()["results"][0]["result"]
    assert sorted(r["score"] for r in result if r["type"] == "polygonlabels") == pytest.approx([0.3, 0.4])


def test_duplicates_of_one_object_come_back_once_with_the_best_score(backend: Backend, schema: Schema) -> None:
    """Three same-label squares over one object (default MASK_NMS_IOU=0.5): one polygon, the highest score."""
    instances = [animal(schema) for _ in range(3)]
    for inst, score in zip(instances, (0.6, 0.9, 0.7)):
        inst.score = score
    backend.predictor.instances = instances
    backend.publish(1)
    result = backend.client.post("/predict", json=predict_payload()).json()["results"][0]["result"]
    assert [r["score"] for r in result if r["type"] == "polygonlabels"] == [pytest.approx(0.9)]
