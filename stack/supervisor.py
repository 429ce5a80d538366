"""Child processes with prefixed, logged output and one shutdown path.

Each child gets its own session (``start_new_session``) so Ctrl-C reaches only the runner, which then
stops the children in reverse start order; otherwise Label Studio, the worker and the backend would
all receive SIGINT at once and race their own shutdowns. Every output line is echoed as
``[name] line`` and appended to ``<log dir>/<name>.log``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

STOP_TIMEOUT_S = 20


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    essential: bool = True  # when it exits, the whole stack stops


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

    def start(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, *, essential: bool = True) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        child = Child(name, proc, log, essential)
        threading.Thread(target=self._pump, args=(child, proc.stdout), daemon=True).start()
        self.children.append(child)
        self.say("stack", f"started {name} (pid {proc.pid}): {' '.join(cmd)}")
        return child

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        with child.log.open("ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                self.say(child.name, raw.decode(errors="replace").rstrip("\n"))

    def exited(self) -> Child | None:
        """The first essential child that is no longer running, if any."""
        return next((c for c in self.children if c.essential and c.proc.poll() is not None), None)

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


def fail(message: str) -> None:
    """Exit the runner with a readable message instead of a traceback."""
    print(f"[stack] ERROR: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)
