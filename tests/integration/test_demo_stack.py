"""README command 1 from a clone with nothing beside it: ``--demo`` trains offline with ``.env`` settings.

The repository's files (what ``git clone`` would give: tracked and new, not ignored) are copied into an
empty folder, a ``.env`` is written there as README's Settings section shows (``TRAIN_INIT=none``: no
pretrained weights offline; the tests' small training settings), and a real ``python -m stack up --demo``
runs in it with an empty ``TORCH_HOME``. Then, as a user would: the demo project has its labelled and
unlabelled tasks, Start Training (``POST /api/ml/<id>/train``, the button's request) publishes a version
that started from random weights, and every unlabelled task gets that version's pre-annotation.

Oracles the stack did not compute: the task and prediction lists come from Label Studio's own API; that
the worker read ``.env`` shows in the version's ``started_from`` (the default, ``coco``, would have failed
with an empty ``TORCH_HOME``), and that nothing was downloaded in the empty cache staying empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.demo import LABELLED, UNLABELLED
from stack.services import REPO
from tests.integration.test_stack import stop, wait_for_banner
from tests.support.backend import FAST_TRAINING_ENV, TRAIN_TIMEOUT_S
from tests.support.processes import free_port

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

# The tests' small run (tests.support.backend), TRAIN_INIT=none among them, shorter still: this test checks
# that the demo trains and pre-annotates, not what the model finds (6 steps: ~1 min of an idle 2-core machine)
SETTINGS = {**FAST_TRAINING_ENV, "TRAIN_STEPS": "6", "TRAIN_AUGMENT_COPIES": "0"}


def clone_files(target: Path) -> None:
    """The files a clone of this checkout would hold, its uncommitted changes included."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file() and not source.is_symlink():  # a tracked file deleted in the work tree is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_demo_trains_offline_from_a_lone_clone(tmp_path: Path) -> None:
    started = time.monotonic()
    clone = tmp_path / "alone" / "repo"
    clone.mkdir(parents=True)
    clone_files(clone)
    assert SETTINGS["TRAIN_INIT"] == "none"
    (clone / ".env").write_text("".join(f"{name}={value}\n" for name, value in SETTINGS.items()))
    torch_home = tmp_path / "empty-torch-home"
    torch_home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in SETTINGS and name != "PYTHONPATH" and not name.startswith(("LABEL_STUDIO_", "LSMT_", "REDIS_"))
    }
    env["TORCH_HOME"] = str(torch_home)
    port, backend_port, out = free_port(), free_port(), tmp_path / "stack.out"
    cmd = [sys.executable, "-m", "stack", "up", "--demo", "--port", str(port), "--backend-port", str(backend_port)]
    proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=out.open("wb"), stderr=subprocess.STDOUT)
    try:
        text = wait_for_banner(proc, out)
        assert [p.name for p in (tmp_path / "alone").iterdir()] == ["repo"]
        assert f"settings from {clone / '.env'}: " in text
        project_id = int(re.search(r"Demo project\s+\S+/projects/(\d+)/data", text).group(1))  # type: ignore[union-attr]
        print(f"stack up with the demo project: {time.monotonic() - started:.0f} s")

        url, backend_url = f"http://localhost:{port}", f"http://localhost:{backend_port}"
        token = json.loads((clone / "data" / "label-studio" / "credentials.json").read_text())["token"]
        ls = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=60)
        tasks = ls.get("/api/tasks", params={"project": project_id, "page_size": 100}).json()["tasks"]
        unlabelled = sorted(t["id"] for t in tasks if not t["total_annotations"])
        assert len(tasks) == LABELLED + UNLABELLED and len(unlabelled) == UNLABELLED

        [ml] = ls.get("/api/ml", params={"project": project_id}).json()
        assert ml["url"].rstrip("/") == backend_url
        training = time.monotonic()
        ls.post(f"/api/ml/{ml['id']}/train").raise_for_status()  # Settings > Model > Start Training
        status = wait_until_trained(backend_url, project_id, clone / "data" / "logs" / "worker.log")
        print(f"Start Training to pre-annotated: {time.monotonic() - training:.0f} s")
        [version] = [v for v in status["versions"] if v["version"] == status["model_version"]]
        assert version["started_from"] == "none", version

        predictions = ls.get("/api/predictions", params={"project": project_id}).json()
        latest = {p["task"]: p for p in predictions if p["model_version"] == status["model_version"]}
        assert sorted(latest) == unlabelled, predictions
        regions = {task: sum(r["type"] != "choices" for r in p["result"]) for task, p in latest.items()}
        print(f"regions pre-annotated per unlabelled task: {regions}")
        assert not any(torch_home.iterdir()), "nothing may be downloaded"
    finally:
        stop(proc, out)
    print(f"whole test: {time.monotonic() - started:.0f} s")


def wait_until_trained(backend_url: str, project_id: int, worker_log: Path) -> dict[str, Any]:
    """``GET /runs/<project>`` once a version is published and its pre-annotation is done."""
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{backend_url}/runs/{project_id}", timeout=10).json()
        state = status["training"].get("state")
        if state == "failed":
            raise AssertionError(f"training failed: {status}\n{worker_log.read_text(errors='replace')[-5000:]}")
        if status["model_version"] != "untrained" and state == "succeeded":
            return status
        time.sleep(2)
    raise AssertionError(f"no version within {TRAIN_TIMEOUT_S} s: {status}\n{worker_log.read_text()[-5000:]}")
