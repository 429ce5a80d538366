"""Child processes with prefixed, logged output, restarted when they fail, and one shutdown path.

Like a service manager: a child that exits on its own (crash, OOM kill, lost Redis) is started again
with the same command after a back-off (1, 2, 4 ... 60 s; back to 1 s once it has stayed up
:data:`STABLE_AFTER_S`), and each exit is logged with its exit code or signal. One failing helper
never takes the others down: annotators keep Label Studio while a worker or the ML backend restarts.
Only Ctrl-C/SIGTERM stops everything.

Each child gets its own session (``start_new_session``) so Ctrl-C reaches only the runner, which then
stops the children in reverse start order; otherwise Label Studio, the worker and the backend would
all receive SIGINT at once and race their own shutdowns. Every output line is echoed as
``[name] line`` and appended to ``<log dir>/<name>.log``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_TIMEOUT_S = 20
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
STABLE_AFTER_S = 30.0  # a child that ran this long before failing is restarted after FIRST_BACKOFF_S again
POLL_S = 0.5


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    proc: subprocess.Popen
    started_at: float  # time.monotonic() of the current process's start
    restarts: int = 0
    backoff_s: float = FIRST_BACKOFF_S  # delay before the next restart
    restart_at: float | None = None  # when a failed child is due to start again


@dataclass
class Supervisor:
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    _print_lock: threading.Lock = field(default_factory=threading.Lock)

    def say(self, name: str, message: str) -> None:
        """Print one prefixed line (thread-safe, so lines of different children never interleave)."""
        with self._print_lock:
            for line in message.splitlines() or [""]:
                print(f"[{name}] {line}", flush=True)

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(
            name, cmd, env, cwd, self.log_dir / f"{name}.log", self._spawn(name, cmd, env, cwd), time.monotonic()
        )
        self.children.append(child)
        return child

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=self._pump, args=(name, self.log_dir / f"{name}.log", proc.stdout), daemon=True).start()
        self.say("stack", f"started {name} (pid {proc.pid}): {' '.join(cmd)}")
        return proc

    def _pump(self, name: str, log_path: Path, stream: IO[bytes]) -> None:
        with log_path.open("ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                self.say(name, raw.decode(errors="replace").rstrip("\n"))

    def supervise(self) -> None:
        """Keep every child running until KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it)."""
        while True:
            self.check()
            time.sleep(POLL_S)

    def check(self) -> None:
        """One round: schedule a restart for each child that exited, start those that are due."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None and child.proc.poll() is not None:
                uptime = now - child.started_at
                if uptime >= STABLE_AFTER_S:
                    child.backoff_s = FIRST_BACKOFF_S
                child.restart_at = now + child.backoff_s
                self.say(
                    "stack",
                    f"{child.name} (pid {child.proc.pid}) {describe_exit(child.proc.returncode)} after {uptime:.0f} s; "
                    f"restarting in {child.backoff_s:.0f} s (restart {child.restarts + 1}, log {child.log})",
                )
                child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
            elif child.restart_at is not None and now >= child.restart_at:
                child.proc = self._spawn(child.name, child.cmd, child.env, child.cwd)
                child.started_at, child.restart_at = time.monotonic(), None
                child.restarts += 1

    def stop_all(self) -> None:
        """SIGTERM every child (newest first), then SIGKILL what is still alive after the timeout."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                self.say("stack", f"stopping {child.name}")
                child.proc.terminate()
        for child in reversed(self.children):
            try:
                child.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.say("stack", f"{child.name} did not stop within {STOP_TIMEOUT_S} s; killing it")
                child.proc.kill()
                child.proc.wait()


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL`` (Popen reports a signal as -number)."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def fail(message: str) -> None:
    """Exit the runner with a readable message instead of a traceback."""
    print(f"[stack] ERROR: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)
