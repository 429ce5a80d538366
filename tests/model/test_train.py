"""Training: a tiny overfit run that must really learn, resume == uninterrupted run, fine-tuning from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from combined_coco.images import read_image
from multitask.checkpoint import load_checkpoint
from multitask.dataset import CombinedCocoDataset
from multitask.inference import TorchvisionPredictor
from multitask.model import build_model
from multitask.pretrained import CLASS_DEPENDENT_PREFIXES, initialize
from multitask.synthetic import write_synthetic_dataset
from multitask.train import TrainConfig, start_model, train

TINY: dict[str, Any] = {"min_size": 128, "max_size": 128, "hflip_prob": 0.0, "checkpoint_every": 10**6, "init": "none"}


@pytest.mark.slow
def test_overfit_one_image_recovers_box_and_keypoints(tmp_path: Path) -> None:
    dataset = write_synthetic_dataset(tmp_path / "data", num_images=1, size=128)
    history: list[dict[str, float]] = []
    config = TrainConfig(
        dataset=str(dataset),
        output_dir=str(tmp_path / "run"),
        steps=150,
        batch_size=1,
        lr=0.02,
        warmup_steps=20,
        **TINY,
    )
    checkpoint = train(config, on_progress=lambda step, total, losses: history.append(losses))
    assert len(history) == 150
    first = np.mean([h["loss"] for h in history[:10]])
    last = np.mean([h["loss"] for h in history[-10:]])
    assert last < 0.3 * first, (first, last)

    predictor = TorchvisionPredictor.from_checkpoint(checkpoint, score_threshold=0.5)
    instances = predictor.predict([read_image(dataset.parent / "img_000.png")])[0]
    assert instances, "no detection above 0.5 after overfitting"
    best = instances[0]
    _, target = CombinedCocoDataset(dataset)[0]
    assert best.label == "disc"
    assert np.allclose(best.box, target["boxes"][0].numpy(), atol=4.0)
    truth = target["keypoints"][0, :, :2].numpy()
    error = np.linalg.norm(best.keypoints[:, :2] - truth, axis=1)
    assert error.max() < 4.0, error  # pixels, on a 128 px image (objects ~50 px wide)
    assert best.keypoint_present.all()


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    dataset = write_synthetic_dataset(tmp_path / "data", num_images=3, size=96)
    common: dict[str, Any] = dict(dataset=str(dataset), steps=4, batch_size=2, lr=0.005, warmup_steps=2, seed=3, **TINY)
    common["hflip_prob"] = 0.5  # resume must also restore the flip RNG
    straight = load_checkpoint(train(TrainConfig(output_dir=str(tmp_path / "a"), **common)))

    def crash_at_step_3(step: int, total: int, losses: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt  # the job is killed after the step-2 checkpoint was written

    interrupted = TrainConfig(output_dir=str(tmp_path / "b"), **{**common, "checkpoint_every": 2})
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, on_progress=crash_at_step_3)
    steps: list[int] = []
    interrupted.resume = True
    resumed = load_checkpoint(train(interrupted, on_progress=lambda s, _total, _losses: steps.append(s)))
    assert steps == [3, 4]
    assert resumed.step == straight.step == 4 and resumed.model_version.endswith("-step4")
    for key, value in straight.state_dict.items():
        assert torch.allclose(value.float(), resumed.state_dict[key].float(), atol=1e-5), key


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(dataset="d.json", steps=12, lr=0.5, resume=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(config.to_yaml())
    assert TrainConfig.from_yaml(path) == config
    path.write_text("dataset: d.json\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_yaml(path)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset and a 2-step checkpoint trained on it from random weights."""
    root = tmp_path_factory.mktemp("finetune")
    dataset = write_synthetic_dataset(root / "data", num_images=2, size=96)
    config = TrainConfig(
        dataset=str(dataset), output_dir=str(root / "run"), steps=2, batch_size=2, warmup_steps=1, **TINY
    )
    return dataset, train(config)


def test_finetune_with_the_same_schema_starts_from_every_tensor(first_run: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, checkpoint = first_run
    previous = load_checkpoint(checkpoint)
    config = TrainConfig(dataset=str(dataset), output_dir=str(tmp_path), finetune_from=str(checkpoint), **TINY)
    model_config, model, started_from, reports = start_model(config, previous.schema)
    assert started_from == f"checkpoint {checkpoint}" and reports == [] and model_config == previous.model_config
    for key, value in previous.state_dict.items():  # class-dependent layers included: same labels
        assert torch.equal(model.state_dict()[key], value), key

    # and the run records where it started
    config.steps = 1
    assert load_checkpoint(train(config)).training["started_from"] == f"checkpoint {checkpoint}"


def test_finetune_with_a_changed_schema_transfers_what_fits(first_run: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, checkpoint = first_run
    coco = json.loads(dataset.read_text())
    coco["categories"][1]["name"] = "lid"  # a relabelled class: same shapes, other meaning
    renamed = tmp_path / "annotations.json"
    renamed.write_text(json.dumps(coco))
    previous = load_checkpoint(checkpoint)
    config = TrainConfig(
        dataset=str(renamed), image_root=str(dataset.parent), output_dir=str(tmp_path / "run"), steps=1,
        finetune_from=str(checkpoint), **TINY,
    )  # fmt: skip
    _, model, started_from, reports = start_model(config, CombinedCocoDataset(renamed).schema)
    assert started_from == f"none + fitting tensors of checkpoint {checkpoint}"
    (report,) = reports
    after = model.state_dict()
    assert report.class_dependent and all(k.startswith(CLASS_DEPENDENT_PREFIXES) for k in report.class_dependent)
    for key in report.loaded:
        assert torch.equal(after[key], previous.state_dict[key]), key
    for key in report.class_dependent:
        if key.endswith("weight"):
            assert not torch.equal(after[key], previous.state_dict[key]), key
    assert not report.not_in_file  # every class-independent tensor came from the previous run
    saved = load_checkpoint(train(config)).training
    assert saved["transfers"] == [report.summary()]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; covers TRAIN_DEVICE=cuda with AMP")
def test_trains_on_cuda_with_mixed_precision(tmp_path: Path) -> None:
    dataset = write_synthetic_dataset(tmp_path / "data", num_images=2, size=96)
    config = TrainConfig(
        dataset=str(dataset), output_dir=str(tmp_path / "run"), steps=3, batch_size=2, device="cuda", **TINY
    )
    assert config.amp
    checkpoint = load_checkpoint(train(config))
    assert checkpoint.step == 3
    assert checkpoint.training["scaler"]["scale"] > 0  # the gradient scaler ran: AMP was on
    assert all(torch.isfinite(v).all() for v in checkpoint.state_dict.values() if v.is_floating_point())


def test_init_from_a_multitask_checkpoint_takes_what_fits(first_run: tuple[Path, Path]) -> None:
    """A checkpoint written by `train` (RNG state inside, which torch's weights_only load refuses) as ``init``."""
    _, checkpoint = first_run
    previous = load_checkpoint(checkpoint)
    model = build_model(previous.model_config)
    (report,) = initialize(model, str(checkpoint), previous.model_config.backbone)
    assert report.loaded and not report.shape_mismatch
    for key in report.loaded:
        assert torch.equal(model.state_dict()[key], previous.state_dict[key]), key
    assert all(k.startswith(CLASS_DEPENDENT_PREFIXES) for k in report.class_dependent)
