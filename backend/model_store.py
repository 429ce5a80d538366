"""Published model versions (a local folder or object storage), and the per-process cache of the loaded one.

``MODEL_DIR`` is a local path or an ``s3://bucket/prefix`` URL (:mod:`jobqueue.object_storage`), so a
backend and workers on machines that share no disk share the models. Layout, one folder per Label
Studio project::

    MODEL_DIR/<project_id>/
        v0001-20261124T081500/model.pt   # weights, written completely before anything points at them
        v0001-20261124T081500/meta.json
        v0002-.../
        current                           # one line: the published version name

Publishing writes the new version folder completely first (locally a staging folder renamed into
place; on S3 ``model.pt`` then ``meta.json``, and a version counts only once its ``meta.json``
exists) and replaces ``current`` atomically last, so a server or worker reading at any moment sees
either the old complete model or the new complete one. Older versions stay (roll back by rewriting
``current``). A version in object storage is loaded from a local copy in this process's private
data folder (``<LSMT_DATA_DIR>/model-cache``), fetched once per version: versions never change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobqueue.connection import data_dir
from jobqueue.object_storage import Location, location
from multitask import defaults
from multitask.engines import Predictor

log = logging.getLogger(__name__)

UNTRAINED = "untrained"
CHECKPOINT_NAME = "model.pt"
POINTER_NAME = "current"
META_NAME = "meta.json"
_VERSION_RE = re.compile(r"^v(\d+)-")
_VERSION_NAME = re.compile(r"v\d+-[0-9A-Za-z]+")  # what publish() writes; a pointer naming anything else is corrupt


class ModelUnavailable(RuntimeError):
    """The published version and every older one failed to load; the message says what to do."""


# Fields every version summary has (null when a version predates them or did not measure them).
SUMMARY_KEYS = (
    "started_from",
    "steps",
    "training_set_fit",
    "heldout",
    "heldout_edit_cost",
    "beat_previous",
    "train_seconds",
)


PredictorLoader = Callable[[Path], Predictor]


def load_multitask_predictor(
    checkpoint: Path,
    score_threshold: float = defaults.SCORE_THRESHOLD,
    mask_threshold: float = defaults.MASK_THRESHOLD,
    keypoint_threshold: float | None = None,
    max_objects: int = defaults.MAX_DETECTIONS,
    mask_nms_iou: float = defaults.MASK_NMS_IOU,
) -> Predictor:
    """The real loader, by the engine the checkpoint names; torch is imported only by processes that
    actually load a model."""
    from multitask import engines

    return engines.load_predictor(
        checkpoint,
        device="cpu",
        score_threshold=score_threshold,
        mask_threshold=mask_threshold,
        keypoint_threshold=keypoint_threshold,
        max_detections=max_objects,
        mask_nms_iou=mask_nms_iou,
    )


class ModelStore:
    """Reads and publishes versions under ``MODEL_DIR/<project_id>/`` (a local folder or ``s3://``)."""

    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.root: Location = location(root)
        # versions fetched from object storage, per store (two stores may hold equally named versions)
        digest = hashlib.sha256(self.root.url.encode()).hexdigest()[:12]
        self._cache = (cache_dir or data_dir() / "model-cache") / digest

    def project_dir(self, project_id: int) -> Location:
        return self.root / str(int(project_id))

    def pointer(self, project_id: int) -> Location:
        return self.project_dir(project_id) / POINTER_NAME

    def current_version(self, project_id: int) -> str:
        """The published version name, or ``"untrained"`` when the project has none yet."""
        try:
            return self.pointer(project_id).read_bytes().decode().strip() or UNTRAINED
        except FileNotFoundError:
            return UNTRAINED

    def checkpoint(self, project_id: int, version: str) -> Path:
        """The version's weights as a local file (fetched once from object storage into this process's
        cache); the path does not exist when the version has no weights."""
        source = self.project_dir(project_id) / version / CHECKPOINT_NAME
        local = source.local_path()
        if local is not None:
            return local
        cached = self._cache / str(int(project_id)) / version / CHECKPOINT_NAME
        if not cached.is_file():
            try:
                source.download(cached)  # atomically: a fetch cut short leaves no truncated model behind
            except FileNotFoundError:
                pass
        return cached

    def projects(self) -> set[int]:
        """Projects that have anything in the store (their folder names are their ids)."""
        return {int(top) for name in self.root.files() if (top := name.partition("/")[0]).isdigit()}

    def versions(self, project_id: int) -> list[str]:
        """Complete versions: those whose ``meta.json`` (written last) exists."""
        found = {
            name.partition("/")[0] for name in self.project_dir(project_id).files() if name.endswith("/" + META_NAME)
        }
        return sorted(v for v in found if _VERSION_RE.match(v))

    def version_summaries(self, project_id: int) -> list[dict]:
        """Every version's ``meta.json``, oldest first, each with ``version`` and the :data:`SUMMARY_KEYS`.

        A version whose metadata cannot be read is still listed (with null scores): it exists and
        can be made current, and one bad file must not hide the others.
        """
        summaries = []
        for version in self.versions(project_id):
            try:
                meta = json.loads((self.project_dir(project_id) / version / META_NAME).read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("project %s: metadata of %s unreadable (%s)", project_id, version, exc)
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
            summaries.append({**dict.fromkeys(SUMMARY_KEYS), **meta, "version": version})
        return summaries

    def publish(self, project_id: int, checkpoint: Path, meta: dict) -> str:
        """Write ``checkpoint`` into a new complete version folder, then point ``current`` at it; returns the version."""
        numbers = [int(m.group(1)) for v in self.versions(project_id) if (m := _VERSION_RE.match(v))]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        version = f"v{max(numbers, default=0) + 1:04d}-{stamp}"
        meta_bytes = json.dumps({**meta, "version": version}, indent=2).encode()
        # meta.json last: on S3 it marks the version complete (see versions())
        (self.project_dir(project_id) / version).write_folder({CHECKPOINT_NAME: checkpoint, META_NAME: meta_bytes})
        self.pointer(project_id).write_bytes((version + "\n").encode())
        log.info("project %s: published model version %s", project_id, version)
        return version

    def make_current(self, project_id: int, version: str) -> None:
        """Point ``current`` at an already published ``version`` (rollback), atomically as :meth:`publish`
        does; :class:`ModelCache` sees the new pointer on its next lookup and serves that version."""
        if (
            version not in self.versions(project_id)
            or not (self.project_dir(project_id) / version / CHECKPOINT_NAME).exists()
        ):
            raise ValueError(f"project {project_id} has no published model version {version!r}")
        self.pointer(project_id).write_bytes((version + "\n").encode())
        log.info("project %s: model version %s made current again", project_id, version)


@dataclass
class _Loaded:
    pointer_stamp: Hashable | None
    version: str
    predictor: Predictor | None
    problem: str | None = None  # why the published version is not the one served, for /setup and logs


class ModelCache:
    """The loaded model per project for this process, reloaded when ``current`` changes.

    Each lookup costs one ``stat`` of the pointer file (a HEAD request in object storage); the file is
    re-read only when it changed (inode/mtime/size, or ETag), and a model is loaded only when the version named in it changed.
    A published version that does not load (corrupt, missing, not a checkpoint) is logged once and
    the newest older version that loads is served instead, so one bad publish does not turn every
    ``/predict`` into an error; :meth:`served` tells ``/setup`` which version that is and why.
    """

    def __init__(self, store: ModelStore, loader: PredictorLoader) -> None:
        self._store = store
        self._loader = loader
        self._loaded: dict[int, _Loaded] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, project_id: int) -> tuple[str, Predictor | None]:
        """``(version, predictor)``; ``(UNTRAINED, None)`` while the project has no published model.

        Raises :class:`ModelUnavailable` when a version is published but none loads.
        """
        loaded = self._current(project_id)
        if loaded.predictor is None and loaded.problem:
            raise ModelUnavailable(loaded.problem)
        return loaded.version, loaded.predictor

    def served(self, project_id: int) -> tuple[str, str | None]:
        """``(version, problem)`` without loading anything: what the last load chose if the pointer is
        unchanged since, else the published version (cheap enough for every ``/setup``)."""
        cached = self._loaded.get(project_id)
        if cached and cached.pointer_stamp == self._store.pointer(project_id).stamp():
            return cached.version, cached.problem
        return self._store.current_version(project_id), None

    def _current(self, project_id: int) -> _Loaded:
        stamp = self._store.pointer(project_id).stamp()
        cached = self._loaded.get(project_id)
        if cached and cached.pointer_stamp == stamp:
            return cached
        with self._lock_for(project_id):  # concurrent requests wait for one load instead of loading N times
            cached = self._loaded.get(project_id)
            if cached and cached.pointer_stamp == stamp:
                return cached
            version = self._store.current_version(project_id)
            if cached and cached.version == version and cached.problem is None:
                loaded = _Loaded(stamp, version, cached.predictor)
            elif version == UNTRAINED:
                loaded = _Loaded(stamp, version, None)
            else:
                loaded = self._load_newest(project_id, stamp, version)
            self._loaded[project_id] = loaded
            return loaded

    def _load_newest(self, project_id: int, stamp: Hashable | None, published: str) -> _Loaded:
        """The published version if it loads, else the newest older version that does."""
        predictor, failure = self._try_load(project_id, published)
        if predictor is not None:
            return _Loaded(stamp, published, predictor)
        problem = f"published model version {published!r} cannot be loaded ({failure})"
        for older in sorted((v for v in self._store.versions(project_id) if v < published), reverse=True):
            predictor, _ = self._try_load(project_id, older)
            if predictor is not None:
                log.warning("project %s: %s; serving %s instead", project_id, problem, older)
                return _Loaded(stamp, older, predictor, f"{problem}; serving {older!r} instead")
        log.error("project %s: %s, and no older version loads", project_id, problem)
        return _Loaded(stamp, published, None, f"{problem} and no older version loads; train the project again")

    def _try_load(self, project_id: int, version: str) -> tuple[Predictor | None, str | None]:
        """``(predictor, None)``, or ``(None, reason)`` without server paths (the full error goes to the log)."""
        if not _VERSION_NAME.fullmatch(version):
            return None, "the 'current' pointer does not name a version folder"
        checkpoint = self._store.checkpoint(project_id, version)
        if not checkpoint.is_file():
            return None, f"{version}/{CHECKPOINT_NAME} is missing"
        log.info("project %s: loading model version %s", project_id, version)
        try:
            return self._loader(checkpoint), None
        except Exception as exc:  # any unreadable file: torch, pickle, zip and schema errors alike
            log.warning("project %s: loading %s failed", project_id, checkpoint, exc_info=True)
            return None, f"{type(exc).__name__}; see the backend log"

    def _lock_for(self, project_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(project_id, threading.Lock())
