"""The command line: convert/validate/make-config, exit codes, one issue per line, --help examples."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from combined_coco.cli import main
from combined_coco.labelstudio import keypoint_result, polygon_result, task

CONFIG = Path(__file__).resolve().parents[2] / "labeling_configs" / "generic.xml"
W, H = 960, 643


@pytest.fixture
def export(tmp_path: Path) -> Path:
    results = [
        polygon_result("p", "animal", [(100, 100), (300, 100), (300, 300)], W, H),
        keypoint_result("k", "nose", 250, 150, W, H, parent_id="p"),
        polygon_result("bad", "animal", [(1, 1), (2, 2)], W, H),
        polygon_result("odd", "robot", [(1, 1), (2, 2), (1, 5)], W, H),
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps([task(3, "/data/upload/1/1a2b3c4d-x.jpg", results)]))
    return path


def test_convert_then_validate(export: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "coco.json"
    assert main(["convert", str(export), "--config", str(CONFIG), "-o", str(out), "--layout", "per_category"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "error: task 3, region bad: polygon has 2 points (needs 3); skipped",
        "warning: task 3, region odd: label 'robot' is not in the labeling config (known: ['animal', 'tool']); skipped",
    ]
    assert "1 images, 1 objects, 1 errors, 1 warnings" in captured.err
    assert json.loads(out.read_text())["info"]["keypoint_layout"] == "per_category"
    assert main(["validate", str(out)]) == 0
    assert "valid (1 images, 1 annotations, 2 categories)" in capsys.readouterr().out


def test_quiet_prints_errors_only(export: Path, tmp_path: Path, capsys) -> None:
    assert main(["convert", str(export), "--config", str(CONFIG), "-o", str(tmp_path / "c.json"), "-q"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["error"]


def test_unusable_input_exits_1_without_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    assert main(["convert", str(bad), "--config", str(CONFIG), "-o", str(tmp_path / "c.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 1, column 3" in err and "Traceback" not in err
    assert main(["convert", str(bad), "--config", str(tmp_path / "none.xml"), "-o", str(tmp_path / "c.json")]) == 1
    assert "cannot read labeling config" in capsys.readouterr().err


def test_validate_reports_problems(tmp_path: Path, capsys) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "a", "keypoints": ["x"]}],
        "annotations": [
            {
                "id": 1,
                "image_id": 2,
                "category_id": 1,
                "segmentation": [[0, 0, 1, 0, 1, 1]],
                "bbox": [0, 0, 1, 1],
                "area": 0.5,
                "keypoints": [0, 0, 0],
                "num_keypoints": 0,
            },
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [], "bbox": [0, 0, 1, 1], "area": 0.5},
        ],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "annotation 1 (image 2): image_id is not an image of this file",
        "annotation 1: duplicate annotation id",
    ]


@pytest.mark.parametrize("command", ["convert", "validate", "make-config"])
def test_help_has_an_example(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"python -m combined_coco {command} " in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "combined_coco", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert proc.returncode == 0 and "convert" in proc.stdout and "make-config" in proc.stdout


sub_pixel = st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True) | st.sampled_from([1e-300, 0.25])


@settings(max_examples=30, deadline=None)
@given(width=sub_pixel | st.just(float(W)), height=sub_pixel | st.just(float(H)))
def test_a_sub_pixel_image_size_never_makes_a_file_validate_rejects(width: float, height: float) -> None:
    """original_width/height strictly between 0 and 1 once wrote an image of width 0 that validate refused."""
    small = [polygon_result("s", "animal", [(100, 100), (300, 100), (300, 300)], W, H)]
    for result in small:
        result["original_width"], result["original_height"] = width, height
    good = [polygon_result("p", "animal", [(100, 100), (300, 100), (300, 300)], W, H)]
    with tempfile.TemporaryDirectory() as folder:
        export, out = Path(folder) / "export.json", Path(folder) / "coco.json"
        export.write_text(json.dumps([task(1, "/data/upload/1/a.jpg", good), task(2, "/data/upload/1/b.jpg", small)]))
        with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()):
            main(["convert", str(export), "--config", str(CONFIG), "-o", str(out)])
        if round(width) < 1 or round(height) < 1:
            assert "error: task 2: image size" in printed.getvalue(), printed.getvalue()
        with contextlib.redirect_stdout(io.StringIO()) as verdict:
            assert main(["validate", str(out)]) == 0, verdict.getvalue()
