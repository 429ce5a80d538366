"""A training run's augmentation goes to the augmentation workers, and does not wait on ones that are gone.

Real Redis (a private one: a dead worker's registration must not reach other tests), a real
``python -m jobqueue.worker`` on the train queue running the run's augmentation step. A worker killed
with SIGKILL stays registered in Redis for minutes (RQ's worker TTL); what it leaves there is written
with RQ's own ``register_birth``. Oracle: the same augmentation run in the test process, byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from rq import Queue, Worker
from rq.job import Job

from augmentation import augment_dataset, jobs
from backend.training import AUGMENT_PIPELINE
from jobqueue.connection import EmbeddedRedis, connect
from multitask.synthetic import write_parts_dataset
from tests.support.processes import kill_with_horse, repo_env, start_worker, stop_process, tree_bytes

pytestmark = pytest.mark.slow

HEARTBEAT_S = 3  # TRAIN_HEARTBEAT_SECONDS here (default 60)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path / "redis")
    yield server.url
    server.stop()


class _TrainingJob:
    """The augmentation step of a training run (copies 2, seed 4) in a real worker on the train queue."""

    def __init__(self, redis_url: str, tmp_path: Path, coco: Path) -> None:
        self.conn, self.tmp, self.coco = connect(redis_url), tmp_path, coco
        env = repo_env(
            REDIS_URL=redis_url, LSMT_DATA_DIR=str(tmp_path / "worker-data"), AUGMENT_DIR=str(tmp_path / "shared"),
            TRAIN_AUGMENT_COPIES="2", TRAIN_SEED="4", TRAIN_HEARTBEAT_SECONDS=str(HEARTBEAT_S),
        )  # fmt: skip
        self.env, self.log = env, tmp_path / "train-worker.log"
        self.worker = start_worker(env, self.log, "train")
        self.started = time.monotonic()
        self.job = Queue("train", connection=self.conn).enqueue(
            "tests.support.training_probe.augment_as_a_training_run",
            str(coco), str(coco.parent / "images"), str(tmp_path / "augmented"), job_timeout=300,
        )  # fmt: skip

    def result(self) -> tuple[list[str], str, float]:
        """The run's augmentation notes, its augmentation run id and the seconds it took."""
        try:
            while self.job.get_status(refresh=True) not in ("finished", "failed"):
                assert time.monotonic() - self.started < 120, self.log.read_text()[-2000:]
                time.sleep(0.2)
        finally:
            stop_process(self.worker)
        took = time.monotonic() - self.started
        assert self.job.get_status() == "finished", self.log.read_text()[-2000:]
        result = Job.fetch(self.job.id, connection=self.conn).return_value()
        assert isinstance(result, dict)
        notes = [r["augmentation"] for r in result["reports"] if "augmentation" in r]
        assert notes[0].startswith("on 1 augmentation worker(s): run ")
        assert Path(result["dataset"]) == self.tmp / "augmented" / "annotations.json"
        return notes, notes[0].rsplit(" ", 1)[1], took

    def assert_same_images_as_in_process_and_nothing_left(self, run_id: str) -> None:
        # The run's jobs left the queue (a worker that starts later does not redo them), its folder is gone.
        assert Queue(jobs.QUEUE, connection=self.conn).count == 0
        assert not list((self.tmp / "shared").glob("*"))
        reference = augment_dataset(
            self.coco, self.coco.parent / "images", self.tmp / "reference", pipeline=AUGMENT_PIPELINE, copies=2, seed=4
        )
        assert reference == self.tmp / "reference" / "annotations.json"
        assert tree_bytes(self.tmp / "augmented") == tree_bytes(self.tmp / "reference")


def test_shards_nobody_takes_are_augmented_by_the_training_job(private_redis: str, tmp_path: Path) -> None:
    coco = write_parts_dataset(tmp_path / "data", n_images=3, width=320, height=240, n_objects=3, seed=5)
    conn = connect(private_redis)
    # What a SIGKILLed augmentation worker leaves: its registration, listening on "augment", taking nothing.
    Worker([Queue(jobs.QUEUE, connection=conn)], connection=conn, name="killed-augment-worker").register_birth()
    run = _TrainingJob(private_redis, tmp_path, coco)
    notes, run_id, took = run.result()
    assert notes[1:] == [f"in-process: no augmentation worker took run {run_id} for {HEARTBEAT_S} s"]
    print(f"\naugmented in-process {took:.1f} s after the submit (stall limit {HEARTBEAT_S} s)")
    assert {s["state"] for s in jobs.run_status(conn, run_id)["shards"]} == {"canceled"}
    run.assert_same_images_as_in_process_and_nothing_left(run_id)


def test_a_shard_whose_worker_dies_is_augmented_by_the_training_job(private_redis: str, tmp_path: Path) -> None:
    coco = write_parts_dataset(tmp_path / "data", n_images=6, width=1280, height=720, n_objects=6, seed=5)
    conn = connect(private_redis)
    augmenter = start_worker(repo_env(REDIS_URL=private_redis), tmp_path / "augment-worker.log", jobs.QUEUE)
    try:
        while not Worker.all(connection=conn):  # registered: the training job will count it
            time.sleep(0.1)
        run = _TrainingJob(private_redis, tmp_path, coco)
        deadline = time.monotonic() + 60
        while not [
            row
            for key in conn.scan_iter("augment:run:*:done")
            for row in cast(list[bytes], conn.hvals(key))
            if int(row)
        ]:  # the worker is inside its shard: one image done
            assert time.monotonic() < deadline, (tmp_path / "augment-worker.log").read_text()[-2000:]
            time.sleep(0.05)
        kill_with_horse(augmenter.pid)
        augmenter.wait(10)
    finally:
        stop_process(augmenter)
    notes, run_id, took = run.result()
    assert notes[1:] == [f"in-process: the augmentation workers stopped during run {run_id}"]
    print(f"\naugmented in-process {took:.1f} s after the submit (shard heartbeat {HEARTBEAT_S} s)")
    assert [s["state"] for s in jobs.run_status(conn, run_id)["shards"]] == ["canceled"]  # was abandoned
    run.assert_same_images_as_in_process_and_nothing_left(run_id)
