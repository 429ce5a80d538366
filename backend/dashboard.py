"""The training dashboard at ``/dashboard``: what Label Studio's own UI cannot show about training.

Label Studio 1.23's Start Training dialog answers ``Request Sent! Response: {}`` whatever happens and
its model card shows only a title, the URL and Connected/Error, so the annotator watches training
here: per project the current run (phase, step/total, elapsed, ETA, loss, a loss plot), the last
failure with its reason, and every version with its scores, with a button that makes an older version
current again (rollback). Server-rendered HTML (Jinja2) and server-drawn SVG plots (:mod:`backend.plots`);
the only script is a small inline poll of ``/dashboard/<project>/status`` that moves the progress bar
and reloads the page when the run's state or the published versions change. Same auth as every other
endpoint (:mod:`backend.request_guard`): a browser asks for the Basic credentials Label Studio uses.

Routes: ``GET /dashboard`` (projects), ``GET /dashboard/<project>`` (the page), ``.../status`` (JSON),
``.../scores.svg``, ``.../loss.svg`` and ``POST .../current`` (``{"version"}``, JSON only, so that a
form on another site cannot roll a model back with the browser's cached credentials).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import redis
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from backend import plots
from backend.model_store import UNTRAINED, ModelStore
from jobqueue.connection import RedisUnavailable

if TYPE_CHECKING:
    import jinja2

    from backend.app import Services
    from backend.runs import Runs

POLL_SECONDS = 2  # the page's status poll; training writes its progress every 2 s (training.PROGRESS_EVERY_S)
SVG = "image/svg+xml"


def dashboard_url(base_url: str, project_id: int) -> str:
    """The project's dashboard page under the URL the backend was reached at (what the logs print)."""
    return f"{base_url.rstrip('/')}/dashboard/{int(project_id)}"


def heldout_note(summary: dict[str, Any], min_tasks: int) -> str | None:
    """Why a version has no held-out score, in the annotator's terms (None when it has one, or the
    version does not record how many tasks it was trained on)."""
    tasks = summary.get("tasks")
    if summary.get("heldout") is not None or not isinstance(tasks, int):
        return None
    if tasks < min_tasks:
        return (
            f"no held-out score yet: scoring on tasks kept out of training starts at {min_tasks} annotated tasks "
            f"(HOLDOUT_MIN_TASKS), this version had {tasks}; annotate {min_tasks - tasks} more and train again"
        )
    return "no held-out score: every held-out photo fell on one side of the split; annotate more photos"


def version_summaries(store: ModelStore, project_id: int, min_tasks: int) -> list[dict[str, Any]]:
    """:meth:`ModelStore.version_summaries`, each version without a held-out score saying why (``heldout_note``)."""
    summaries = store.version_summaries(project_id)
    for summary in summaries:
        if (note := heldout_note(summary, min_tasks)) is not None:
            summary["heldout_note"] = note
    return summaries


def early_quality(versions: list[dict[str, Any]], min_tasks: int) -> dict[str, Any] | None:
    """How far the newest version is from held-out scores: None once it has them (or nothing is trained)."""
    if not versions or "heldout_note" not in versions[-1]:
        return None
    tasks = versions[-1]["tasks"]
    return {
        "holdout_min_tasks": min_tasks,
        "annotated_tasks": tasks,
        "more_tasks_needed": max(0, min_tasks - tasks),
        "message": versions[-1]["heldout_note"],
    }


def first_run_failure(runs: Callable[[], Runs], project_id: int, base_url: str) -> str | None:
    """Why the project's last run failed while no version is published yet, for ``/setup`` to answer as an
    error: Label Studio 1.23 then shows its model card as *Error* (and asks for no predictions, which
    an untrained project has none of), until the first version is published. Once a version serves,
    a failed run leaves the card alone: *Error* would stop the served version's predictions.
    None when Redis cannot say (``/setup`` must keep working without Redis)."""
    try:
        status = runs().status(project_id)
    except (redis.RedisError, RedisUnavailable):
        return None
    if status.get("state") != "failed":
        return None
    return f"the last training run failed: {status.get('error')} (see {dashboard_url(base_url, project_id)})"


def run_view(status: dict[str, Any], now: float) -> dict[str, Any]:
    """The run status as the page shows it: percent done, elapsed and remaining time, current loss."""
    state, step, total = status.get("state", "idle"), status.get("step"), status.get("total")
    started, finished = status.get("started_at") or status.get("queued_at"), status.get("finished_at")
    elapsed = None
    if isinstance(started, int | float):
        elapsed = (finished if state in ("succeeded", "failed") and finished else now) - started
    percent = 100.0 if state == "succeeded" else 0.0
    eta = None
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        percent = 100.0 * min(step, total) / total if state != "succeeded" else 100.0
        began = status.get("training_started_at")
        if state == "running" and status.get("phase") == "training" and step > 0 and isinstance(began, int | float):
            eta = (now - began) / step * (total - step)
    losses = status.get("losses")
    loss = _finite(losses.get("loss")) if isinstance(losses, dict) else None
    history = [[s, _finite(v)] for s, v in status.get("loss_history") or [] if isinstance(s, int)]
    return {
        "state": state,
        "phase": status.get("phase"),
        "step": step,
        "total": total,
        "percent": round(percent, 1),
        "elapsed": _duration(elapsed),
        "eta": _duration(eta),
        "loss": loss,
        "loss_points": len(history),
        "loss_history": history,
        "error": status.get("error") if state == "failed" else None,
        "finished_at": _clock(finished),
        "reason": status.get("reason"),
        "model_version": status.get("model_version"),
        "rerun_pending": bool(status.get("rerun_pending")),
    }


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _duration(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _clock(stamp: object) -> str | None:
    if not isinstance(stamp, int | float):
        return None
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def published_at(version: str) -> str | None:
    """When a version was published, from its name (``v0003-20261124T081500``, UTC)."""
    try:
        return datetime.strptime(version.split("-", 1)[1], "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M UTC")
    except (IndexError, ValueError):
        return None


def install(app: FastAPI, services: Services) -> None:
    """Add the dashboard's routes to the backend app."""
    settings = services.settings

    def status_of(project_id: int) -> dict[str, Any]:
        """The run status, or a stand-in saying Redis is down: versions on disk still show."""
        try:
            return services.runs().status(project_id)
        except (redis.RedisError, RedisUnavailable) as exc:
            return {"state": "unknown", "error": f"Redis is not reachable ({exc}); run status unknown"}

    def project_state(project_id: int) -> dict[str, Any]:
        versions = version_summaries(services.store, project_id, settings.holdout_min_tasks)
        return {
            "project": project_id,
            "current": services.store.current_version(project_id),
            "versions": [v["version"] for v in versions],
            "run": run_view(status_of(project_id), time.time()),
            "quality": early_quality(versions, settings.holdout_min_tasks),
            "poll_seconds": POLL_SECONDS,
        }

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard_index() -> HTMLResponse:
        on_disk = services.store.projects()
        try:
            with_runs = set(services.runs().projects())
        except (redis.RedisError, RedisUnavailable):
            with_runs = set()
        projects = [
            {"project": p, "current": services.store.current_version(p), "run": run_view(status_of(p), time.time())}
            for p in sorted(on_disk | with_runs)
        ]
        return HTMLResponse(_template().render(page="index", projects=projects))

    @app.get("/dashboard/{project_id}", response_class=HTMLResponse)
    def dashboard_project(project_id: int) -> HTMLResponse:
        state = project_state(project_id)
        versions = version_summaries(services.store, project_id, settings.holdout_min_tasks)
        for v in versions:
            v["published_at"] = published_at(v["version"])
        html = _template().render(
            page="project", state=state, versions=list(reversed(versions)), untrained=UNTRAINED,
            kinds=plots.KINDS, min_tasks=settings.holdout_min_tasks,
        )  # fmt: skip
        return HTMLResponse(html)

    @app.get("/dashboard/{project_id}/status")
    def dashboard_status(project_id: int) -> dict[str, Any]:
        return project_state(project_id)

    @app.get("/dashboard/{project_id}/scores.svg")
    def scores_plot(project_id: int) -> Response:
        versions = services.store.version_summaries(project_id)
        return Response(plots.heldout_ap_svg(versions), media_type=SVG, headers={"Cache-Control": "no-store"})

    @app.get("/dashboard/{project_id}/loss.svg")
    def loss_plot(project_id: int) -> Response:
        run = run_view(status_of(project_id), time.time())
        svg = plots.loss_svg(run["loss_history"], run["total"])
        return Response(svg, media_type=SVG, headers={"Cache-Control": "no-store"})

    @app.post("/dashboard/{project_id}/current")
    def make_current(project_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        # FastAPI parses the body only when it is declared application/json (anything else: 422), which
        # a cross-site form cannot send without a CORS preflight this server never grants
        version = payload.get("version")
        if not isinstance(version, str):
            raise ValueError("'version' must be the name of a published model version")
        previous = services.store.current_version(project_id)
        services.store.make_current(project_id, version)
        return {"project": project_id, "model_version": version, "previous": previous}


@cache
def _template() -> jinja2.Template:
    """The page template, shipped in the package (``backend/templates``), HTML-escaped by default."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("backend", "templates"), autoescape=True)
    return env.get_template("dashboard.html")
