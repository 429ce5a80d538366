"""``--demo``: a ready-to-label project (generic config + the quokka photo) wired to the ML backend.

The photo comes from ``../shared/data/quokka`` beside the clone (as in CI). Re-running the stack reuses
the project instead of creating another one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from label_studio_sdk import LabelStudio

from stack.services import REPO

DEMO_TITLE = "Quokka demo (combined COCO)"
DEMO_CONFIG = REPO / "labeling_configs" / "generic.xml"
DEMO_IMAGE = REPO.parent / "shared" / "data" / "quokka" / "quokka.jpg"
ML_BACKEND_TITLE = "multi-task model"


class DemoError(RuntimeError):
    """The demo project could not be set up; the message says what is missing."""


def create_demo_project(client: LabelStudio, url: str, token: str) -> int:
    """The demo project's id, creating it and uploading the photo (a real /data/upload file) if needed."""
    # SDK typing gap: projects.list() is typed SyncPagerExt[Never]; its items are the SDK's project models.
    projects: Iterable[Any] = client.projects.list()
    existing = [p for p in projects if p.title == DEMO_TITLE]
    if existing:
        return existing[0].id
    if not DEMO_IMAGE.exists():
        raise DemoError(f"the demo image {DEMO_IMAGE} is missing; clone the shared data beside the repository")
    project = client.projects.create(title=DEMO_TITLE, label_config=DEMO_CONFIG.read_text())
    assert project.id is not None, "Label Studio returns the created project with its id"
    with DEMO_IMAGE.open("rb") as image:
        resp = httpx.post(
            f"{url}/api/projects/{project.id}/import",
            headers={"Authorization": f"Token {token}"},
            files={DEMO_IMAGE.name: (DEMO_IMAGE.name, image, "image/jpeg")},
            timeout=120,
        )
    if resp.status_code >= 400:
        raise DemoError(f"uploading {DEMO_IMAGE.name} failed: HTTP {resp.status_code} {resp.text[:300]}")
    return project.id


def connect_backend(client: LabelStudio, project_id: int, backend_url: str) -> None:
    """Add the ML backend to the project (Settings > Model), unless that URL is already connected.

    Label Studio calls the backend's /setup and /health when it is added, so the backend must be up.
    """
    connected = client.ml.list(project=project_id)
    if any(b.url.rstrip("/") == backend_url.rstrip("/") for b in connected):
        return
    client.ml.create(project=project_id, url=backend_url, title=ML_BACKEND_TITLE, is_interactive=False)
