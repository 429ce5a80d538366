"""A project on S3: train, pre-annotate and predict with images that live in a real S3 API, through Label Studio.

moto's S3 server (``tests.support.object_storage``) holds five images; a real Label Studio reads them
through an S3 source storage with a custom endpoint (as MinIO users connect theirs), so tasks hold
``s3://bucket/key``. Four are labeled through the API, then the real journey: connect ``python -m
backend``, press Start Training (worker: export -> images -> train -> publish -> pre-annotate the
unlabeled task), press Retrieve Predictions (``/predict``). Run with the storage's pre-signed URLs on
(Label Studio answers 303 and the backend reads from S3 itself) and off (Label Studio streams the
bytes). The oracle is the S3 server's own request log: which objects were read and how, and that no
request ever carried Label Studio's token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.backend import (
    FAST_TRAINING_ENV,
    GENERIC_CONFIG,
    annotation_result,
    backend_env,
    retrieve_predictions,
    start_backend,
    start_train_worker,
    synthetic_image,
    wait_for_training,
)
from tests.support.labelstudio import LabelStudioServer
from tests.support.object_storage import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server, running_s3

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

BUCKET = "lsmt-media"
LABELED, UNLABELED = 4, 1
# Only the media path differs from the e2e journey: the smallest run that publishes a version (2 steps on
# 96-128 px, no augmentation), and thresholds that let even that model draw regions (a random one does).
CLOUD_TRAINING_ENV = {
    **FAST_TRAINING_ENV,
    "TRAIN_STEPS": "2", "TRAIN_BATCH_SIZE": "1", "TRAIN_MIN_SIZE": "96", "TRAIN_MAX_SIZE": "128",
    "TRAIN_AUGMENT_COPIES": "0", "SCORE_THRESHOLD": "0.0", "MASK_THRESHOLD": "0.05",
}  # fmt: skip


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3(BUCKET) as server:
        yield server


def s3_project(ls: LabelStudioServer, s3: S3Server, presign: bool) -> tuple[int, dict[int, str]]:
    """A generic.xml project whose tasks come from an S3 source storage on ``s3``; returns the project id and
    task id -> object key. The first ``LABELED`` tasks (by id) get annotations."""
    prefix = f"presign-{str(presign).lower()}/"
    drawn = {f"{prefix}animal{seed}.png": synthetic_image(seed) for seed in range(LABELED + UNLABELED)}
    for key, (png, _) in drawn.items():
        s3.put_object(BUCKET, key, png)
    project = ls.client.projects.create(title=f"S3 project, presign={presign}", label_config=GENERIC_CONFIG.read_text())
    assert project.id is not None
    # Settings > Cloud Storage > Add Source Storage: Amazon S3 with a custom endpoint
    storage = httpx.post(
        f"{ls.url}/api/storages/s3/", headers=ls.headers, timeout=60,
        json={"project": project.id, "title": "moto", "bucket": BUCKET, "prefix": prefix, "regex_filter": r".*\.png",
              "use_blob_urls": True, "presign": presign, "presign_ttl": 15, "s3_endpoint": s3.url,
              "region_name": REGION, "aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY},
    )  # fmt: skip
    assert storage.status_code == 201, storage.text
    synced = httpx.post(f"{ls.url}/api/storages/s3/{storage.json()['id']}/sync", headers=ls.headers, timeout=120)
    assert synced.status_code == 200, synced.text
    tasks = httpx.get(
        f"{ls.url}/api/tasks", headers=ls.headers, timeout=60,
        params={"project": project.id, "page_size": 100, "resolve_uri": "false"},
    ).json()["tasks"]  # fmt: skip
    keys = {t["id"]: t["data"]["image"].removeprefix(f"s3://{BUCKET}/") for t in tasks}
    assert sorted(keys.values()) == sorted(drawn), tasks  # the raw URIs Label Studio stores: s3://bucket/key
    for task_id, key in sorted(keys.items())[:LABELED]:
        ls.annotate(task_id, annotation_result(drawn[key][1], 224, 160))
    return project.id, keys


@pytest.mark.parametrize("presign", [True, False], ids=["presigned-urls", "proxied-by-label-studio"])
def test_a_project_on_s3_trains_preannotates_and_predicts(
    label_studio: LabelStudioServer, redis_url: str, s3: S3Server, tmp_path: Path, presign: bool
) -> None:
    ls = label_studio
    project_id, keys = s3_project(ls, s3, presign)
    unlabeled = sorted(keys)[LABELED:]  # s3_project annotates the first LABELED task ids
    before = len(s3.requests)
    database = 9 if presign else 10  # this test's own Redis database: no other test's worker takes its run
    env = {**backend_env(ls, f"{redis_url}{'&' if '?' in redis_url else '?'}db={database}", tmp_path / "models"),
           **CLOUD_TRAINING_ENV}  # fmt: skip
    backend_url, backend = start_backend(env, tmp_path / "backend.log")
    worker = start_train_worker(env, tmp_path / "worker.log")
    try:
        ml = ls.client.ml.create(project=project_id, url=backend_url, title="multitask", is_interactive=False)
        began = time.monotonic()
        ls.client.ml.train(id=ml.id)  # Settings > Model > Start Training
        status = wait_for_training(backend_url, project_id, "untrained", worker)
        run_seconds = time.monotonic() - began
        version = status["model_version"]
        preannotated = {p.task: p.model_version for p in ls.client.predictions.list(project=project_id)}
        during_training = s3.requests[before:]
        retrieve_predictions(ls, project_id)  # Data Manager > Actions > Retrieve Predictions -> /predict
        log = backend.log_tail(200_000) + worker.log_tail(200_000)
    finally:
        backend.stop()
        worker.stop()
    run = status["training"]
    assert run["state"] == "succeeded" and run["result"]["annotations"] == LABELED
    # the worker's pre-annotation read the unlabeled image and wrote the version's prediction to it
    assert run["preannotation"]["state"] == "done" and run["preannotation"]["failed"] == 0, run["preannotation"]
    assert run["preannotation"]["tasks"] == UNLABELED
    assert {task: v for task, v in preannotated.items() if task in unlabeled} == dict.fromkeys(unlabeled, version)
    predictions = ls.client.predictions.list(project=project_id)
    stored: dict[int, list[dict[str, Any]]] = {}
    for p in predictions:
        if p.model_version == version:
            stored.setdefault(p.task, []).extend(p.result or [])
    assert sorted(stored) == sorted(keys), "every task has a prediction of the published version"
    regions = [r for results in stored.values() for r in results]
    assert regions, "the trained model drew nothing at all"
    # the image size Label Studio records with each region is the decoded S3 object's: 224 x 160 px
    assert {(r["original_width"], r["original_height"]) for r in regions} == {(224, 160)}
    assert "is refused" not in log and "cannot be read" not in log and "answered HTTP" not in log, log[-3000:]

    mine = set(keys.values())  # this test's objects (each test has its own prefix in the bucket)
    reads = [r for r in s3.reads(BUCKET) if r.path.removeprefix(f"/{BUCKET}/") in mine]
    assert {r.path.removeprefix(f"/{BUCKET}/") for r in reads} == mine
    presigned = [r for r in reads if r.presigned]
    if presign:
        # the backend followed Label Studio's 303 and read every image from S3 itself: training read the
        # labeled ones and pre-annotation the new one, then /predict all of them again
        during = {r.path.removeprefix(f"/{BUCKET}/") for r in during_training if r.presigned and r in reads}
        assert during == mine
        assert {r.path.removeprefix(f"/{BUCKET}/") for r in presigned} == mine
        assert len(presigned) >= 2 * len(mine) - UNLABELED
        assert all("Authorization" not in r.headers for r in presigned)
        # the signatures S3 received (credentials until they expire) are not in the backend's or worker's log
        assert not [r.target for r in presigned if r.query["X-Amz-Signature"][0] in log]
    else:
        assert presigned == []  # Label Studio read every object with its own signed requests and streamed it
    leaked = [r.target for r in s3.requests if r.carries(ls.token) or "Token " in r.headers.get("Authorization", "")]
    assert leaked == []
    assert not [r.target for r in s3.requests if "sessionid" in r.headers.get("Cookie", "")]
    print(
        f"\npresign={presign}: run {run_seconds:.0f} s (train {status['versions'][0]['train_seconds']} s),"
        f" {len(reads)} S3 object reads, {len(presigned)} through pre-signed redirects"
    )
