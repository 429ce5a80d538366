"""`python -m multitask ...`: every command documents an example; predict -> analyze -> evaluate work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multitask.__main__ import COMMANDS, main
from multitask.checkpoint import Checkpoint, save_checkpoint
from multitask.model import ModelConfig
from multitask.synthetic import SCHEMA

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"python -m multitask {command}" in capsys.readouterr().out


def test_predict_analyze_evaluate(
    small_model: torch.nn.Module,
    small_config: ModelConfig,
    synthetic_json: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = save_checkpoint(
        Checkpoint("cli-test", SCHEMA, small_config, small_model.state_dict()), tmp_path / "m.pt"
    )
    image = synthetic_json.parent / "img_001.png"
    preds = tmp_path / "preds.json"
    main(["predict", "--checkpoint", str(checkpoint), str(image), "--out", str(preds), "--score-threshold", "0"])
    data = json.loads(preds.read_text())
    assert data["model_version"] == "cli-test" and len(data["images"][0]["instances"]) == 5

    main(["analyze", "--predictions", str(preds)])
    main(["analyze", "--coco", str(synthetic_json), "--image-id", "2"])
    out = capsys.readouterr().out
    assert "disc: centroid" in out and "principal axis" in out

    result = tmp_path / "eval.json"
    main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(synthetic_json), "--out", str(result)])
    assert "keypoint OKS sigma: 0.05" in capsys.readouterr().out
    assert json.loads(result.read_text())["oks_sigmas"]["left"] == 0.05


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "multitask", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "train" in done.stdout
