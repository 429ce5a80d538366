"""One real Label Studio process with the export plugin, shared by every test folder of a pytest session.

The session fixture ``label_studio`` (``tests/conftest.py``) and the benchmarks call :func:`shared_label_studio`,
which starts the process once per Python process (first start: Label Studio's migrations, ~90 s on 2 cores)
and stops it at exit. It is started exactly like the local stack (:mod:`stack.services`).
"""

from __future__ import annotations

import atexit
import io
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from label_studio_sdk import LabelStudio

from stack.services import Credentials, label_studio_command, label_studio_env, wait_for_http
from tests.support.processes import free_port, stop_process

if TYPE_CHECKING:
    from playwright.sync_api import Page

START_TIMEOUT_S = 300  # migrations on a busy 2-core machine
CHROMIUM = "/usr/bin/chromium"  # Debian's package; scripts/test.sh installs it (never `playwright install`)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


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

    def import_images(self, project_id: int, images: dict[str, bytes]) -> dict[str, int]:
        """Upload files through the import API (as the UI does, so they become /data/upload/... files).

        Returns file name -> task id; Label Studio prefixes stored names with a random id.
        """
        files = {name: (name, data, "application/octet-stream") for name, data in images.items()}
        url = f"{self.url}/api/projects/{project_id}/import"
        httpx.post(url, headers=self.headers, files=files, timeout=120).raise_for_status()
        listed = httpx.get(
            f"{self.url}/api/tasks",
            headers=self.headers,
            params={"project": project_id, "page_size": 10_000},
            timeout=60,
        )
        listed.raise_for_status()
        tasks = listed.json()["tasks"]
        return {name: t["id"] for t in tasks for name in images if str(t["data"]["image"]).endswith(f"-{name}")}

    def annotate(self, task_id: int, result: list[dict]) -> int:
        """Store an annotation as the labeling UI does; returns its id."""
        url = f"{self.url}/api/tasks/{task_id}/annotations"
        resp = httpx.post(url, headers=self.headers, json={"result": result}, timeout=60)
        resp.raise_for_status()
        return resp.json()["id"]


class LabelStudioStartError(RuntimeError):
    """Label Studio exited or never answered /health; the message carries the log tail."""


_shared: LabelStudioServer | None = None


def shared_label_studio(root: Path) -> LabelStudioServer:
    """Start Label Studio in ``root`` (data dir + log) on a free port, once per process."""
    global _shared
    if _shared is None:
        _shared = _start(root)
    return _shared


def png_bytes(size: tuple[int, int], color: tuple[int, int, int] = (90, 140, 60)) -> bytes:
    """A plain PNG to upload as a task image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def logged_in_page(ls: LabelStudioServer, viewport: tuple[int, int] = (1400, 900)) -> Iterator[Page]:
    """A headless Debian chromium page, logged in to ``ls`` as the admin through the login form."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
            page.goto(f"{ls.url}/user/login/")
            page.fill("input[name=email]", ls.email)
            page.fill("input[name=password]", ls.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
            yield page
        finally:
            browser.close()


def _start(root: Path) -> LabelStudioServer:
    root.mkdir(parents=True, exist_ok=True)
    data_dir, log = root / "data", root / "label-studio.log"
    creds = Credentials.generate()
    port = free_port()
    env = {**os.environ, **label_studio_env(data_dir, creds)}
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        # umask 077: what the stack gives its children (stack/__main__.py), so file modes are tested as shipped
        proc = subprocess.Popen(
            label_studio_command(port), cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, umask=0o077
        )
    atexit.register(stop_process, proc)
    try:
        wait_for_http(f"{url}/health", START_TIMEOUT_S, alive=lambda: proc.poll() is None)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(proc)
        raise LabelStudioStartError(f"{exc}\n--- {log} ---\n{log.read_text(errors='replace')[-5000:]}") from None
    client = LabelStudio(base_url=url, api_key=creds.token)
    return LabelStudioServer(url, creds.email, creds.password, creds.token, data_dir, log, client, env)
