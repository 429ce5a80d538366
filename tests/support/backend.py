"""End-to-end test support: a real backend process, a real worker, and a project trained through Label Studio.

Used by ``tests/integration/test_backend_e2e.py`` and ``tests/browser/test_predictions_view.py``.
Training is the slow part (1-3 min on 2 cores), so :func:`shared_trained_project` runs the journey
once per pytest process and both tests reuse its project, backend and model; the processes stop
when pytest exits. Every step goes through the same API Label Studio's UI uses.
"""

from __future__ import annotations

import atexit
import io
import math
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from PIL import Image, ImageDraw

from combined_coco.labelstudio import keypoint_result, polygon_result
from combined_coco.schema import Schema
from multitask import defaults
from tests.support.labelstudio import LabelStudioServer
from tests.support.processes import REPO, free_port, repo_env, run_python, start_worker, stop_process

GENERIC_CONFIG = REPO / "labeling_configs" / "generic.xml"
TRAIN_TIMEOUT_S = 900  # a 2-core machine shared with other jobs trains 5-20x slower than idle

# Small and fast: 4 images, 60 steps at ~200 px; enough for regions to appear, not for accuracy.
FAST_TRAINING_ENV = {
    # 60 steps of 64 sampled RoIs give the mask and keypoint heads as many positives as 30 steps of 128 did:
    # fewer, and a 30-step model's masks stay below MASK_THRESHOLD (boxes and keypoints only, no polygons).
    "TRAIN_STEPS": "60",
    "TRAIN_BATCH_SIZE": "2",
    "TRAIN_MIN_SIZE": "160",
    "TRAIN_MAX_SIZE": "224",
    "TRAIN_LR": "0.02",
    "TRAIN_AUGMENT_COPIES": "1",  # the augmentation step of a run, at its smallest
    # Random weights: offline, COCO weights could only be a random-valued stand-in (tests.support.weights), whose
    # frozen, un-normalised backbone learns less in these steps than a random one with trainable batch norm.
    # The COCO path through torchvision's loader is tested in tests/model/test_pretrained.py and
    # tests/backend/test_training_runs.py.
    "TRAIN_INIT": "none",
    # a barely trained model is unsure of its boxes and masks; the test checks wiring, not accuracy
    "SCORE_THRESHOLD": "0.05",
    "MASK_THRESHOLD": "0.3",
    "MAX_OBJECTS_PER_IMAGE": "3",
    "OMP_NUM_THREADS": "2",
}


def random_checkpoint(
    path: Path, seed: int = 0, min_size: int = defaults.BACKEND_MIN_SIZE, max_size: int = defaults.BACKEND_MAX_SIZE
) -> Path:
    """A real checkpoint of the light model, untrained: same code path and cost as a trained one."""
    from multitask import engines

    schema = Schema.from_label_config(GENERIC_CONFIG.read_text())
    engine = engines.get("torchvision")
    return engine.random_checkpoint(schema, path, engines.default_backbone("torchvision"), min_size, max_size, seed)


def steered_checkpoint(path: Path, animal_logit: float, seed: int = 0) -> Path:
    """A real checkpoint of the light model whose box classifier says 'animal' by ``animal_logit`` over background
    on every proposal, whatever the image: +20, an animal everywhere (full masks, so polygons) at any
    SCORE_THRESHOLD, i.e. false positives on plain images; -20, not a single candidate. What a version
    predicts then does not hang on how a few training steps went; the engine's own loader runs."""
    import torch

    from multitask.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(random_checkpoint(path, seed))
    weights = checkpoint.state_dict
    animal = checkpoint.schema.categories[0]
    assert animal.name == "animal" and animal.id == 1  # row 0 is the background
    bias = torch.full_like(weights["roi_heads.box_predictor.cls_score.bias"], -40.0)
    bias[0], bias[animal.id] = 0.0, animal_logit
    weights["roi_heads.box_predictor.cls_score.weight"].zero_()
    weights["roi_heads.box_predictor.cls_score.bias"] = bias
    weights["roi_heads.mask_predictor.mask_fcn_logits.weight"][animal.id].zero_()
    weights["roi_heads.mask_predictor.mask_fcn_logits.bias"][animal.id] = 20.0
    return save_checkpoint(checkpoint, path)


@dataclass(frozen=True)
class SyntheticObject:
    """One drawn 'animal': its outline and three keypoints, in pixels."""

    polygon: list[tuple[float, float]]
    keypoints: dict[str, tuple[float, float]]


def synthetic_image(seed: int, width: int = 224, height: int = 160) -> tuple[bytes, SyntheticObject]:
    """A PNG with one brown ellipse on a noisy background, and its ground truth."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    rx, ry = rng.uniform(0.18, 0.28) * width, rng.uniform(0.2, 0.3) * height
    polygon = [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 16, endpoint=False)]
    ImageDraw.Draw(image).polygon(polygon, fill=(170, 90, 30))
    keypoints = {
        "eye_left": (cx - 0.4 * rx, cy - 0.3 * ry),
        "eye_right": (cx + 0.4 * rx, cy - 0.3 * ry),
        "nose": (cx, cy + 0.2 * ry),
    }
    for x, y in keypoints.values():
        ImageDraw.Draw(image).ellipse((x - 3, y - 3, x + 3, y + 3), fill=(20, 20, 20))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), SyntheticObject(polygon, keypoints)


def annotation_result(obj: SyntheticObject, width: int, height: int) -> list[dict[str, Any]]:
    """What an annotator produces in the UI: a polygon and keypoints nested under it (parentID)."""
    result = [polygon_result("animal1", "animal", obj.polygon, width, height)]
    for i, (name, (x, y)) in enumerate(obj.keypoints.items()):
        result.append(keypoint_result(f"kp{i}", name, x, y, width, height, parent_id="animal1"))
    return result


def create_annotated_project(
    ls: LabelStudioServer, title: str, images: int = 4, unlabeled: int = 1
) -> tuple[int, list[int], list[int]]:
    """A project from generic.xml: ``images`` uploaded PNGs annotated through the API, then ``unlabeled``
    new ones (the images pre-annotation is for). Returns project id, labeled and unlabeled task ids."""
    project = ls.client.projects.create(title=title, label_config=GENERIC_CONFIG.read_text())
    assert project.id is not None  # the SDK types it Optional; Label Studio always returns it
    drawn = {f"animal{seed}.png": synthetic_image(seed) for seed in range(images + unlabeled)}
    task_ids = ls.import_images(project.id, {name: png for name, (png, _) in drawn.items()})
    ids = [task_ids[name] for name in drawn]
    for task_id, (_, obj) in zip(ids[:images], drawn.values(), strict=False):
        ls.annotate(task_id, annotation_result(obj, 224, 160))
    return project.id, ids[:images], ids[images:]


class MediaServer:
    """A real HTTP server standing in for Label Studio's media URLs (``/data/upload/...``), checking the token.

    For tests and benchmarks of the backend alone; ``files`` maps URL paths to bytes, ``redirects``
    maps URL paths to a ``Location``. Every request's path, Authorization header and all headers are
    recorded, so a second instance with no files is the canary that tests assert is never reached.
    ``token=None`` serves files to anyone (a storage host behind a pre-signed URL);
    ``response_headers`` go on every answer (e.g. a ``Set-Cookie`` that must not travel on).
    """

    def __init__(
        self,
        token: str | None,
        files: dict[str, bytes],
        redirects: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> None:
        self.files = files
        self.redirects = redirects or {}
        self.response_headers = response_headers or {}
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self.request_headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.requests.append(self.path)
                server.authorizations.append(self.headers.get("Authorization"))
                server.request_headers.append(dict(self.headers.items()))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self._extra_headers()
                    self.end_headers()
                    return
                if token is not None and self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
                    self._extra_headers()
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self._extra_headers()
                self.end_headers()
                self.wfile.write(body or b"")

            def _extra_headers(self) -> None:
                for name, value in server.response_headers.items():
                    self.send_header(name, value)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()


@dataclass
class Process:
    """A started child process with its log; stopped at exit if nobody stopped it earlier."""

    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _tracked(proc: subprocess.Popen, log: Path) -> Process:
    process = Process(proc, log)
    atexit.register(process.stop)  # safety net; tests stop their processes earlier, while Redis still runs
    return process


def backend_env(ls: LabelStudioServer, redis_url: str, model_dir: Path) -> dict[str, str]:
    """The environment the server and the worker share (as in the stack)."""
    return repo_env(
        LABEL_STUDIO_URL=ls.url,
        LABEL_STUDIO_API_KEY=ls.token,
        REDIS_URL=redis_url,
        MODEL_DIR=str(model_dir),
        **FAST_TRAINING_ENV,
    )


def start_backend(env: dict[str, str], log: Path) -> tuple[str, Process]:
    """``python -m backend`` on a free port; returns its URL once /health answers."""
    port = free_port()
    process = _tracked(run_python(["-m", "backend", "--host", "127.0.0.1", "--port", str(port)], env, log), log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"the backend exited:\n{process.log_tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the backend did not answer /health within 90 s:\n{process.log_tail()}")


def start_train_worker(env: dict[str, str], log: Path) -> Process:
    """A worker of the ``train`` queue, stopped at exit if nobody stopped it earlier."""
    return _tracked(start_worker(env, log, "train"), log)


def wait_for_training(backend_url: str, project_id: int, previous: str, worker: Process) -> dict[str, Any]:
    """Poll ``GET /runs/<project>`` until a version other than ``previous`` is published."""
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{backend_url}/runs/{project_id}", timeout=5).json()
        if status["model_version"] != previous and status["training"].get("state") == "succeeded":
            return status
        if status["training"].get("state") == "failed":
            raise AssertionError(f"training failed: {status}\n--- worker log ---\n{worker.log_tail()}")
        time.sleep(2)
    raise AssertionError(f"no model published within {TRAIN_TIMEOUT_S} s: {status}\n{worker.log_tail()}")


@dataclass(frozen=True)
class TrainedProject:
    project_id: int
    labeled_task_ids: list[int]
    new_task_ids: list[int]  # imported after labeling, never annotated
    ml_backend_id: int
    backend_url: str
    model_version: str
    untrained_predictions: int  # predictions Label Studio stored while no model was published
    run_status: dict[str, Any]
    preannotations: dict[int, str]  # task id -> model_version of the predictions stored right after training
    opened: dict[str, Any]  # the task Label Studio hands an annotator next, right after training (its /next API)


_shared: dict[tuple[tuple[str, str], ...], TrainedProject] = {}
_shared_processes: list[Process] = []


def shared_trained_project(
    ls: LabelStudioServer, redis_url: str, root: Path, env_overrides: dict[str, str] | None = None
) -> TrainedProject:
    """The whole journey, once per process and environment: label -> connect backend -> Start Training
    -> new version. ``env_overrides`` go on top of :func:`backend_env` (e.g. ``TRAIN_ENGINE``).

    The backend and worker keep running for later tests; call :func:`stop_shared_processes` from a
    session fixture's teardown, which pytest runs before it stops the session's Redis.
    """
    key = tuple(sorted((env_overrides or {}).items()))
    if key not in _shared:
        _shared[key] = _train_through_label_studio(ls, redis_url, root, dict(key))
    return _shared[key]


def stop_shared_processes() -> None:
    while _shared_processes:
        _shared_processes.pop().stop()


def _train_through_label_studio(
    ls: LabelStudioServer, redis_url: str, root: Path, env_overrides: dict[str, str]
) -> TrainedProject:
    root.mkdir(parents=True, exist_ok=True)
    # each journey gets its own Redis database, so one journey's worker never takes another's run
    env = {**backend_env(ls, redis_database(redis_url, len(_shared)), root / "models"), **env_overrides}
    if env.get("TRAIN_INIT", "coco") == "coco":
        _place_coco_stand_in(env)
    backend_url, backend = start_backend(env, root / "backend.log")
    worker = start_train_worker(env, root / "worker.log")
    _shared_processes.extend([backend, worker])
    project_id, labeled, new = create_annotated_project(ls, "backend e2e")
    # Settings > Model > Connect Model
    ml = ls.client.ml.create(project=project_id, url=backend_url, title="multitask", is_interactive=False)
    retrieve_predictions(ls, project_id)
    untrained = len(ls.client.predictions.list(project=project_id))
    # Settings > Model > "Start Training": POST /api/ml/<id>/train -> START_TRAINING webhook to the backend
    ls.client.ml.train(id=ml.id)
    status = wait_for_training(backend_url, project_id, "untrained", worker)
    stored = {p.task: p.model_version or "" for p in ls.client.predictions.list(project=project_id)}
    # the labeling stream's request when an annotator presses "Label All Tasks"
    opened = httpx.get(f"{ls.url}/api/projects/{project_id}/next/", headers=ls.headers, timeout=120).json()
    return TrainedProject(
        project_id, labeled, new, ml.id, backend_url, status["model_version"], untrained, status, stored, opened
    )


def redis_database(url: str, db: int) -> str:
    """``url`` on logical database ``db`` (``redis://host/N`` or ``unix://path?db=N``; 0: ``url`` unchanged)."""
    if db == 0:
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":  # urlunsplit would drop the empty host ("unix:/path"), which redis refuses
        return f"unix://{parts.path}?db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def _place_coco_stand_in(env: dict[str, str]) -> None:
    """A run that trains from ``TRAIN_INIT=coco`` offline: random-valued stand-ins for the
    published COCO files go into the ``TORCH_HOME`` / ``FVCORE_CACHE`` this process and the worker
    share (the test session sets scratch ones), so the engine's own loader runs in the worker."""
    from backend.settings import Settings
    from tests.support.weights import write_coco_stand_ins

    for cache in ("TORCH_HOME", "FVCORE_CACHE"):
        if env.get(cache) != os.environ.get(cache) or not env.get(cache):
            raise RuntimeError(f"set {cache} to a scratch folder: a stand-in must never land in the real cache")
    settings = Settings.from_env(env)
    write_coco_stand_ins(settings.train_engine, settings.train_backbone)


def retrieve_predictions(ls: LabelStudioServer, project_id: int) -> None:
    """Data Manager > select all > Actions > "Retrieve Predictions"."""
    response = httpx.post(
        f"{ls.url}/api/dm/actions", headers=ls.headers, timeout=120,
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"selectedItems": {"all": True, "excluded": []}},
    )  # fmt: skip
    response.raise_for_status()
