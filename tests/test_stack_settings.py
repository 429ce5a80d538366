"""Settings for the stack's processes: ``.env`` (or ``--env-file``) below the environment, checked at start.

``load_settings`` runs in ``python -m stack up`` before anything starts; every child inherits the
result. ``tests/integration/test_demo_stack.py`` shows a worker training with ``TRAIN_INIT=none`` from ``.env``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stack.__main__ import load_settings
from stack.services import read_env_file


def test_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# offline\n\nTRAIN_INIT=none\nexport TRAIN_STEPS=40  # short\nBASIC_AUTH_PASS='a #b'\n"
        'LABEL_STUDIO_USERNAME="me@example.com"\nSCORE_THRESHOLD=\n'
    )
    assert read_env_file(path) == {
        "TRAIN_INIT": "none",
        "TRAIN_STEPS": "40",
        "BASIC_AUTH_PASS": "a #b",
        "LABEL_STUDIO_USERNAME": "me@example.com",
        "SCORE_THRESHOLD": "",
    }


@pytest.mark.parametrize("line", ["TRAIN_INIT none", "TRAIN INIT=none", "=none"])
def test_a_line_that_is_no_assignment_is_named(tmp_path: Path, line: str) -> None:
    path = tmp_path / ".env"
    path.write_text(f"TRAIN_STEPS=40\n{line}\n")
    with pytest.raises(ValueError, match=f"line 2: expected NAME=value, got '{line}'"):
        read_env_file(path)


def test_the_environment_wins_and_children_inherit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stack.env"
    path.write_text("TRAIN_INIT=none\nTRAIN_STEPS=40\n")
    monkeypatch.delenv("TRAIN_INIT", raising=False)
    monkeypatch.setenv("TRAIN_STEPS", "7")
    line = load_settings(path)
    assert os.environ["TRAIN_INIT"] == "none" and os.environ["TRAIN_STEPS"] == "7"
    assert line == f"settings from {path}: TRAIN_INIT, TRAIN_STEPS; the environment's TRAIN_STEPS kept instead"
    monkeypatch.delenv("TRAIN_INIT")  # load_settings set it in os.environ, which monkeypatch does not track


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TRAIN_STEPS=many\n", "TRAIN_STEPS='many' is not a whole number (set in {path}; README: Settings)"),
        ("TRAIN_INIT none\n", "{path}, line 1: expected NAME=value, got 'TRAIN_INIT none'"),
    ],
)
def test_a_bad_setting_stops_the_stack_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    monkeypatch.delenv("TRAIN_STEPS", raising=False)
    with pytest.raises(SystemExit):
        load_settings(path)
    monkeypatch.delenv("TRAIN_STEPS", raising=False)
    assert capsys.readouterr().err == f"[stack] ERROR: {message.format(path=path)}\n"


def test_a_missing_env_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(tmp_path / "nope.env")
    assert capsys.readouterr().err == (
        f"[stack] ERROR: cannot read the settings file {tmp_path / 'nope.env'}: No such file or directory\n"
    )
