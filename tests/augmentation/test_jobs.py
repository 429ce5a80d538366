"""Runs on a real Redis with real RQ worker processes, including a worker killed mid-shard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pycocotools.coco import COCO

from augmentation import jobs
from jobqueue.connection import connect
from multitask.synthetic import write_parts_dataset
from tests.support.processes import kill_with_horse, tree_bytes

pytestmark = pytest.mark.slow


def test_killed_worker_then_resubmit_gives_identical_bytes(redis_url, worker_factory, tmp_path: Path) -> None:
    coco = write_parts_dataset(tmp_path / "data", n_images=6, width=1280, height=720, n_objects=6, seed=3)
    images = coco.parent / "images"
    conn = connect(redis_url)
    kwargs: dict[str, Any] = dict(pipeline="medium", copies=3, seed=7, shard_size=3)

    # Uninterrupted reference run, two workers, two shards.
    workers = [worker_factory("augment"), worker_factory("augment")]
    clean = jobs.submit_run(conn, coco, images, tmp_path / "clean", **kwargs)
    status = jobs.wait(conn, clean, timeout=120)
    assert status["state"] == "finished", status
    assert (status["done"], status["total"], status["failures"]) == (6, 6, [])
    assert len(COCO(status["result"]).getImgIds()) == 6 * 4
    reference = tree_bytes(tmp_path / "clean")
    for proc in workers:
        proc.terminate()
        proc.wait(30)

    # Same run again with one worker, killed while its first shard is half done.
    run = jobs.submit_run(conn, coco, images, tmp_path / "killed", heartbeat_seconds=2, **kwargs)
    assert jobs.run_status(conn, run)["state"] == "queued"
    victim = worker_factory("augment")
    deadline = time.monotonic() + 60
    while jobs.run_status(conn, run)["shards"][0]["done"] < 1:
        assert time.monotonic() < deadline, "the worker never started shard 0"
        time.sleep(0.02)
    kill_with_horse(victim.pid)
    victim.wait(10)

    status = jobs.wait(conn, run, timeout=30)  # the heartbeat expires: the shard is abandoned
    assert status["state"] == "failed" and status["result"] is None
    assert [s["state"] for s in status["shards"]] == ["abandoned", "queued"]
    assert not (tmp_path / "killed" / "annotations.json").exists()

    assert jobs.resubmit(conn, run) == [0]
    worker_factory("augment")
    status = jobs.wait(conn, run, timeout=120)
    assert status["state"] == "finished", status
    assert status["done"] == status["total"] == 6
    assert tree_bytes(tmp_path / "killed") == reference
    assert not list((tmp_path / "killed").rglob(".*"))  # no shard files, no half-written images


def test_failed_images_are_reported_by_id_and_block_the_merge(redis_url, worker_factory, tmp_path: Path) -> None:
    coco = write_parts_dataset(tmp_path / "data", n_images=4, width=320, height=200, n_objects=3, seed=1)
    (coco.parent / "images" / "synthetic_0003.png").unlink()
    conn = connect(redis_url)
    worker_factory("augment")
    run = jobs.submit_run(
        conn, coco, coco.parent / "images", tmp_path / "out", pipeline="light", copies=1, shard_size=2
    )
    status = jobs.wait(conn, run, timeout=120)
    assert status["state"] == "failed"
    assert [f["image_id"] for f in status["failures"]] == [3]
    assert "synthetic_0003.png" in status["failures"][0]["error"]
    assert [s["state"] for s in status["shards"]] == ["finished", "failed"]
    assert not (tmp_path / "out" / "annotations.json").exists()
