"""README command 1 minus the install: ``python -m stack up --demo`` starts, answers, and stops cleanly;
a child that dies is restarted while Label Studio stays up.

A real run in a temporary data dir (its own Label Studio, so its own migrations): the worker self-check
passes, the demo project exists with its labelled and unlabelled tasks and offers the COCO combined export,
the logs are prefixed and written to files, SIGTERM stops everything and removes ``redis.url``; the data
folder and the Label Studio database are private; a second start reuses the saved credentials (without
printing them again) and the demo project, and deletes a half set-up one (an interrupted start's). The ML backend is left out (``--no-backend``): its own tests
cover it, and it would load torch on this 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobqueue.connection import connect
from stack.demo import DEMO_CONFIG, DEMO_TITLE, LABELLED, SETUP_TITLE, UNLABELLED
from stack.selfcheck import check_worker
from stack.services import REPO
from tests.support.processes import free_port

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

BANNER_END = "Stop: Ctrl-C"


def start_stack(
    data_dir: Path, port: int, out: Path, options: tuple[str, ...] = ("--demo", "--no-backend")
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_") and k != "REDIS_URL"}
    cmd = [sys.executable, "-m", "stack", "up", *options, "--port", str(port), "--data-dir", str(data_dir)]
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
        [demo] = httpx.get(f"{url}/api/projects", headers=headers, timeout=30).json()["results"]
        assert demo["title"] == DEMO_TITLE and demo["task_number"] == LABELLED + UNLABELLED
        assert demo["num_tasks_with_annotations"] == LABELLED
        # what a start killed half-way through the demo's set-up leaves behind
        interrupted = httpx.post(
            f"{url}/api/projects", headers=headers, json={"title": SETUP_TITLE, "label_config": DEMO_CONFIG.read_text()}
        )
        assert interrupted.status_code == 201, interrupted.text
        formats = httpx.get(f"{url}/api/projects/{demo['id']}/export/formats", headers=headers, timeout=30).json()
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
        projects = httpx.get(f"{url}/api/projects", headers=headers, timeout=30).json()["results"]
        assert [p["id"] for p in projects] == [demo["id"]], "a restart must reuse the demo project"
    finally:
        stop(proc, tmp_path / "second.out")


def started_pids(text: str) -> dict[str, list[int]]:
    """Every pid each child had, in start order, from the runner's "started NAME (pid N)" lines."""
    pids: dict[str, list[int]] = {}
    for name, pid in re.findall(r"\[stack\] started (\S+) \(pid (\d+)\)", text):
        pids.setdefault(name, []).append(int(pid))
    return pids


def wait_for_restart(name: str, old_pid: int, out: Path, timeout: float = 60) -> int:
    """The pid of ``name``'s replacement once the runner has started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = started_pids(out.read_text(errors="replace"))[name]
        if pids[-1] != old_pid:
            return pids[-1]
        time.sleep(0.2)
    raise AssertionError(f"{name} was not restarted within {timeout} s:\n{out.read_text(errors='replace')[-5000:]}")


def wait_for_health(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(0.2)


def test_failed_children_are_restarted_and_label_studio_stays_up(tmp_path: Path):
    """SIGKILL the worker, the ML backend and the embedded Redis in turn: each is restarted (its exit
    logged with the signal), the worker runs jobs again, and Label Studio keeps its pid and answers."""
    data_dir, port, backend_port, out = tmp_path / "data", free_port(), free_port(), tmp_path / "stack.out"
    ls_health, backend_health = f"http://localhost:{port}/health", f"http://localhost:{backend_port}/health"
    proc = start_stack(data_dir, port, out, ("--backend-port", str(backend_port)))
    try:
        wait_for_banner(proc, out)
        [ls_pid] = started_pids(out.read_text())["label-studio"]
        redis_url = (data_dir / "redis.url").read_text().strip()
        recovery: dict[str, float] = {}
        for name in ("worker", "ml-backend", "redis"):
            victim = started_pids(out.read_text())[name][-1]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for_restart(name, victim, out)
            if name == "ml-backend":
                wait_for_health(backend_health)
            else:  # a job round trip through Redis and a (restarted or reconnected) worker
                check_worker(connect(redis_url), timeout=120)
            recovery[name] = time.monotonic() - killed_at
            assert f"[stack] {name} (pid {victim}) was killed by SIGKILL" in out.read_text()
            assert started_pids(out.read_text())["label-studio"] == [ls_pid], "Label Studio must not be restarted"
            assert httpx.get(ls_health, timeout=10).status_code == 200
        print(f"recovery after SIGKILL (s): {recovery}")
    finally:
        text = stop(proc, out)
    assert "[stack] stopped" in text
