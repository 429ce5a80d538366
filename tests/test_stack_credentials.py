"""The stack's secrets: a private data folder, credentials saved 0600 and shown only when created."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stack.__main__ import _login_lines
from stack.services import Credentials, make_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_world_readable_data_folder_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert _mode(make_private(folder)) == 0o700


def test_credentials_are_saved_private_and_shown_only_when_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "data" / "label-studio" / "credentials.json"
    creds, created = Credentials.load_or_create(path)
    assert created and _mode(path) == 0o600 and _mode(path.parent) == 0o700
    first = "\n".join(_login_lines(creds, path, created))
    assert creds.password in first and creds.token in first and str(path) in first

    path.chmod(0o644)  # as written by an older version
    again, created = Credentials.load_or_create(path)
    assert again == creds and not created and _mode(path) == 0o600
    later = "\n".join(_login_lines(again, path, created))
    assert creds.password not in later and creds.token not in later and str(path) in later
