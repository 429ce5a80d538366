"""The retrain loop as a user lives it, timed: label 20 images, Start Training, label 5 more, retrain.

Everything is real: a Label Studio process (started here, in ``--work-dir``), Redis, the ML backend
(``python -m backend``) and one RQ training worker, all on this machine's CPU. The project is the
synthetic *scenes* set (``multitask.synthetic``, ``scenes=True``: discs with 3 keypoints, plates,
triangles with 3 keypoints; several objects per image on texture and clutter). Annotations are posted
through Label Studio's API as the labeling UI stores them (polygons with keypoints nested under them).

Per ``--init`` (the worker's ``TRAIN_INIT``):

1. *first run*: a project with 20 annotated tasks (and 5 unannotated ones); Start Training is the same
   ``POST /api/ml/<id>/train`` the button sends. Timed from that call until ``GET /runs/<project>``
   serves the new version.
2. *warm-start retrain*: the 5 tasks get annotated, Start Training again: the run continues from the
   served version for ``RETRAIN_STEPS``.
3. *from-scratch retrain*: a second project with all 25 tasks annotated from the start, trained from
   ``--init`` for ``TRAIN_STEPS``: what the retrain would cost and score without the warm start.

Printed per run: the time to the served version, the backend's held-out AP (``versions[].heldout``
of ``GET /runs``, on the tasks the backend holds out of training) and the AP of the served version
on a fixed test set of synthetic scenes generated here (the same images for every run, so the
runs are comparable), plus the median vertex count of predicted polygons before and after the
backend's simplification (``POLYGON_TOLERANCE_PX``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from combined_coco.labelstudio import coco_image_results  # noqa: E402
from combined_coco.schema import Schema  # noqa: E402
from multitask import defaults  # noqa: E402
from tests.support.backend import Process, backend_env, start_backend, start_train_worker  # noqa: E402
from tests.support.labelstudio import LabelStudioServer, shared_label_studio  # noqa: E402

EXAMPLE = """example:
  python benchmarks/retrain_loop.py --quick                  # a few minutes: checks the loop works, AP is noise
  python benchmarks/retrain_loop.py --inits coco,none        # the real figures (needs the coco weights cached)
  python benchmarks/retrain_loop.py --inits none --work-dir /tmp/bench   # keeps logs, models, LS data there
"""

FIRST_TASKS, MORE_TASKS = 20, 5
TARGET_FIRST_S, TARGET_RETRAIN_S = 600, 180
SCENE_CONFIG = REPO / "labeling_configs" / "scenes.xml"  # the scenes schema (multitask.synthetic)
AP_KINDS = ("bbox_AP", "segm_AP", "keypoints_AP")


@dataclass(frozen=True)
class Profile:
    """Training settings of the worker (the backend's environment variables) and the image size."""

    size: int
    train_steps: int
    retrain_steps: int
    test_images: int
    env: dict[str, str] = field(default_factory=dict)

    def worker_env(self, init: str) -> dict[str, str]:
        return {
            "TRAIN_INIT": init,
            "TRAIN_STEPS": str(self.train_steps),
            "RETRAIN_STEPS": str(self.retrain_steps),
            "HOLDOUT_MIN_TASKS": "10",
            "TRAIN_MIN_SIZE": str(self.size),
            "TRAIN_MAX_SIZE": str(self.size),
            "TRAIN_AUGMENT_COPIES": "0",
            "TRAIN_BATCH_SIZE": "2",
            "TRAIN_LR": "0.01",
            "SCORE_THRESHOLD": "0.3",
            "MASK_THRESHOLD": "0.5",
            "MAX_OBJECTS_PER_IMAGE": "50",  # backend_env's test values cap it at 3
            "OMP_NUM_THREADS": "2",
            **self.env,
        }


# The backend's defaults: TRAIN_STEPS, RETRAIN_STEPS, batch 2, and its TRAIN_MIN_SIZE (the scenes are square).
FULL = Profile(size=defaults.BACKEND_MIN_SIZE, train_steps=300, retrain_steps=100, test_images=20)
QUICK = Profile(size=160, train_steps=10, retrain_steps=5, test_images=6)


@dataclass
class RunResult:
    name: str
    init: str
    tasks: int
    version: str = ""
    served_s: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    test_ap: dict[str, float] = field(default_factory=dict)
    vertices: tuple[float, float] | None = None  # median raw / simplified, on the test set


def png(image: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


class Loop:
    """The running services and the two projects of one ``--init``."""

    def __init__(
        self, ls: LabelStudioServer, backend_url: str, worker: Process, model_dir: Path, load: list[float]
    ) -> None:
        self.ls, self.backend_url, self.worker, self.model_dir = ls, backend_url, worker, model_dir
        self.load = load  # 1-minute load average, sampled while training

    def project(self, title: str, config: str, images: dict[str, bytes]) -> tuple[int, int, dict[str, int]]:
        project = self.ls.client.projects.create(title=title, label_config=config)
        assert project.id is not None  # the SDK types it Optional; Label Studio always returns it
        task_ids = self.ls.import_images(project.id, images)
        ml = self.ls.client.ml.create(project=project.id, url=self.backend_url, title="multitask", is_interactive=False)
        return project.id, ml.id, task_ids

    def train(self, project_id: int, ml_id: int, label: str) -> tuple[str, float]:
        """Start Training as the button does; seconds until ``/runs`` serves a new version."""
        before = self._runs(project_id)["model_version"]
        started = time.monotonic()
        self.ls.client.ml.train(id=ml_id)
        last = ""
        while True:
            status = self._runs(project_id)
            run = status["training"]
            if status["model_version"] != before:
                served = time.monotonic() - started
                break
            if run.get("state") == "failed":
                raise RuntimeError(f"{label}: training failed: {run.get('error')}\n{self.worker.log_tail(3000)}")
            self.load.append(os.getloadavg()[0])
            progress = f"{run.get('phase', run.get('state'))} {run.get('step', '')}/{run.get('total', '')}"
            if progress != last:
                print(f"  {label}: {progress} ({time.monotonic() - started:.0f} s)", flush=True)
                last = progress
            time.sleep(1)
        while self._runs(project_id)["training"].get("state") not in ("succeeded", "failed"):
            time.sleep(1)  # pre-annotation of the remaining tasks; the next trigger waits for it
        return status["model_version"], served

    def version_meta(self, project_id: int, version: str) -> dict[str, Any]:
        """The version's entry of ``GET /runs`` (train branch contract), else its ``meta.json``."""
        for entry in self._runs(project_id)["versions"]:
            if isinstance(entry, dict) and entry.get("version") == version:
                return entry
        return json.loads((self.model_dir / str(project_id) / version / "meta.json").read_text())

    def _runs(self, project_id: int) -> dict[str, Any]:
        return httpx.get(f"{self.backend_url}/runs/{project_id}", timeout=30).json()


def score_on_test_set(
    checkpoint: Path, test_json: Path, tolerance: float
) -> tuple[dict[str, float], tuple[float, float] | None]:
    """AP of a served checkpoint on the fixed test set, and polygon vertex medians before/after simplification."""
    import numpy as np

    from combined_coco.geometry import simplify_outline
    from combined_coco.images import read_image
    from multitask.evaluate import evaluate_checkpoint
    from multitask.inference import TorchvisionPredictor

    results = evaluate_checkpoint(checkpoint, test_json)
    ap = {f"{kind}_AP": float(results[kind]["AP"]) for kind in ("bbox", "segm", "keypoints") if kind in results}
    predictor = TorchvisionPredictor.from_checkpoint(checkpoint, score_threshold=0.3)
    raw, simple = [], []
    for info in json.loads(test_json.read_text())["images"]:
        for inst in predictor.predict([read_image(test_json.parent / info["file_name"])])[0]:
            for flat in inst.polygons:
                points = np.asarray(flat, float).reshape(-1, 2)
                raw.append(len(points))
                simple.append(len(simplify_outline(points, tolerance)))
    return ap, ((statistics.median(raw), statistics.median(simple)) if raw else None)


def run_init(
    loop: Loop,
    init: str,
    config: str,
    coco: dict,
    pixels: list,
    test_json: Path,
    tolerance: float,
    scratch_run: bool = True,
) -> list[RunResult]:
    schema = Schema.from_label_config(config)
    images = {info["file_name"]: png(p) for info, p in zip(coco["images"], pixels)}
    names = [info["file_name"] for info in coco["images"]]
    ids = {info["file_name"]: info["id"] for info in coco["images"]}
    results = []

    project, ml, tasks = loop.project(f"retrain loop ({init})", config, images)
    for name in names[:FIRST_TASKS]:
        loop.ls.annotate(tasks[name], coco_image_results(coco, ids[name], schema))
    first = RunResult("first run", init, FIRST_TASKS)
    first.version, first.served_s = loop.train(project, ml, f"{init} first run")
    first.meta = loop.version_meta(project, first.version)
    results.append(first)
    for name in names[FIRST_TASKS:]:
        loop.ls.annotate(tasks[name], coco_image_results(coco, ids[name], schema))
    warm = RunResult("warm-start retrain", init, FIRST_TASKS + MORE_TASKS)
    warm.version, warm.served_s = loop.train(project, ml, f"{init} retrain")
    warm.meta = loop.version_meta(project, warm.version)
    results.append(warm)

    projects = [project, project]
    if scratch_run:
        scratch_project, scratch_ml, scratch_tasks = loop.project(f"from scratch ({init})", config, images)
        for name in names:
            loop.ls.annotate(scratch_tasks[name], coco_image_results(coco, ids[name], schema))
        scratch = RunResult("from-scratch retrain", init, FIRST_TASKS + MORE_TASKS)
        scratch.version, scratch.served_s = loop.train(scratch_project, scratch_ml, f"{init} from scratch")
        scratch.meta = loop.version_meta(scratch_project, scratch.version)
        results.append(scratch)
        projects.append(scratch_project)

    for result, pid in zip(results, projects, strict=True):
        checkpoint = loop.model_dir / str(pid) / result.version / "model.pt"
        result.test_ap, result.vertices = score_on_test_set(checkpoint, test_json, tolerance)
    return results


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def report(results: list[RunResult], load: str) -> None:
    print(f"\nmeasured under load: {load}")
    header = [
        "run",
        "init",
        "tasks",
        "started_from",
        "steps",
        "trigger->served s",
        "train s",
        "held-out tasks",
        *(f"held-out {k}" for k in AP_KINDS),
        *(f"test {k}" for k in AP_KINDS),
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        heldout = r.meta.get("heldout") or {}
        row = [r.name, r.init, r.tasks, r.meta.get("started_from", "-"), r.meta.get("steps"), f"{r.served_s:.0f}",
               r.meta.get("train_seconds"), heldout.get("tasks"), *(heldout.get(k) for k in AP_KINDS),
               *(r.test_ap.get(k) for k in AP_KINDS)]  # fmt: skip
        print("| " + " | ".join(fmt(v) for v in row) + " |")
    vertices = [r.vertices for r in results if r.vertices]
    if vertices:
        print(
            "polygon vertices per predicted object (median, test set): "
            + ", ".join(f"{r.name} ({r.init}) {v[0]:g} -> {v[1]:g}" for r in results if (v := r.vertices))
        )
    for init in dict.fromkeys(r.init for r in results):
        first, warm = (
            next(r for r in results if r.init == init and r.name == n) for n in ("first run", "warm-start retrain")
        )
        better = all(warm.test_ap.get(k, 0) >= first.test_ap.get(k, 0) for k in AP_KINDS)
        print(
            f"init={init}: first run {first.served_s:.0f} s (target <= {TARGET_FIRST_S}), "
            f"retrain {warm.served_s:.0f} s (target <= {TARGET_RETRAIN_S}), "
            f"retrain test AP >= first-run test AP: {'yes' if better else 'no'}"
        )


def describe_load(samples: list[float]) -> str:
    if not samples:
        return f"{os.cpu_count()} cores"
    return (
        f"{os.cpu_count()} cores, 1-min load average while training: median {statistics.median(samples):.1f}, "
        f"max {max(samples):.1f} (other work shares the cores)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"tiny runs ({QUICK.train_steps}/{QUICK.retrain_steps} steps, "
                        f"{QUICK.size} px): checks the loop, not the model")  # fmt: skip
    parser.add_argument(
        "--inits", default="none", help="comma-separated TRAIN_INIT values to compare (coco, imagenet, none, a path)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="Label Studio data, models and logs (default: a temporary folder)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        type=int,
        help=f"image side in px, generated and trained at (default {FULL.size}, the backend's TRAIN_MIN_SIZE)",
    )
    parser.add_argument(
        "--no-scratch", action="store_true", help="skip the from-scratch comparison (first run and retrain only)"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.size:
        profile = dataclasses.replace(profile, size=args.size)
    import torch

    torch.set_num_threads(1)
    from backend.settings import Settings
    from jobqueue.connection import EmbeddedRedis
    from multitask.synthetic import synthetic_coco, write_synthetic_dataset

    root = args.work_dir or Path(tempfile.mkdtemp(prefix="lsmt-retrain-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    config = SCENE_CONFIG.read_text()
    coco, pixels = synthetic_coco(FIRST_TASKS + MORE_TASKS, profile.size, args.seed, scenes=True)
    test_json = write_synthetic_dataset(
        root / "test-set", profile.test_images, profile.size, args.seed + 1000, scenes=True
    )
    test = json.loads(test_json.read_text())
    test["categories"] = Schema.from_label_config(config).to_coco_categories("global")  # as the backend trains
    test_json.write_text(json.dumps(test))
    tolerance = Settings.from_env({}).polygon_tolerance_px

    print(f"work dir {root}; starting Label Studio, Redis, the backend and a training worker ...", flush=True)
    started = time.monotonic()
    ls = shared_label_studio(root / "label-studio")
    redis = EmbeddedRedis(root / "redis")
    backend = worker = None
    results: list[RunResult] = []
    samples: list[float] = []
    try:
        for init in [i.strip() for i in args.inits.split(",") if i.strip()]:
            env = {**backend_env(ls, redis.url, root / "models"), **profile.worker_env(init)}
            if backend is None:
                backend_url, backend = start_backend(env, root / "backend.log")
            worker = start_train_worker(env, root / f"worker-{init.replace('/', '_')}.log")
            print(f"init={init}: services up after {time.monotonic() - started:.0f} s", flush=True)
            results += run_init(
                Loop(ls, backend_url, worker, root / "models", samples),
                init,
                config,
                coco,
                pixels,
                test_json,
                tolerance,
                not args.no_scratch,
            )
            worker.stop()
            worker = None
    finally:
        for process in (worker, backend):
            if process is not None:
                process.stop()
        redis.stop()  # Label Studio is stopped at exit (tests.support.labelstudio registers it)
    report(results, describe_load(samples))
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
