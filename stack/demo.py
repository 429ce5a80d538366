"""``--demo``: a project ready to train, wired to the ML backend, from the files shipped in ``demo/``.

``demo/tasks.json`` lists the tasks in Label Studio's import format (``data.image`` relative to ``demo/``):
small synthetic scenes (:mod:`multitask.synthetic`, ``scenes=True``) labelled with
``labeling_configs/scenes.xml``, most with an annotation (a polygon per shape, keypoints nested under it)
and a few without. So Start Training works at once, and the new version pre-annotates the tasks without one.
:func:`write_demo_files` made them (once; they are committed, so the demo needs nothing outside the clone).

Setting the project up is all or nothing: it is created under :data:`SETUP_TITLE` and renamed to
:data:`DEMO_TITLE` once every image and annotation is in. A restart reuses the project titled
:data:`DEMO_TITLE`, and deletes a :data:`SETUP_TITLE` one that an interrupted start left behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import httpx
from label_studio_sdk import LabelStudio

from combined_coco.labelstudio import coco_image_results
from combined_coco.schema import Schema
from multitask.synthetic import synthetic_coco
from stack.services import REPO

DEMO_DIR = REPO / "demo"
DEMO_TASKS = DEMO_DIR / "tasks.json"
DEMO_CONFIG = REPO / "labeling_configs" / "scenes.xml"
DEMO_TITLE = "Scenes demo (combined COCO)"
SETUP_TITLE = f"{DEMO_TITLE}: setting up"
ML_BACKEND_TITLE = "multi-task model"
# 12 annotated tasks reach HOLDOUT_MIN_TASKS (10), so the first version already has a held-out score
LABELLED, UNLABELLED = 12, 4
SIZE, SEED, JPEG_QUALITY = 224, 7, 85  # 16 images, ~200 KB in all


class DemoError(RuntimeError):
    """The demo project could not be set up; the message says what is missing."""


def write_demo_files(folder: Path) -> None:
    """``tasks.json`` and ``images/scene_NN.jpg`` in ``folder``: the first :data:`LABELLED` scenes with
    their ground truth as Label Studio annotations, then :data:`UNLABELLED` without."""
    coco, pixels = synthetic_coco(LABELLED + UNLABELLED, SIZE, SEED, scenes=True)
    schema = Schema.from_label_config(DEMO_CONFIG.read_text())
    (folder / "images").mkdir(parents=True, exist_ok=True)
    tasks: list[dict[str, Any]] = []
    for info, rgb in zip(coco["images"], pixels):
        image = f"images/scene_{info['id']:02d}.jpg"
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / image), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {folder / image}")
        task: dict[str, Any] = {"data": {"image": image}}
        if len(tasks) < LABELLED:
            task["annotations"] = [{"result": coco_image_results(coco, info["id"], schema)}]
        tasks.append(task)
    (folder / "tasks.json").write_text("[\n" + ",\n".join(json.dumps(t) for t in tasks) + "\n]\n")  # a task a line


def create_demo_project(client: LabelStudio, url: str, token: str) -> int:
    """The demo project's id, creating it with its images (real /data/upload files) and annotations if needed."""
    # SDK typing gap: projects.list() is typed SyncPagerExt[Never]; its items are the SDK's project models.
    projects: list[Any] = list(client.projects.list())
    for interrupted in (p for p in projects if p.title == SETUP_TITLE):
        client.projects.delete(id=interrupted.id)
    existing = [p for p in projects if p.title == DEMO_TITLE]
    if existing:
        return existing[0].id
    tasks = _demo_tasks()
    project = client.projects.create(title=SETUP_TITLE, label_config=DEMO_CONFIG.read_text())
    assert project.id is not None, "Label Studio returns the created project with its id"
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=120) as http:
        task_ids = _upload_images(http, project.id, [Path(t["data"]["image"]).name for t in tasks])
        for task in tasks:
            for annotation in task.get("annotations", []):
                task_id = task_ids[Path(task["data"]["image"]).name]
                _check(http.post(f"/api/tasks/{task_id}/annotations", json={"result": annotation["result"]}))
    client.projects.update(id=project.id, title=DEMO_TITLE)
    return project.id


def _demo_tasks() -> list[dict[str, Any]]:
    if not DEMO_TASKS.exists():
        raise DemoError(f"{DEMO_TASKS} is missing: the demo ships in the repository (git checkout -- demo)")
    tasks: list[dict[str, Any]] = json.loads(DEMO_TASKS.read_text())
    missing = [t["data"]["image"] for t in tasks if not (DEMO_DIR / t["data"]["image"]).exists()]
    if missing:
        raise DemoError(f"demo images missing in {DEMO_DIR}: {', '.join(missing)} (git checkout -- demo)")
    return tasks


def _upload_images(http: httpx.Client, project_id: int, names: list[str]) -> dict[str, int]:
    """Import the images in one request, as the UI's upload does; file name -> task id (Label Studio
    stores each file as ``/data/upload/<project>/<random prefix>-<name>``)."""
    # one form field per file: Label Studio reads request.FILES.items(), the last file of a repeated field
    files = {name: (name, (DEMO_DIR / "images" / name).read_bytes(), "image/jpeg") for name in names}
    _check(http.post(f"/api/projects/{project_id}/import", files=files))
    listed = _check(http.get("/api/tasks", params={"project": project_id, "page_size": 10 * len(names)}))
    task_ids = {n: t["id"] for t in listed.json()["tasks"] for n in names if str(t["data"]["image"]).endswith(f"-{n}")}
    if len(task_ids) != len(names):
        raise DemoError(f"Label Studio made {len(task_ids)} tasks of the {len(names)} demo images")
    return task_ids


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise DemoError(
            f"setting up the demo project failed: {response.request.method} {response.request.url.path}"
            f" answered HTTP {response.status_code} {response.text[:300]}"
        )
    return response


def connect_backend(client: LabelStudio, project_id: int, backend_url: str) -> None:
    """Add the ML backend to the project (Settings > Model), unless that URL is already connected.

    Label Studio calls the backend's /setup and /health when it is added, so the backend must be up.
    """
    connected: Iterable[Any] = client.ml.list(project=project_id)
    if any(b.url.rstrip("/") == backend_url.rstrip("/") for b in connected):
        return
    client.ml.create(project=project_id, url=backend_url, title=ML_BACKEND_TITLE, is_interactive=False)


if __name__ == "__main__":
    write_demo_files(DEMO_DIR)
