"""The Label Studio ML backend protocol on FastAPI.

Endpoints (what Label Studio 1.23 calls, see ``label_studio/ml/api_connector.py``):

- ``GET /health``, ``GET /``: liveness, checked with a 1 s timeout when a backend is connected.
- ``POST /setup``: ``{"project": "<id>.<ts>", "schema": <config>}`` -> ``{"model_version"}``; called before
  every prediction batch, so it only reads the ``current`` pointer (and, while nothing is published, the
  run status: a failed first run answers 503, which Label Studio shows as the model card's *Error* state).
- ``POST /predict``: ``{"tasks", "project", "label_config", "params"}`` -> ``{"results": [{"result",
  "score", "model_version"}]}``, one item per task; before the first version, an empty list of predictions
  per task and ``empty_reason`` (the form Label Studio accepts without storing or logging anything).
- ``POST /webhook``: ``START_TRAINING`` (the "Start Training" button, 100 s timeout) queues a run and
  answers at once; annotation events (1 s timeout) are counted for ``RETRAIN_EVERY``; others get 200.
- ``POST /job_status``: status of a training job id returned by ``START_TRAINING``.
- ``GET /runs/{project_id}``: this project's training status and published versions (for people).
- ``GET /dashboard``: the same for people in a browser, with progress, plots and rollback (:mod:`backend.dashboard`).

Every error answers ``{"error": "<what to do>"}`` with a status code, never a traceback or a server path.

Only ``/`` and ``/health`` answer without credentials when auth is configured (``/docs`` and
``/openapi.json`` included); :mod:`backend.request_guard` checks them, and bounds the body, before
FastAPI reads it. ``/health`` and ``/setup`` run on the event loop and never wait behind predictions:
``/predict`` runs on at most :data:`PREDICT_THREADS` threads, and at most ``PREDICT_QUEUE`` requests
run or wait; the next one gets 503 with ``Retry-After``, which Label Studio shows as an error.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from rq.exceptions import NoSuchJobError
from rq.job import Job
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend import dashboard
from backend.labelstudio import LabelStudioClient, LabelStudioError, MediaError
from backend.model_store import UNTRAINED, ModelCache, ModelStore, ModelUnavailable, PredictorLoader
from backend.predictions import (
    NO_VERSION_REASON,
    PredictionService,
    predictor_loader,
    project_id_of,
    project_schema,
)
from backend.request_guard import RequestGuard
from backend.runs import Runs
from backend.settings import Settings
from combined_coco.schema import SchemaError
from jobqueue.connection import RedisUnavailable, connect

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
# Threads /predict may occupy: one fetches the next batch's images while the other runs the model
# (forward passes are serialized anyway); the rest of the thread pool stays free for other endpoints.
PREDICT_THREADS = 2
RETRY_AFTER_S = 10
REDIS_DOWN = (
    "Redis is not reachable: check that the stack (or the Redis in REDIS_URL) is running; "
    "the backend log has the details"
)


class Services:
    """The app's collaborators, created lazily so that /health works while Redis or LS are down."""

    def __init__(self, settings: Settings, loader: PredictorLoader, redis_url: str | None) -> None:
        self.settings = settings
        self.store = ModelStore(settings.model_dir)
        self.models = ModelCache(self.store, loader)
        self.predictions = PredictionService(self.models, self.labelstudio, settings)
        self._redis_url = redis_url
        self._runs: Runs | None = None
        self._ls: LabelStudioClient | None = None
        self._guard = threading.Lock()

    def runs(self) -> Runs:
        with self._guard:
            if self._runs is None:
                settings = self.settings
                conn = connect(
                    self._redis_url, timeout=settings.redis_timeout, connect_timeout=settings.redis_connect_timeout
                )
                self._runs = Runs(conn, settings.train_job_timeout, settings.train_heartbeat_seconds)
            return self._runs

    def labelstudio(self) -> LabelStudioClient:
        with self._guard:
            if self._ls is None:
                self._ls = LabelStudioClient(self.settings)
            return self._ls


def create_app(
    settings: Settings | None = None,
    *,
    loader: PredictorLoader | None = None,
    redis_url: str | None = None,
) -> FastAPI:
    """The ASGI app; tests pass ``loader`` to serve a stand-in predictor through the same protocol code.

    ``redis_url``: None finds Redis as every process does (:func:`jobqueue.connection.redis_url`)."""
    settings = settings or Settings.from_env()
    services = Services(settings, loader or predictor_loader(settings), redis_url)
    app = FastAPI(title="Label Studio multi-task ML backend", version="1")
    app.add_middleware(RequestGuard, settings=settings)
    app.state.services = services
    _install_error_handlers(app, settings)
    dashboard.install(app, services)
    predict_threads = anyio.CapacityLimiter(PREDICT_THREADS)
    predicts_pending = 0  # running or waiting; only touched on the event loop, so no lock

    def public_url(request: Request) -> str:
        """Where a person opens this backend: ``DASHBOARD_URL``, else the address the request came to."""
        return settings.dashboard_url or str(request.base_url)

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "multitask"}

    @app.post("/setup")
    async def setup(payload: dict[str, Any], request: Request) -> dict[str, Any]:
        project_id = project_id_of(payload)
        schema = payload.get("schema")
        if schema and not isinstance(schema, str):
            raise ValueError("'schema' must be the labeling config as an XML string")
        if schema:
            project_schema(schema)  # a config this backend cannot serve shows up in LS as an error now
        version, problem = services.models.served(project_id)
        if version == UNTRAINED:  # Redis in a thread: /setup never waits on the event loop
            failure = await anyio.to_thread.run_sync(
                dashboard.first_run_failure, services.runs, project_id, public_url(request)
            )
            if failure:
                raise HTTPException(503, failure)
        return {"model_version": version, **({"warning": problem} if problem else {})}

    @app.post("/predict")
    async def predict(payload: dict[str, Any]) -> dict[str, Any]:
        nonlocal predicts_pending
        tasks = payload.get("tasks")
        if isinstance(tasks, list) and len(tasks) > settings.max_predict_tasks:
            raise HTTPException(
                413,
                f"{len(tasks)} tasks in one request, over MAX_PREDICT_TASKS={settings.max_predict_tasks}; "
                "select fewer tasks for Retrieve Predictions",
            )
        if predicts_pending >= settings.predict_queue:
            raise HTTPException(
                503,
                f"{predicts_pending} prediction requests are already running or waiting (PREDICT_QUEUE="
                f"{settings.predict_queue}); retry in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        predicts_pending += 1
        try:
            started = time.perf_counter()
            response = await anyio.to_thread.run_sync(services.predictions.predict, payload, limiter=predict_threads)
        finally:
            predicts_pending -= 1
        log.info(
            "predict: %d task(s), model %s, %.0f ms",
            len(payload.get("tasks") or []),
            response["model_version"],
            1000 * (time.perf_counter() - started),
        )
        return response

    @app.post("/webhook")
    def webhook(payload: dict[str, Any], request: Request) -> JSONResponse:
        action = payload.get("action")
        if action is not None and not isinstance(action, str):
            raise ValueError(f"'action' must be a Label Studio event name, got {type(action).__name__}")
        if action == "START_TRAINING":
            project_id = project_id_of(payload)
            result = services.runs().request_training(project_id, "Start Training")
            watch = dashboard.dashboard_url(public_url(request), project_id)
            log.info("project %s: Start Training; watch the run at %s", project_id, watch)
            body = {"job": result.job_id, "status": "queued" if result.enqueued else "coalesced", "dashboard": watch}
            if not result.enqueued:
                body["message"] = "a training run is in progress; it will run once more with the new annotations"
            return JSONResponse(body, status_code=201)
        if action in ANNOTATION_EVENTS and settings.retrain_every > 0:
            project_id = project_id_of(payload)
            if services.runs().count_annotation_event(project_id, settings.retrain_every):
                result = services.runs().request_training(project_id, f"{settings.retrain_every} new annotations")
                status = "queued" if result.enqueued else "coalesced"
                return JSONResponse({"job": result.job_id, "status": status}, status_code=201)
            return JSONResponse({"status": "counted"})
        return JSONResponse({"status": "ignored", "action": action})

    @app.post("/job_status")
    def job_status(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            job = Job.fetch(str(payload.get("job")), connection=services.runs().conn)
        except NoSuchJobError:
            raise HTTPException(410, f"training job {payload.get('job')!r} is unknown or expired") from None
        latest = job.latest_result()
        failure = latest.exc_string if latest is not None and latest.exc_string else None
        return {
            "job_status": job.get_status(refresh=False).value,
            "error": failure and failure.strip().splitlines()[-1],
        }

    @app.get("/runs/{project_id}")
    def runs(project_id: int) -> dict[str, Any]:
        versions = dashboard.version_summaries(services.store, project_id, settings.holdout_min_tasks)
        version = services.store.current_version(project_id)
        return {
            "project": project_id,
            "model_version": version,
            "empty_reason": NO_VERSION_REASON if version == UNTRAINED else None,  # why Retrieve Predictions brings none
            "versions": versions,
            "quality": dashboard.early_quality(versions, settings.holdout_min_tasks),
            "new_annotations": services.runs().new_annotations(project_id),
            "training": services.runs().status(project_id),
        }

    return app


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    # Redis's own messages name its socket file or the stack's data directory: they go to the log only.
    @app.exception_handler(RedisUnavailable)
    async def redis_down(_: Request, exc: RedisUnavailable) -> JSONResponse:
        log.error("%s", exc)
        return error(503, REDIS_DOWN)

    @app.exception_handler(redis.RedisError)
    async def redis_error(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("Redis error: %s", exc)
        if isinstance(exc, redis.TimeoutError):  # up (or its port open) but stopped or overloaded
            return error(
                503,
                f"Redis did not answer in time (REDIS_CONNECT_TIMEOUT={settings.redis_connect_timeout:g} s, "
                f"REDIS_TIMEOUT={settings.redis_timeout:g} s): it may be stopped or overloaded; try again in a moment",
            )
        return error(503, REDIS_DOWN)

    @app.exception_handler(LabelStudioError)
    async def ls_down(_: Request, exc: LabelStudioError) -> JSONResponse:
        log.error("%s", exc)
        return error(503, str(exc))

    @app.exception_handler(SchemaError)
    async def bad_config(_: Request, exc: SchemaError) -> JSONResponse:
        return error(422, f"the project's labeling config cannot be used: {exc}")

    @app.exception_handler(MediaError)
    async def bad_media(_: Request, exc: MediaError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(ModelUnavailable)
    async def no_model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(ValueError)
    async def bad_request(_: Request, exc: ValueError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return error(422, f"malformed request ({where}); Label Studio sends a JSON object")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # the message may hold server paths or data; it goes to the log, the client gets the type only
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the backend log")
