"""Workers that share no disk: the backend and two RQ workers as separate processes, each with its own private
data folder (``LSMT_DATA_DIR``), models and augmentation only on an S3 server (moto's, over HTTP).

A real Label Studio project is trained through "Start Training" (the training run's augmentation goes to the
other worker as shard jobs through object storage), the backend serves the published version from its
private copy of the S3 object, and a sharded augmentation run submitted with ``s3://`` URLs to both
workers gives the same dataset as the same augmentation run in this process on local files (a truth the
workers did not compute). Oracles: the S3 server's request log and objects, the data folders on disk,
Label Studio's stored predictions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq import Worker
from rq.job import Job

from augmentation import augment_dataset
from augmentation import jobs as augment_jobs
from jobqueue.connection import connect
from tests.support.backend import (
    Process,
    backend_env,
    create_annotated_project,
    redis_database,
    retrieve_predictions,
    start_backend,
    synthetic_image,
    wait_for_training,
)
from tests.support.labelstudio import LabelStudioServer
from tests.support.object_storage import S3Server, running_s3
from tests.support.processes import start_worker

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

BUCKET = "lsmt-shared"
REDIS_DB = 9  # apart from the other journeys' workers, which would take this project's training job


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with running_s3(BUCKET) as server:
        yield server


def test_backend_and_two_workers_share_only_object_storage(
    label_studio: LabelStudioServer, redis_url: str, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ls = label_studio
    url = redis_database(redis_url, REDIS_DB)
    shared = {
        **backend_env(ls, url, tmp_path / "unused"),
        **s3.aws_env(),
        "MODEL_DIR": f"s3://{BUCKET}/models",
        "AUGMENT_DIR": f"s3://{BUCKET}/augment",
        "TRAIN_AUGMENT_COPIES": "2",
        "TRAIN_STEPS": "10",  # wiring, not accuracy: a trained model's predictions are stored even when empty
    }
    data = {name: tmp_path / name for name in ("backend", "worker-a", "worker-b")}
    processes: list[Process] = []
    try:
        backend_url, backend = start_backend(
            {**shared, "LSMT_DATA_DIR": str(data["backend"])}, tmp_path / "backend.log"
        )
        processes.append(backend)
        for name in ("worker-a", "worker-b"):
            log = tmp_path / f"{name}.log"
            env = {**shared, "LSMT_DATA_DIR": str(data[name])}
            processes.append(Process(start_worker(env, log, "train,augment"), log))
        workers = processes[1:]

        project_id, labeled, new = create_annotated_project(ls, "shared nothing", images=4, unlabeled=1)
        ml = ls.client.ml.create(project=project_id, url=backend_url, title="multitask", is_interactive=False)
        _wait_for_workers(url, 2)
        ls.client.ml.train(id=ml.id)
        status = wait_for_training(backend_url, project_id, "untrained", workers[0])
        version = status["model_version"]
        run = status["training"]
        logs = "\n".join(w.log_tail() for w in workers)

        # the run's augmentation went as shard jobs to the worker that was not training, through S3
        assert run["augmentation"].startswith("on 1 augmentation worker(s): run "), run
        assert run["augmented"] == run["augment_total"] == len(labeled), run
        assert run["result"]["augment_copies"] == 2
        run_id = run["augmentation"].rsplit(" ", 1)[1]
        shard_puts = [r.path for r in s3.requests if r.method == "PUT" and "/augment/" in r.path]
        assert any(f"/.augment-{run_id}/shard-" in p for p in shard_puts), logs
        assert any(p.endswith("/augmented/annotations.json") for p in shard_puts)
        assert s3.keys(BUCKET, "augment/") == []  # the run's shared folder is removed afterwards

        # the version is in object storage and nowhere on the three disks
        assert s3.get_object(BUCKET, f"models/{project_id}/current").decode().strip() == version
        assert len(s3.get_object(BUCKET, f"models/{project_id}/{version}/model.pt")) > 1_000_000
        for folder in data.values():
            assert not (folder / "models").exists()

        # the backend serves it from its private copy, fetched from S3
        retrieve_predictions(ls, project_id)
        stored = {p.task: p.model_version for p in ls.client.predictions.list(project=project_id)}
        assert {task: stored.get(task) for task in labeled + new} == dict.fromkeys(labeled + new, version)
        (cached,) = data["backend"].glob(f"model-cache/*/{project_id}/{version}/model.pt")
        assert cached.read_bytes() == s3.get_object(BUCKET, f"models/{project_id}/{version}/model.pt")
        model_gets = [r for r in s3.reads(BUCKET) if r.path == f"/{BUCKET}/models/{project_id}/{version}/model.pt"]
        assert len(model_gets) >= 1  # the backend's (and the worker's pre-annotation) fetch
        assert not any(r.carries(ls.token) for r in s3.requests)  # Label Studio's key never reaches the storage

        # a sharded augmentation run on both workers, inputs and outputs in S3 only
        for name, value in s3.aws_env().items():
            monkeypatch.setenv(name, value)
        _sharded_run_matches_the_local_one(s3, url, tmp_path)
    finally:
        for process in processes:
            process.stop()


def _sharded_run_matches_the_local_one(s3: S3Server, redis_url: str, tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "images").mkdir(parents=True)
    images, annotations = [], []
    for seed in range(4):
        png, obj = synthetic_image(seed)
        name = f"animal{seed}.png"
        (local / "images" / name).write_bytes(png)
        s3.put_object(BUCKET, f"runs/source/images/{name}", png)
        images.append({"id": seed + 1, "file_name": name, "width": 224, "height": 160})
        xs, ys = [x for x, _ in obj.polygon], [y for _, y in obj.polygon]
        box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        flat = [c for point in obj.polygon for c in point]
        annotations.append({"id": seed + 1, "image_id": seed + 1, "category_id": 1, "segmentation": [flat],
                            "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "animal", "supercategory": "", "keypoints": [], "skeleton": []}]}  # fmt: skip
    (local / "dataset.json").write_text(json.dumps(coco))
    s3.put_object(BUCKET, "runs/source/dataset.json", json.dumps(coco).encode(), "application/json")

    conn = connect(redis_url)
    run_id = augment_jobs.submit_run(
        conn, f"s3://{BUCKET}/runs/source/dataset.json", f"s3://{BUCKET}/runs/source/images",
        f"s3://{BUCKET}/runs/out", pipeline="medium", copies=2, seed=5, shard_size=1,
    )  # fmt: skip
    status = augment_jobs.wait(conn, run_id, timeout=600)
    assert status["state"] == "finished", status
    assert status["result"] == f"s3://{BUCKET}/runs/out/annotations.json"
    ran_on = {Job.fetch(s["job_id"], connection=conn).worker_name for s in status["shards"]}
    assert len(status["shards"]) == 4 and None not in ran_on

    expected = augment_dataset(
        local / "dataset.json", local / "images", local / "out", pipeline="medium", copies=2, seed=5
    )
    assert json.loads(s3.get_object(BUCKET, "runs/out/annotations.json")) == json.loads(expected.read_bytes())
    for image in json.loads(expected.read_bytes())["images"]:
        assert (
            s3.get_object(BUCKET, f"runs/out/images/{image['file_name']}")
            == (local / "out" / "images" / image["file_name"]).read_bytes()
        )
    assert not [k for k in s3.keys(BUCKET, "runs/out/") if "/.augment-" in f"/{k}"]  # shard files removed by the merge


def _wait_for_workers(redis_url: str, count: int) -> None:
    """Both workers registered in Redis, so the training job finds the other one listening."""
    conn = connect(redis_url)
    for _ in range(120):
        if len(Worker.all(connection=conn)) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{count} workers did not register within 60 s")
