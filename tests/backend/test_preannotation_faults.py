"""Pre-annotation is a courtesy of a training run: its failures are reported, never raised."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from backend.model_store import ModelStore
from backend.preannotation import preannotate_after_publish
from backend.settings import Settings
from tests.support.processes import free_port


class Recorder:
    """Stands where the job passes ``Runs.report`` bound to its project and job: the fields it reports."""

    def __init__(self) -> None:
        self.fields: list[dict[str, Any]] = []

    def __call__(self, **fields: Any) -> bool:
        self.fields.append(fields)
        return True


def test_label_studio_down_is_reported_in_the_status_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = Settings(label_studio_url=f"http://127.0.0.1:{free_port()}", label_studio_api_key="t", model_dir=tmp_path)
    report = Recorder()
    with caplog.at_level(logging.ERROR):
        summary = preannotate_after_publish(3, "v0001-x", dead, ModelStore(tmp_path), report)
    assert summary["state"] == "failed"
    assert "is not reachable" in summary["error"] and "the version is published" in summary["error"]
    assert report.fields[0] == {"phase": "preannotating"}  # the job then writes state/phase of the finished run
    assert "pre-annotating tasks with v0001-x failed" in caplog.text


def test_switched_off(tmp_path: Path) -> None:
    off = Settings(
        label_studio_url=None, label_studio_api_key=None, model_dir=tmp_path, preannotate_after_training=False
    )
    report = Recorder()
    assert preannotate_after_publish(3, "v0001-x", off, ModelStore(tmp_path), report) == {"state": "off"}
    assert report.fields == []
