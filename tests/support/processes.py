"""Child processes of the tests: RQ workers, free ports, and stopping what a test started so it never outlives
the session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def repo_env(**variables: str) -> dict[str, str]:
    """This process's environment plus ``variables``, with the repository first on ``PYTHONPATH`` (as in the stack)."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath, **variables}


def run_python(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen:
    """``python <args>`` from the repository with ``env``, stdout and stderr in ``log``; the caller stops it."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT)


def start_worker(env: Mapping[str, str], log: Path, queues: str = "train", *, burst: bool = False) -> subprocess.Popen:
    """A real ``python -m jobqueue.worker`` on ``queues`` (comma-separated), reaching Redis at ``env``'s
    ``REDIS_URL``, its output in ``log``; the caller stops (or kills) it."""
    return run_python(["-m", "jobqueue.worker", "--queues", queues] + (["--burst"] if burst else []), env, log)


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s: test services must not outlive the session."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_with_horse(pid: int) -> None:
    """SIGKILL an RQ worker and the work-horse it forked for its job, as if its machine had gone away."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path: two outputs compared byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
