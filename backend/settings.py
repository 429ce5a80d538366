"""Everything the ML backend server and its training jobs read from the environment, in one place.

The server and the RQ workers are separate processes (possibly on separate machines); both build
:class:`Settings` from the same environment so that they agree on where models live and how to
reach Label Studio. Nothing else in ``backend`` reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from jobqueue.connection import data_dir
from multitask.engines import ENGINE_NAMES, default_backbone


class SettingsError(ValueError):
    """An environment variable has a value the backend cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    label_studio_url: str | None
    label_studio_api_key: str | None
    model_dir: Path
    retrain_every: int = 0  # 0: annotation events never trigger training on their own
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    bearer_token: str | None = None
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    media_timeout: float = 30.0
    # 100 tasks with their data plus the labeling config are well under 1 MB; the cap bounds what an
    # anonymous or broken client can make the server buffer and parse.
    max_request_bytes: int = 10 * 1024 * 1024
    predict_queue: int = 16  # /predict requests running or waiting; more get 503 + Retry-After
    score_threshold: float = 0.5
    mask_threshold: float = 0.5  # mask probability that counts as inside the object's polygon
    max_objects: int = 50  # per image, highest scores first: hundreds of regions make the editor sluggish
    keypoint_threshold: float | None = None  # heatmap logit a keypoint must reach; None: every applicable one
    polygon_tolerance_px: float = 1.5  # Douglas-Peucker tolerance: about the vertices a person would click
    preannotate_after_training: bool = True  # write the new version's predictions to unannotated tasks
    train_engine: str = "torchvision"  # torchvision | detectron2 (multitask.engines)
    train_backbone: str = "mobilenet_v3_large_fpn"  # default: the engine's (multitask.engines.default_backbone)
    train_init: str = "coco"  # coco | imagenet | none | path to a weights file (multitask.pretrained)
    train_steps: int = 300  # a project's first run (or one whose classes/keypoints changed)
    retrain_steps: int = 100  # a run that continues from the current version (same classes and keypoints)
    retrain_lr: float | None = None  # its learning rate; None: a tenth of train_lr (see retrain_learning_rate)
    holdout_min_tasks: int = 10  # annotated tasks needed before a share of them is held out for scoring
    holdout_share: float = 0.2  # share of tasks held out (by a hash of the task id)
    train_threads: int = 0  # torch threads in a training job; 0: every core the worker may use
    train_batch_size: int = 2
    train_lr: float = 0.01
    train_min_size: int = 320
    train_max_size: int = 512
    train_augment_copies: int = 0  # 0: train on the annotated images only
    train_device: str = "cpu"
    train_seed: int = 0
    train_job_timeout: int = 3 * 3600  # seconds an RQ training job may run
    train_heartbeat_seconds: int = 60  # a running job silent this long is dead (worker killed, Redis lost)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        reader = _Reader(env)
        url = env.get("LABEL_STUDIO_URL") or None
        engine = env.get("TRAIN_ENGINE") or cls.train_engine
        if engine not in ENGINE_NAMES:
            raise SettingsError(f"TRAIN_ENGINE={engine!r} is not an engine; choose one of {list(ENGINE_NAMES)}")
        return cls(
            label_studio_url=url.rstrip("/") if url else None,
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            model_dir=Path(env.get("MODEL_DIR") or data_dir() / "models").resolve(),
            retrain_every=reader.int("RETRAIN_EVERY", 0),
            basic_auth_user=env.get("BASIC_AUTH_USER") or None,
            basic_auth_pass=env.get("BASIC_AUTH_PASS") or None,
            bearer_token=env.get("ML_BACKEND_TOKEN") or None,
            max_image_pixels=reader.int("MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_image_bytes=reader.int("MAX_IMAGE_BYTES", cls.max_image_bytes),
            media_timeout=reader.float("MEDIA_TIMEOUT", cls.media_timeout),
            max_request_bytes=reader.int("MAX_REQUEST_BYTES", cls.max_request_bytes),
            predict_queue=reader.int("PREDICT_QUEUE", cls.predict_queue),
            score_threshold=reader.float("SCORE_THRESHOLD", cls.score_threshold),
            mask_threshold=reader.float("MASK_THRESHOLD", cls.mask_threshold),
            max_objects=reader.int("MAX_OBJECTS_PER_IMAGE", cls.max_objects),
            keypoint_threshold=reader.optional_float("KEYPOINT_THRESHOLD"),
            polygon_tolerance_px=reader.float("POLYGON_TOLERANCE_PX", cls.polygon_tolerance_px),
            preannotate_after_training=reader.bool("PREANNOTATE_AFTER_TRAINING", cls.preannotate_after_training),
            train_engine=engine,
            train_backbone=env.get("TRAIN_BACKBONE") or default_backbone(engine),
            train_init=env.get("TRAIN_INIT") or cls.train_init,
            train_steps=reader.int("TRAIN_STEPS", cls.train_steps),
            retrain_steps=reader.int("RETRAIN_STEPS", cls.retrain_steps),
            retrain_lr=reader.optional_float("RETRAIN_LR"),
            holdout_min_tasks=reader.int("HOLDOUT_MIN_TASKS", cls.holdout_min_tasks),
            holdout_share=reader.share("HOLDOUT_SHARE", cls.holdout_share),
            train_threads=reader.int("TRAIN_THREADS", cls.train_threads),
            train_batch_size=reader.int("TRAIN_BATCH_SIZE", cls.train_batch_size),
            train_lr=reader.float("TRAIN_LR", cls.train_lr),
            train_min_size=reader.int("TRAIN_MIN_SIZE", cls.train_min_size),
            train_max_size=reader.int("TRAIN_MAX_SIZE", cls.train_max_size),
            train_augment_copies=reader.int("TRAIN_AUGMENT_COPIES", 0),
            train_device=env.get("TRAIN_DEVICE") or cls.train_device,
            train_seed=reader.int("TRAIN_SEED", 0),
            train_job_timeout=reader.int("TRAIN_JOB_TIMEOUT", cls.train_job_timeout),
            train_heartbeat_seconds=reader.int("TRAIN_HEARTBEAT_SECONDS", cls.train_heartbeat_seconds),
        )

    def __post_init__(self) -> None:
        # Half a Basic Auth configuration used to fail open (no password: any password accepted;
        # no user: auth off). Refuse it here so the server never starts that way.
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            given, missing = ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")
            if not self.basic_auth_user:
                given, missing = missing, given
            raise SettingsError(f"{given} is set but {missing} is not: set both (or neither) for Basic Auth")
        if self.predict_queue < 1:
            raise SettingsError("PREDICT_QUEUE must be at least 1")

    @property
    def retrain_learning_rate(self) -> float:
        """Learning rate of a run that continues from the current version.

        A tenth of ``train_lr`` unless ``RETRAIN_LR`` is set: the previous run ended its schedule at
        1% of ``train_lr``, and restarting at the full rate undoes part of it (on the synthetic set,
        15 continued steps ended at loss 7.2 with the full rate, 4.7 with a tenth, from 5.4).
        """
        return self.train_lr / 10 if self.retrain_lr is None else self.retrain_lr

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user or self.bearer_token)


class _Reader:
    """Typed env lookups whose errors name the variable, so a typo fails at start-up, not mid-request."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def int(self, key: str, default: int) -> int:
        raw = self._env.get(key)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{key}={raw!r} is not a whole number") from None
        if value < 0:
            raise SettingsError(f"{key}={raw!r} must not be negative")
        return value

    def bool(self, key: str, default: bool) -> bool:
        raw = (self._env.get(key) or "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{key}={raw!r} is not true/false")

    def float(self, key: str, default: float) -> float:
        value = self.optional_float(key)
        return default if value is None else value

    def share(self, key: str, default: float) -> float:
        value = self.float(key, default)
        if not 0.0 <= value < 1.0:
            raise SettingsError(f"{key}={value!r} must be at least 0 and below 1")
        return value

    def optional_float(self, key: str) -> float | None:
        raw = self._env.get(key)
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{key}={raw!r} is not a number") from None
