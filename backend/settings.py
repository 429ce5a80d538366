"""Everything the ML backend server and its training jobs read from the environment, in one place.

The server and the RQ workers are separate processes (possibly on separate machines); both build
:class:`Settings` from the same environment so that they agree on where models live and how to
reach Label Studio. Nothing else in ``backend`` reads ``os.environ``. Each field names its variable
(the Label Studio ML-backend names documented in README); defaults shared with the ``python -m multitask``
CLI come from :mod:`multitask.defaults`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from jobqueue.connection import data_dir
from jobqueue.object_storage import location
from multitask import defaults
from multitask.engines import DEFAULT_ENGINE, ENGINE_NAMES, default_backbone


class SettingsError(ValueError):
    """An environment variable has a value the backend cannot use; the message names it."""


def _whole_number(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            raw = int(raw)
        except ValueError:
            raise ValueError("is not a whole number") from None
    if isinstance(raw, int) and raw < 0:
        raise ValueError("must not be negative")
    return raw


def _number(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("is not a number") from None
    return raw


def _share(raw: Any) -> Any:
    value = _number(raw)
    if not 0.0 <= value < 1.0:
        raise ValueError("must be at least 0 and below 1")
    return value


def _flag(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("is not true/false")


def _storage_url(raw: Any) -> Any:
    """A folder (made absolute: other processes read it) or an ``s3://`` URL, as :mod:`jobqueue.object_storage` names it."""
    if isinstance(raw, str | os.PathLike):
        try:
            return location(raw).url
        except ValueError as exc:
            raise ValueError(f"is not a folder or s3:// URL ({exc})") from None
    return raw


# Typed env values whose errors say what is wrong in words (the variable name is added by _one_line),
# so a typo fails at start-up in one line, not mid-request or as a pydantic traceback.
Count = Annotated[int, BeforeValidator(_whole_number)]
Number = Annotated[float, BeforeValidator(_number)]
Share = Annotated[float, BeforeValidator(_share)]
Flag = Annotated[bool, BeforeValidator(_flag)]
StorageUrl = Annotated[str, BeforeValidator(_storage_url)]


class _MappingSource(EnvSettingsSource):
    """The environment source of pydantic-settings, reading a given mapping instead of ``os.environ``
    (names case-sensitive, as on Linux; an empty value is left out, so the field keeps its default)."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._variables.items() if value}


class Settings(BaseSettings):
    """Each field reads the variable named by its ``validation_alias`` (and can be set by its own name)."""

    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, case_sensitive=True, env_ignore_empty=True)

    label_studio_url: str | None = Field(None, validation_alias="LABEL_STUDIO_URL")
    label_studio_api_key: str | None = Field(None, validation_alias="LABEL_STUDIO_API_KEY")
    # a local folder or s3://bucket/prefix (jobqueue.object_storage): where every server and worker finds the models
    model_dir: StorageUrl = Field(default_factory=lambda: str(data_dir() / "models"), validation_alias="MODEL_DIR")
    # where a training run's augmentation shards read and write when augmentation workers run them: a
    # folder they all reach (on one machine the default; on several, s3://bucket/prefix)
    augment_dir: StorageUrl = Field(default_factory=lambda: str(data_dir() / "augment"), validation_alias="AUGMENT_DIR")
    # 0: annotation events never trigger training on their own
    retrain_every: Count = Field(0, validation_alias="RETRAIN_EVERY")
    # where people open the backend's pages (the dashboard links in logs and errors), when that is not the address
    # Label Studio calls (docker compose: Label Studio calls http://ml-backend:9090, a browser opens
    # http://localhost:9090); None: the address each request came to
    dashboard_url: str | None = Field(None, validation_alias="DASHBOARD_URL")
    basic_auth_user: str | None = Field(None, validation_alias="BASIC_AUTH_USER")
    basic_auth_pass: str | None = Field(None, validation_alias="BASIC_AUTH_PASS")
    bearer_token: str | None = Field(None, validation_alias="ML_BACKEND_TOKEN")
    max_image_pixels: Count = Field(40_000_000, validation_alias="MAX_IMAGE_PIXELS")
    max_image_bytes: Count = Field(50 * 1024 * 1024, validation_alias="MAX_IMAGE_BYTES")
    media_timeout: Number = Field(30.0, validation_alias="MEDIA_TIMEOUT")
    # 100 tasks with their data plus the labeling config are well under 1 MB; the cap bounds what an
    # anonymous or broken client can make the server buffer and parse.
    max_request_bytes: Count = Field(10 * 1024 * 1024, validation_alias="MAX_REQUEST_BYTES")
    # tasks in one /predict request; more get 413. Label Studio 1.23's Retrieve Predictions sends every selected
    # task in one request (ml/models.py predict_tasks, no batching) with a 100 s timeout (ML_TIMEOUT_PREDICT),
    # which a CPU model cannot meet for more than a few hundred images; 1000 is its own MAX_TASK_BATCH_SIZE.
    max_predict_tasks: Count = Field(1000, validation_alias="MAX_PREDICT_TASKS")
    # seconds from a connection opening (or its previous response) to the end of the next request's body; a
    # client still sending then is cut off (10 MB on a LAN takes well under a second)
    request_timeout: Number = Field(20.0, validation_alias="REQUEST_TIMEOUT")
    # connections served at once; more get 503 (Label Studio holds a few; the file descriptor limit is ~1024)
    max_connections: Count = Field(500, validation_alias="MAX_CONNECTIONS")
    # /predict requests running or waiting; more get 503 + Retry-After
    predict_queue: Count = Field(16, validation_alias="PREDICT_QUEUE")
    score_threshold: Number = Field(defaults.SCORE_THRESHOLD, validation_alias="SCORE_THRESHOLD")
    # mask probability that counts as inside the object's polygon
    mask_threshold: Number = Field(defaults.MASK_THRESHOLD, validation_alias="MASK_THRESHOLD")
    # per image, highest scores first: hundreds of regions make the editor sluggish (the model's own cap is
    # defaults.MAX_DETECTIONS)
    max_objects: Count = Field(50, validation_alias="MAX_OBJECTS_PER_IMAGE")
    # same-label detections whose masks overlap more are one object: the lower-scoring one is dropped (1: keep all)
    mask_nms_iou: Number = Field(defaults.MASK_NMS_IOU, validation_alias="MASK_NMS_IOU")
    # heatmap logit a keypoint must reach; None: every applicable one
    keypoint_threshold: Number | None = Field(None, validation_alias="KEYPOINT_THRESHOLD")
    # Douglas-Peucker tolerance: about the vertices a person would click
    polygon_tolerance_px: Number = Field(1.5, validation_alias="POLYGON_TOLERANCE_PX")
    # write the new version's predictions to unannotated tasks
    preannotate_after_training: Flag = Field(True, validation_alias="PREANNOTATE_AFTER_TRAINING")
    train_engine: str = Field(DEFAULT_ENGINE, validation_alias="TRAIN_ENGINE")  # multitask.engines
    # "": the engine's (multitask.engines.default_backbone)
    train_backbone: str = Field("", validate_default=True, validation_alias="TRAIN_BACKBONE")
    # coco | imagenet | none | path to a weights file (multitask.pretrained)
    train_init: str = Field(defaults.INIT, validation_alias="TRAIN_INIT")
    # a project's first run (or one whose classes/keypoints changed); the CLI's TrainConfig.steps is longer
    train_steps: Count = Field(300, validation_alias="TRAIN_STEPS")
    # a run that continues from the current version (same classes and keypoints)
    retrain_steps: Count = Field(100, validation_alias="RETRAIN_STEPS")
    # its learning rate; None: a tenth of train_lr (see retrain_learning_rate)
    retrain_lr: Number | None = Field(None, validation_alias="RETRAIN_LR")
    # annotated tasks needed before a share of them is held out for scoring
    holdout_min_tasks: Count = Field(10, validation_alias="HOLDOUT_MIN_TASKS")
    holdout_share: Share = Field(
        0.2, validation_alias="HOLDOUT_SHARE"
    )  # share of tasks held out (by a hash of the task id)
    # torch threads in a training job; 0: every core the worker may use
    train_threads: Count = Field(0, validation_alias="TRAIN_THREADS")
    train_batch_size: Count = Field(defaults.BATCH_SIZE, validation_alias="TRAIN_BATCH_SIZE")
    train_lr: Number = Field(defaults.LEARNING_RATE, validation_alias="TRAIN_LR")
    # smaller than the CLI's (TrainConfig); multitask.defaults says why
    train_min_size: Count = Field(defaults.BACKEND_MIN_SIZE, validation_alias="TRAIN_MIN_SIZE")
    train_max_size: Count = Field(defaults.BACKEND_MAX_SIZE, validation_alias="TRAIN_MAX_SIZE")
    # 0: train on the annotated images only
    train_augment_copies: Count = Field(0, validation_alias="TRAIN_AUGMENT_COPIES")
    # not the CLI's "auto": a worker shares its machine, a GPU is chosen explicitly
    train_device: str = Field("cpu", validation_alias="TRAIN_DEVICE")
    train_seed: Count = Field(defaults.SEED, validation_alias="TRAIN_SEED")
    train_job_timeout: Count = Field(
        3 * 3600, validation_alias="TRAIN_JOB_TIMEOUT"
    )  # seconds an RQ training job may run
    # a running job silent this long is dead (worker killed, Redis lost)
    train_heartbeat_seconds: Count = Field(60, validation_alias="TRAIN_HEARTBEAT_SECONDS")
    # seconds the server waits for Redis to connect / to answer a command before it answers 503: a
    # stopped or overloaded Redis must not hold GET /runs or a webhook for as long as it hangs
    redis_connect_timeout: Number = Field(1.0, validation_alias="REDIS_CONNECT_TIMEOUT")
    redis_timeout: Number = Field(1.0, validation_alias="REDIS_TIMEOUT")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``Settings(...)`` takes the given values only (tests build variants); :meth:`from_env` reads variables."""
        return (init_settings,)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_one_line(exc)) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """From the environment variables (``os.environ`` unless ``env``); an empty variable means its default."""
        return cls(**_MappingSource(cls, os.environ if env is None else env)())

    @field_validator("label_studio_url", "dashboard_url")
    @classmethod
    def _without_trailing_slash(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    @field_validator("train_engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if engine not in ENGINE_NAMES:
            raise SettingsError(f"TRAIN_ENGINE={engine!r} is not an engine; choose one of {list(ENGINE_NAMES)}")
        return engine

    @field_validator("train_backbone")
    @classmethod
    def _engine_backbone(cls, backbone: str, info: ValidationInfo) -> str:
        return backbone or default_backbone(info.data.get("train_engine", DEFAULT_ENGINE))

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Half a Basic Auth configuration used to fail open (no password: any password accepted;
        # no user: auth off). Refuse it here so the server never starts that way.
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            given, missing = ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")
            if not self.basic_auth_user:
                given, missing = missing, given
            raise SettingsError(f"{given} is set but {missing} is not: set both (or neither) for Basic Auth")
        if not 0.0 < self.mask_nms_iou <= 1.0:
            raise SettingsError(
                f"MASK_NMS_IOU={self.mask_nms_iou:g} must be above 0 and at most 1 (1: keep overlapping detections)"
            )
        if self.predict_queue < 1:
            raise SettingsError("PREDICT_QUEUE must be at least 1")
        for name, seconds in (
            ("REDIS_TIMEOUT", self.redis_timeout),
            ("REDIS_CONNECT_TIMEOUT", self.redis_connect_timeout),
            ("REQUEST_TIMEOUT", self.request_timeout),
        ):
            if not seconds > 0:
                raise SettingsError(f"{name} must be a number of seconds above 0")
        if self.max_connections < 1 or self.max_predict_tasks < 1:
            raise SettingsError("MAX_CONNECTIONS and MAX_PREDICT_TASKS must be at least 1")
        return self

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


def _one_line(exc: ValidationError) -> str:
    """The first problem as ``VARIABLE='value' what is wrong``; a check across variables says it in full."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    name = str(error["loc"][0]) if error["loc"] else ""
    if name in Settings.model_fields:  # set by field name (Settings(...)): report the variable anyway
        name = str(Settings.model_fields[name].validation_alias)
    what = str(cause) if cause is not None else error["msg"]
    return f"{name}={error['input']!r} {what}"
