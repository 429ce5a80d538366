"""One real Label Studio process with the export plugin, shared by every test folder of a pytest session.

The integration tests (``tests/integration``) and the browser test (``tests/browser``) live in different
conftest scopes, so each declares its own ``label_studio`` fixture; both return :func:`shared_label_studio`,
which starts the process once per Python process (first start: Label Studio's migrations, ~90 s on 2 cores)
and stops it at exit. It is started exactly like the local stack (:mod:`stack.services`).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from label_studio_sdk import LabelStudio

from stack.services import Credentials, label_studio_command, label_studio_env, wait_for_http

START_TIMEOUT_S = 300  # migrations on a busy 2-core machine


@dataclass(frozen=True)
class LabelStudioServer:
    """A running Label Studio: ``url`` without trailing slash, ``client`` authenticated with ``token``."""

    url: str
    email: str
    password: str
    token: str  # legacy API token: ``Authorization: Token <token>``
    data_dir: Path  # LABEL_STUDIO_BASE_DATA_DIR (SQLite DB, media/upload/...)
    log: Path
    client: LabelStudio
    env: dict[str, str]  # the process environment, e.g. to run ``label-studio export`` on the same DB

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def log_tail(self, chars: int = 8000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class LabelStudioStartError(RuntimeError):
    """Label Studio exited or never answered /health; the message carries the log tail."""


_shared: LabelStudioServer | None = None


def shared_label_studio(root: Path) -> LabelStudioServer:
    """Start Label Studio in ``root`` (data dir + log) on a free port, once per process."""
    global _shared
    if _shared is None:
        _shared = _start(root)
    return _shared


def _start(root: Path) -> LabelStudioServer:
    root.mkdir(parents=True, exist_ok=True)
    data_dir, log = root / "data", root / "label-studio.log"
    creds = Credentials.generate()
    port = _free_port()
    env = {**os.environ, **label_studio_env(data_dir, creds)}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(label_studio_command(port), cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    atexit.register(_stop, proc)
    try:
        wait_for_http(f"{url}/health", START_TIMEOUT_S, alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        _stop(proc)
        raise LabelStudioStartError(f"{exc}\n--- {log} ---\n{log.read_text(errors='replace')[-5000:]}") from None
    client = LabelStudio(base_url=url, api_key=creds.token)
    return LabelStudioServer(url, creds.email, creds.password, creds.token, data_dir, log, client, env)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
