"""The stack's restart policy on real child processes: exits are logged with code or signal, restarts
back off 1, 2, 4 ... s, and a child that stayed up long enough starts again from 1 s."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from stack import supervisor
from stack.supervisor import Supervisor


def _until(sup: Supervisor, condition, timeout: float = 30) -> float:
    """Run supervision rounds until ``condition()``; returns when it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the supervisor did not get there in time"
        sup.check()
        time.sleep(0.02)
    return time.monotonic()


def test_failing_child_is_restarted_with_growing_backoff(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sup = Supervisor(tmp_path / "logs")
    child = sup.start("flaky", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path)
    try:
        exits = []
        for restarts in (1, 2, 3):
            exits.append(_until(sup, lambda: child.restart_at is not None))
            restarted = _until(sup, lambda n=restarts: child.restarts == n)
            assert restarted - exits[-1] >= 2 ** (restarts - 1) - 0.1  # 1, 2, 4 s
        out = capsys.readouterr().out
        first = r"\[stack\] flaky \(pid \d+\) exited with code 3 after \d+ s; restarting in 1 s \(restart 1, log "
        assert re.search(first, out)
        assert "restarting in 2 s (restart 2" in out and "restarting in 4 s (restart 3" in out
        assert out.count("[stack] started flaky (pid") == 4
    finally:
        sup.stop_all()


def test_killed_child_is_logged_with_its_signal_and_backoff_resets_after_a_stable_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "STABLE_AFTER_S", 1.0)
    sup = Supervisor(tmp_path / "logs")
    child = sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path)
    try:
        child.backoff_s = 8.0  # as after several quick failures
        time.sleep(1.2)  # up longer than STABLE_AFTER_S
        os.kill(child.proc.pid, signal.SIGKILL)
        _until(sup, lambda: child.restart_at is not None)
        out = capsys.readouterr().out
        killed = r"\[stack\] sleeper \(pid \d+\) was killed by SIGKILL after \d+ s; restarting in 1 s \(restart 1"
        assert re.search(killed, out)
        _until(sup, lambda: child.restarts == 1, timeout=5)
        assert child.proc.poll() is None
    finally:
        sup.stop_all()
    assert child.proc.returncode == -signal.SIGTERM  # Ctrl-C/SIGTERM path: stopped, not restarted
