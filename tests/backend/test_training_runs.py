"""What a training run starts from, which tasks it holds out, and the versions GET /runs lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.model_store import ModelStore
from backend.settings import Settings, SettingsError
from backend.training import (
    _images_subset,
    _previous_heldout,
    _start_point,
    _task_hash,
    holdout_split,
    train_and_publish,
)
from combined_coco.config_from_description import config_from_description
from combined_coco.schema import Schema
from multitask.checkpoint import Checkpoint, save_checkpoint
from multitask.model import ModelConfig, build_model
from multitask.synthetic import SCHEMA, write_synthetic_dataset
from tests.backend.backend_fakes import Backend, FakePredictor, make_backend


def _coco(tasks: dict[int, str]) -> dict:
    """One image and one annotation per task; ``tasks`` maps task id -> image URL."""
    images = [
        {"id": i, "file_name": f"{i}.png", "ls_task_id": task, "ls_image": url}
        for i, (task, url) in enumerate(tasks.items())
    ]
    annotations = [{"id": i, "image_id": i, "category_id": 1} for i in range(len(images))]
    return {"images": images, "annotations": annotations, "categories": []}


def _held_tasks(heldout: dict) -> set[int]:
    return {im["ls_task_id"] for im in heldout["images"]}


def test_holdout_is_stable_about_the_share_and_keeps_a_photo_on_one_side() -> None:
    tasks = {task: f"/data/upload/1/{task}.png" for task in range(1, 1001)}
    train, heldout = holdout_split(_coco(tasks), 0.2)
    held = _held_tasks(heldout)
    assert 170 <= len(held) <= 230  # ~20% of 1000 (binomial sd ~13)
    assert len(train["images"]) + len(heldout["images"]) == 1000
    assert {a["image_id"] for a in heldout["annotations"]} == {im["id"] for im in heldout["images"]}

    # more tasks later: none of the existing ones changes side
    more = {**tasks, **{task: f"/data/upload/1/{task}.png" for task in range(1001, 1501)}}
    assert _held_tasks(holdout_split(_coco(more), 0.2)[1]) & set(tasks) == held

    # two tasks on one photo: both on the side of the lower task id
    out, kept = min(held), min(set(tasks) - held)
    shared = {**tasks, kept: tasks[out]}  # task `kept` now shows `out`'s photo, and `out` < or > `kept`
    train, heldout = holdout_split(_coco(shared), 0.2)
    side = min(out, kept) in held
    assert ({out, kept} <= _held_tasks(heldout)) == side
    assert ({out, kept} & _held_tasks(heldout) == set()) == (not side)


def test_new_settings_are_read_and_checked() -> None:
    env = {
        "TRAIN_INIT": "none",
        "RETRAIN_STEPS": "7",
        "HOLDOUT_MIN_TASKS": "3",
        "HOLDOUT_SHARE": "0.5",
        "TRAIN_THREADS": "2",
    }
    settings = Settings.from_env({**env, "RETRAIN_LR": "0.005"})
    assert settings.retrain_learning_rate == 0.005
    assert (settings.train_init, settings.retrain_steps, settings.holdout_min_tasks) == ("none", 7, 3)
    assert (settings.holdout_share, settings.train_threads) == (0.5, 2)
    defaults = Settings.from_env({})
    assert (defaults.train_init, defaults.retrain_steps, defaults.holdout_min_tasks) == ("coco", 100, 10)
    with pytest.raises(SettingsError, match="HOLDOUT_SHARE"):
        Settings.from_env({"HOLDOUT_SHARE": "1.5"})


def _publish(store: ModelStore, schema: Schema, tmp_path: Path) -> str:
    config = ModelConfig.for_schema(schema, min_size=64, max_size=64)
    path = save_checkpoint(Checkpoint("m", schema, config, build_model(config).state_dict()), tmp_path / "m.pt")
    return store.publish(3, path, {"steps": 5})


def test_retrain_continues_from_the_version_only_when_the_schema_is_unchanged(
    settings: Settings, schema: Schema, tmp_path: Path
) -> None:
    store = ModelStore(settings.model_dir)
    first = _start_point(3, store, schema, settings)
    assert (first.finetune_from, first.steps, first.started_from) == (None, settings.train_steps, "coco")

    version = _publish(store, schema, tmp_path)
    same = _start_point(3, store, schema, settings)
    assert same.finetune_from == str(store.checkpoint(3, version))
    assert (same.steps, same.started_from, same.transferred_from) == (
        settings.retrain_steps,
        f"version {version}",
        None,
    )
    assert same.lr == settings.train_lr / 10 == first.lr / 10

    changed_schema = Schema.from_dict({**schema.to_dict(), "categories": schema.to_dict()["categories"][:1]})
    changed = _start_point(3, store, changed_schema, settings)
    assert changed.finetune_from == str(store.checkpoint(3, version))
    assert (changed.steps, changed.started_from, changed.transferred_from) == (
        settings.train_steps,
        "coco",
        f"version {version}",
    )
    assert changed.lr == settings.train_lr


def test_runs_lists_every_version_with_its_scores_oldest_first(
    settings: Settings, schema: Schema, backend_redis_url: str
) -> None:
    backend: Backend = make_backend(settings, FakePredictor(schema, []), backend_redis_url)
    first = backend.publish(4)
    meta = {"started_from": "version " + first, "steps": 100, "training_set_fit": {"bbox_AP": 0.9},
            "heldout": {"tasks": 2, "bbox_AP": 0.5}, "heldout_edit_cost": {"ratio": 0.25, "actions": 30, "scratch": 120},
            "beat_previous": True, "train_seconds": 12.5}  # fmt: skip
    checkpoint = Path(backend.store.root.url) / "fake.pt"
    second = backend.store.publish(4, checkpoint, meta)
    third = backend.store.publish(4, checkpoint, {})
    (Path(backend.store.root.url) / "4" / third / "meta.json").write_text("{not json")  # a damaged file hides nothing

    body = backend.client.get("/runs/4").json()
    assert body["model_version"] == third
    assert [v["version"] for v in body["versions"]] == [first, second, third]
    assert body["versions"][1] == {**meta, "version": second}
    for summary in (body["versions"][0], body["versions"][2]):
        assert {k: summary[k] for k in ("started_from", "heldout", "beat_previous", "train_seconds")} == dict.fromkeys(
            ("started_from", "heldout", "beat_previous", "train_seconds")
        )
    assert json.loads((backend.store.project_dir(4) / second / "meta.json").read_bytes())["beat_previous"] is True


def test_two_runs_hold_out_the_same_tasks_and_compare_versions_on_them(
    tmp_path: Path, coco_light_weights: Path
) -> None:
    """The run after the Label Studio export, on 6 synthetic tasks: v1 from (stand-in) COCO weights, v2 continued from v1."""
    dataset = write_synthetic_dataset(tmp_path / "data", num_images=6, size=64)
    coco = json.loads(dataset.read_text())
    for image in coco["images"]:
        image["ls_task_id"], image["ls_image"] = 100 + image["id"], f"/data/upload/7/{image['file_name']}"
    expected = {im["ls_task_id"] for im in coco["images"] if _task_hash(im["ls_task_id"]) < 0.25}
    assert 0 < len(expected) < 6  # fixed by the hash: the test data holds some out and trains on the rest

    def fetch(url: str, task_id: object) -> bytes:
        return (dataset.parent / Path(url).name).read_bytes()

    settings = Settings(
        label_studio_url=None, label_studio_api_key=None, model_dir=tmp_path / "models",
        train_steps=2, retrain_steps=1, holdout_min_tasks=6, holdout_share=0.25, train_min_size=64, train_max_size=64,
        train_threads=1,
    )  # fmt: skip
    store, reported = ModelStore(settings.model_dir), []

    def report(**fields: object) -> bool:  # Runs.report's signature, recorded
        reported.append(fields)
        return True

    counts = {"tasks": 6, "issues": 0}
    categories = {c.name: list(c.keypoints) for c in SCHEMA.categories}
    project = Schema.from_label_config(
        config_from_description({"title": "t", "rectangles": True, "categories": categories})
    )
    first, meta1 = train_and_publish(7, coco, fetch, counts, settings, store, report, project_schema=project)
    second, meta2 = train_and_publish(7, coco, fetch, counts, settings, store, report)

    assert (meta1["started_from"], meta1["steps"], meta1["beat_previous"]) == ("coco", 2, None)
    assert meta1["transfers"][0].startswith(f"coco: {coco_light_weights.name}: loaded 279 tensors")
    assert (meta2["started_from"], meta2["steps"], meta2["transfers"]) == (f"version {first}", 1, [])
    for meta in (meta1, meta2):
        assert meta["heldout"]["tasks"] == len(expected) and meta["images"] == 6 - len(expected)
        assert set(meta["heldout"]) == {"tasks", "images", "set", "bbox_AP", "segm_AP", "keypoints_AP"}
        assert set(meta["training_set_fit"]) == {"bbox_AP", "segm_AP", "keypoints_AP"}
    # the edit cost of the held-out tasks: drawing them from scratch is every vertex and labelled keypoint
    held_anns = [
        a
        for a in coco["annotations"]
        if a["image_id"] in {im["id"] for im in coco["images"] if im["ls_task_id"] in expected}
    ]
    scratch = sum(len(a["segmentation"][0]) // 2 if isinstance(a["segmentation"], list) else 0 for a in held_anns)
    edit = meta1["heldout_edit_cost"]
    assert edit["images"] == len(expected) and edit["truth_objects"] == len(held_anns)
    assert edit["from_scratch"] >= scratch + sum(a["num_keypoints"] for a in held_anns)
    assert edit["actions"] == sum(edit["by_kind"].values()) and edit["ratio"] == pytest.approx(
        edit["actions"] / edit["from_scratch"], abs=1e-4
    )
    assert meta2["heldout_edit_cost"] == {"ratio": None, "reason": "the project's labeling config is unknown"}
    assert store.version_summaries(7)[0]["heldout_edit_cost"] == edit
    # the held-out set did not change, so v1's published scores are reused ...
    v1_scores = {"version": first, **{k: v for k, v in meta1["heldout"].items() if k.endswith("_AP")}}
    assert meta2["heldout"]["set"] == meta1["heldout"]["set"] and meta2["previous_on_heldout"] == v1_scores
    kinds = ("bbox_AP", "segm_AP", "keypoints_AP")
    assert meta2["beat_previous"] == (sum(meta2["heldout"][k] for k in kinds) > sum(meta1["heldout"][k] for k in kinds))
    assert [v["version"] for v in store.version_summaries(7)] == [first, second]
    assert torch.get_num_threads() == 1  # TRAIN_THREADS
    assert [f["phase"] for f in reported if "phase" in f] == ["training", "evaluating"] * 2
    # scoring v1 again (what a changed held-out set makes the next run do) gives the numbers it was published with
    store.publish(7, store.checkpoint(7, first), {**meta1, "heldout": None})  # v1's weights current, scores unrecorded
    (tmp_path / "scoring" / "images").mkdir(parents=True)
    held = _images_subset(coco, {im["ls_image"] for im in coco["images"] if im["ls_task_id"] in expected}, True)
    for image in held["images"]:
        (tmp_path / "scoring" / "images" / image["file_name"]).write_bytes(fetch(image["ls_image"], None))
    heldout = tmp_path / "scoring" / "heldout.json"
    heldout.write_text(json.dumps(held))
    rescored = _previous_heldout(7, store, heldout, "another set", settings)
    assert rescored is not None and {k: v for k, v in rescored.items() if k != "version"} == {
        k: v for k, v in v1_scores.items() if k != "version"
    }
