"""What an annotator finds in a real Label Studio 1.23 as versions come and go, and before the first one.

- A new version replaces the pre-annotations of the previous one on every task it writes, including
  tasks where it finds nothing: the editor (the task API the Data Manager opens, and the labeling stream)
  never offers the previous version's false positives; predictions someone else imported stay.
- The worker's pre-annotation and ``/predict`` say the same thing about the same task and version.
- An untrained backend answers Label Studio's ``/predict`` calls in a form it stores nothing for and
  logs no error about, and says why in ``/runs`` and the backend log.

The versions are real checkpoints through the engine's own loader, steered to predict an animal
everywhere (false positives on plain images) or nothing (``tests.support.backend.steered_checkpoint``),
so every check holds at any SCORE_THRESHOLD; the worker's step runs in-process (the function the
training job calls after publishing), Label Studio and the backend are real processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.model_store import ModelStore
from backend.preannotation import preannotate_after_publish
from backend.predictions import NO_VERSION_REASON
from backend.settings import Settings
from tests.support.backend import (
    GENERIC_CONFIG,
    Process,
    backend_env,
    random_checkpoint,
    retrieve_predictions,
    start_backend,
    steered_checkpoint,
    synthetic_image,
)
from tests.support.labelstudio import CHROMIUM, LabelStudioServer, logged_in_page, png_bytes

pytestmark = [pytest.mark.labelstudio]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
OTHER_MODEL = "imported-by-someone"  # a prediction neither version of ours made: it must survive


@dataclass(frozen=True)
class Served:
    url: str
    models: Path
    process: Process


@pytest.fixture(scope="module")
def served(
    label_studio: LabelStudioServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """``python -m backend`` over a model folder the tests publish versions into."""
    root = tmp_path_factory.mktemp("prediction-versions")
    env = backend_env(label_studio, redis_url, root / "models")
    url, process = start_backend(env, root / "backend.log")
    yield Served(url, root / "models", process)
    process.stop()


def settings_for(ls: LabelStudioServer, models: Path, threshold: float) -> Settings:
    """What the worker runs with (the backend process's other settings are the same defaults)."""
    return Settings(
        label_studio_url=ls.url, label_studio_api_key=ls.token, model_dir=models,
        score_threshold=threshold, mask_threshold=0.3, max_objects=3,
    )  # fmt: skip


def connected_project(
    ls: LabelStudioServer, served: Served, title: str, images: dict[str, bytes]
) -> tuple[int, list[int]]:
    """A generic.xml project with ``images`` as unannotated tasks and the backend connected as Settings > Model
    does, which makes the backend's title the project's prelabeling source. Returns its id and the task ids."""
    project = ls.client.projects.create(title=title, label_config=GENERIC_CONFIG.read_text())
    assert project.id is not None
    ids = ls.import_images(project.id, images)
    ls.client.ml.create(project=project.id, url=served.url, title="multitask", is_interactive=False)
    return project.id, [ids[name] for name in images]


def opened_in_data_manager(ls: LabelStudioServer, project_id: int, task_id: int) -> dict[str, Any]:
    """The task as the editor gets it when an annotator clicks it in the Data Manager."""
    response = httpx.get(
        f"{ls.url}/api/tasks/{task_id}/", params={"project": project_id}, headers=ls.headers, timeout=120
    )
    response.raise_for_status()
    return response.json()


def editor_draft(task: dict[str, Any], prelabeling: str) -> dict[str, Any] | None:
    """The prediction Label Studio 1.23's editor pre-fills a task without annotations with, opened from the
    Data Manager: the one whose model_version is the project's prelabeling source, else the first
    (web/dist/apps/labelstudio/167.js: ``predictions.find(e => e.createdBy === project.model_version)``)."""
    predictions = task["predictions"]
    if task["annotations"] or not predictions:
        return None
    return next((p for p in predictions if p["model_version"] == prelabeling), predictions[0])


@pytest.mark.parametrize("threshold", [0.5, 0.05])
def test_a_version_that_finds_nothing_clears_the_previous_false_positives(
    label_studio: LabelStudioServer, served: Served, tmp_path: Path, threshold: float
) -> None:
    ls = label_studio
    plain = {f"plain{i}-{threshold}.png": png_bytes((224, 160), (60 + 40 * i, 120, 90)) for i in range(3)}
    project_id, tasks = connected_project(ls, served, f"versions at {threshold}", plain)
    someone = {"task": tasks[0], "model_version": OTHER_MODEL, "score": 0.5, "result": [
        {"from_name": "box", "to_name": "image", "type": "rectanglelabels", "original_width": 224,
         "original_height": 160, "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["tool"]}},
    ]}  # fmt: skip
    ls.client.projects.import_predictions(id=project_id, request=[someone])  # type: ignore[list-item]
    settings, store = settings_for(ls, served.models, threshold), ModelStore(served.models)

    v1 = store.publish(project_id, steered_checkpoint(tmp_path / "v1.pt", animal_logit=20.0), {})
    first = preannotate_after_publish(project_id, v1, settings, store, lambda **_: True)
    assert (first["state"], first["written"], first["empty"], first["failed"]) == ("done", 3, 0, 0), first
    for task in tasks:  # the false positives an annotator would start from
        (ours,) = [p for p in ls.client.predictions.list(task=task) if p.model_version == v1]
        assert ours.result and any(r["type"] == "polygonlabels" for r in ours.result)

    v2 = store.publish(project_id, steered_checkpoint(tmp_path / "v2.pt", animal_logit=-20.0), {})
    second = preannotate_after_publish(project_id, v2, settings, store, lambda **_: True)

    prelabeling = ls.client.projects.get(id=project_id).model_version
    assert prelabeling == "multitask"  # the backend's title, which connecting it set; ours to leave alone
    for task in tasks:
        stored = sorted((p.model_version or "", len(p.result or [])) for p in ls.client.predictions.list(task=task))
        assert stored == sorted([(v2, 0)] + ([(OTHER_MODEL, 1)] if task == tasks[0] else [])), (task, stored)
        opened = opened_in_data_manager(ls, project_id, task)
        assert v1 not in {p["model_version"] for p in opened["predictions"]}
        draft = editor_draft(opened, prelabeling)
        assert draft is not None
        if task != tasks[0]:
            assert (draft["model_version"], draft["result"]) == (v2, []), draft
    # the labeling stream asks the backend (/setup -> v2) and shows that version's prediction of the next task
    nxt = httpx.get(f"{ls.url}/api/projects/{project_id}/next/", headers=ls.headers, timeout=120).json()
    assert [(p["model_version"], p["result"]) for p in nxt["predictions"]] == [(v2, [])], nxt["predictions"]
    assert (second["state"], second["written"], second["empty"], second["failed"]) == ("done", 3, 3, 0), second
    assert all("no object candidates at all" in reason for reason in second["reasons"]), second


def image_bytes(seed: int, width: int, height: int) -> bytes:
    png, _ = synthetic_image(seed, width, height)
    return png


@pytest.mark.parametrize("threshold", [0.5, 0.05])
def test_the_worker_and_predict_say_the_same_about_each_task(
    label_studio: LabelStudioServer, served: Served, tmp_path: Path, threshold: float
) -> None:
    """Images of different sizes, a real untrained checkpoint: the worker predicts them 16 to a batch,
    Label Studio sends ``/predict`` one task at a time when a task is opened; both must give each task
    the same regions, or the same reason for none."""
    ls = label_studio
    sizes = [(224, 160), (480, 320), (160, 240), (640, 200), (300, 300)]
    images = {f"sized{i}-{threshold}.png": image_bytes(i, w, h) for i, (w, h) in enumerate(sizes)}
    project_id, tasks = connected_project(ls, served, f"one explanation at {threshold}", images)
    models = tmp_path / "models"
    settings, store = settings_for(ls, models, threshold), ModelStore(models)
    version = store.publish(project_id, random_checkpoint(tmp_path / "random.pt", seed=1), {})
    summary = preannotate_after_publish(project_id, version, settings, store, lambda **_: True)
    assert summary["state"] == "done" and summary["written"] == len(tasks), summary
    worker_reasons = dict(reason.split(": ", 1) for reason in summary["reasons"])
    project = ls.client.projects.get(id=project_id)
    with TestClient(create_app(settings)) as backend:
        for task_id in tasks:
            data = opened_in_data_manager(ls, project_id, task_id)["data"]
            payload = {"tasks": [{"id": task_id, "project": project_id, "data": data}],
                       "project": f"{project_id}.1700000000", "label_config": project.label_config}  # fmt: skip
            (answer,) = backend.post("/predict", json=payload).json()["results"]
            (written,) = [p for p in ls.client.predictions.list(task=task_id) if p.model_version == version]
            assert answer.get("empty_reason") == worker_reasons.get(f"task {task_id}"), task_id
            assert _regions(answer["result"]) == _regions(written.result or []), task_id


def _regions(result: list[dict[str, Any]]) -> list[tuple[str, tuple[float, ...]]]:
    """Each region's type and its coordinates in percent, to 0.1% (what the annotator sees)."""
    out = []
    for region in result:
        value = region["value"]
        if "points" in value:
            numbers = tuple(round(c, 1) for point in value["points"] for c in point)
        else:
            numbers = tuple(round(float(value[k]), 1) for k in ("x", "y", "width") if k in value)
        out.append((region["type"], numbers))
    return sorted(out)


def test_an_untrained_backend_answers_label_studio_without_an_error(
    label_studio: LabelStudioServer, served: Served
) -> None:
    ls = label_studio
    project_id, tasks = connected_project(ls, served, "untrained", {"untrained.png": png_bytes((224, 160))})
    ls_log, backend_log = len(ls.log.read_text(errors="replace")), len(served.process.log.read_text(errors="replace"))
    # clicking the task in the Data Manager (no prediction yet: Label Studio asks /predict), the labeling
    # stream, and Actions > Retrieve Predictions
    assert opened_in_data_manager(ls, project_id, tasks[0])["predictions"] == []
    nxt = httpx.get(f"{ls.url}/api/projects/{project_id}/next/", headers=ls.headers, timeout=120).json()
    assert nxt["id"] == tasks[0] and nxt["predictions"] == []
    retrieve_predictions(ls, project_id)

    asked = served.process.log.read_text(errors="replace")[backend_log:]
    assert asked.count("model untrained") >= 3, asked  # each of the three reached /predict
    logged = ls.log.read_text(errors="replace")[ls_log:]
    assert "incorrect response" not in logged and "Error occurred" not in logged, logged[-3000:]
    assert ls.client.predictions.list(project=project_id) == []  # nothing stored, so nothing stale later
    assert NO_VERSION_REASON in asked
    runs = httpx.get(f"{served.url}/runs/{project_id}", timeout=30).json()
    assert (runs["model_version"], runs["empty_reason"]) == ("untrained", NO_VERSION_REASON)


@pytest.mark.browser
def test_the_editor_in_a_real_browser_shows_no_region_of_the_previous_version(
    label_studio: LabelStudioServer, served: Served, tmp_path: Path
) -> None:
    """Headless Debian chromium opens tasks from the Data Manager as an annotator does: a task pre-annotated
    by the animal-everywhere version shows its regions (the page can show them), one pre-annotated by it and
    then by the version that finds nothing shows none."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)")
    ls = label_studio
    plain = {f"browser{i}.png": png_bytes((224, 160), (90, 140 - 40 * i, 60)) for i in range(2)}
    project_id, (shown_v1, opened_later) = connected_project(ls, served, "versions in the browser", plain)
    settings, store = settings_for(ls, served.models, 0.5), ModelStore(served.models)
    v1 = store.publish(project_id, steered_checkpoint(tmp_path / "v1.pt", animal_logit=20.0), {})
    assert preannotate_after_publish(project_id, v1, settings, store, lambda **_: True)["written"] == 2
    with logged_in_page(ls) as page:
        regions = page.locator(".lsf-outliner-item")
        page.goto(f"{ls.url}/projects/{project_id}/data?task={shown_v1}")
        page.wait_for_url("**tab=*", timeout=120_000)  # the Data Manager re-opens the task in its tab once
        regions.first.wait_for(timeout=120_000)  # v1's false positives, as an annotator would see them

        v2 = store.publish(project_id, steered_checkpoint(tmp_path / "v2.pt", animal_logit=-20.0), {})
        assert preannotate_after_publish(project_id, v2, settings, store, lambda **_: True)["empty"] == 2
        page.goto(f"{ls.url}/projects/{project_id}/data?task={opened_later}")
        page.wait_for_url(f"**task={opened_later}**tab=*", timeout=120_000)
        page.get_by_text("Labeled regions will appear here").wait_for(timeout=120_000)
        page.locator(".lsf-main-content canvas, .lsf-main-content img").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # the editor has the task; give a late region the time to appear
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "prediction_versions_view.png"))
        assert page.locator(".lsf-outliner-item").count() == 0
        # the draft's source is v2's (empty) prediction, the only one left: its tab names it, none names v1
        assert page.get_by_text(v2[:8]).count() >= 1 and page.get_by_text(v1[:8]).count() == 0
