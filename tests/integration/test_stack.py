"""README command 1 minus the install: ``python -m stack up --demo`` starts, answers, and stops cleanly.

A real run in a temporary data dir (its own Label Studio, so its own migrations): the worker self-check
passes, the demo project exists with the quokka photo and offers the COCO combined export, the logs are
prefixed and written to files, SIGTERM stops everything and removes ``redis.url``; the data folder and
the Label Studio database are private; a second start reuses the saved credentials (without printing
them again) and the demo project. The ML backend is left out (``--no-backend``): its own tests
cover it, and it would load torch on this 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from stack.demo import DEMO_IMAGE, DEMO_TITLE
from stack.services import REPO
from stack.testing import free_port

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

BANNER_END = "Stop: Ctrl-C"


def start_stack(data_dir: Path, port: int, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_") and k != "REDIS_URL"}
    cmd = [sys.executable, "-m", "stack", "up", "--demo", "--no-backend", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT)


def wait_for_banner(proc: subprocess.Popen, out: Path, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if BANNER_END in text:
            return text
        assert proc.poll() is None, f"the stack exited ({proc.returncode}):\n{text[-5000:]}"
        time.sleep(1)
    proc.kill()
    raise AssertionError(f"no banner within {timeout} s:\n{out.read_text(errors='replace')[-5000:]}")


def stop(proc: subprocess.Popen, out: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0, out.read_text(errors="replace")[-5000:]
    return out.read_text(errors="replace")


def test_stack_up_demo_and_clean_shutdown(tmp_path: Path):
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: the shared data must be cloned beside the repository")
    data_dir, port = tmp_path / "data", free_port()
    url = f"http://localhost:{port}"

    proc = start_stack(data_dir, port, tmp_path / "first.out")
    try:
        text = wait_for_banner(proc, tmp_path / "first.out")
        assert "[stack] worker self-check OK" in text
        assert "[worker] " in text and "[label-studio] " in text
        assert (data_dir / "redis.url").read_text().startswith("unix://")
        creds = json.loads((data_dir / "label-studio" / "credentials.json").read_text())
        assert f"log in       {creds['email']} / {creds['password']}" in text
        # the SQLite file holds the admin token: nothing in the data folder is readable by others
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        database = next((data_dir / "label-studio").glob("*.sqlite3"))
        assert stat.S_IMODE(database.stat().st_mode) & 0o077 == 0, oct(database.stat().st_mode)
        headers = {"Authorization": f"Token {creds['token']}"}
        [demo] = requests.get(f"{url}/api/projects", headers=headers, timeout=30).json()["results"]
        assert demo["title"] == DEMO_TITLE and demo["task_number"] == 1
        formats = requests.get(f"{url}/api/projects/{demo['id']}/export/formats", headers=headers, timeout=30).json()
        assert any(f["name"] == "COCO_COMBINED" and not f.get("disabled") for f in formats)
    finally:
        text = stop(proc, tmp_path / "first.out")
    assert "[stack] stopped" in text
    assert not (data_dir / "redis.url").exists()
    assert {p.name for p in (data_dir / "logs").iterdir()} >= {"label-studio.log", "worker.log"}

    proc = start_stack(data_dir, port, tmp_path / "second.out")
    try:
        second = wait_for_banner(proc, tmp_path / "second.out")
        assert creds["password"] not in second and creds["token"] not in second  # printed once, at creation
        assert "credentials.json" in second
        projects = requests.get(f"{url}/api/projects", headers=headers, timeout=30).json()["results"]
        assert [p["id"] for p in projects] == [demo["id"]], "a restart must reuse the demo project"
    finally:
        stop(proc, tmp_path / "second.out")
