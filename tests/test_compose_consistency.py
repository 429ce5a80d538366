"""docker-compose.yml runs what the local stack runs: same modules, same commands, same variable names.

Docker cannot run in CI here, so the compose file is checked against ``stack.services`` (which the local
runner and the Label Studio test fixture use) instead of being started.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from stack import services
from stack.services import REPO, Credentials

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ("label-studio", "ml-backend", "rq-worker")
POSTGRES_ENV = {"DJANGO_DB", "POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD", "POSTGRE_HOST", "POSTGRE_PORT"}
# The image installs the project, so the checkout on PYTHONPATH the local runner adds is not needed there.
LOCAL_ONLY_ENV = {"PYTHONPATH"}

CREDS = Credentials("a@example.com", "password", "token")
LABEL_STUDIO_ENV = set(services.label_studio_env(Path("/data/label-studio"), CREDS)) - LOCAL_ONLY_ENV
JOB_ENV = set(services.job_env(Path("/data"), "redis://redis:6379/0", "http://label-studio:8080", "t")) - LOCAL_ONLY_ENV
# Containers share no disk: models and augmentation go to the MinIO service (the local runner keeps them in
# its data folder). MODEL_DIR/AUGMENT_DIR are backend.settings variables; the AWS_* ones are boto3's.
OBJECT_STORAGE_ENV = {
    "MODEL_DIR", "AUGMENT_DIR", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
}  # fmt: skip
# Only people open the backend's pages, so only the backend needs to know their address.
BACKEND_ONLY_ENV = {"DASHBOARD_URL"}
ONE_SHOT = {"minio-bucket"}  # runs once and exits: nothing to health-check


def _python_module(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], f"app services run 'python -m <module>', got {command}"
    return command[2]


def test_services_present():
    assert set(SERVICES) == {"postgres", "redis", "minio", *ONE_SHOT, *APP_SERVICES}
    for name, service in SERVICES.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", f"{name} runs once"
        else:
            assert "healthcheck" in service, f"{name} has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_commands_run_modules_that_exist(name: str):
    module = _python_module(SERVICES[name]["command"])
    assert services.module_exists(module), f"{name} runs 'python -m {module}', which does not exist"


def test_healthcheck_modules_exist():
    test = SERVICES["rq-worker"]["healthcheck"]["test"]
    assert services.module_exists(_python_module(test[1:]))


def test_label_studio_command_matches_local_runner():
    local = services.label_studio_command(8080, "0.0.0.0")
    assert local[0] == sys.executable
    assert SERVICES["label-studio"]["command"] == ["python", *local[1:]]


def test_worker_and_backend_commands_match_local_runner():
    assert _python_module(SERVICES["rq-worker"]["command"]) == services.WORKER_MODULE
    backend = SERVICES["ml-backend"]["command"]
    assert _python_module(backend) == services.ML_BACKEND_MODULE
    assert backend[backend.index("--port") + 1] == str(services.ML_BACKEND_PORT)
    # `python -m backend` listens on 127.0.0.1 by default; in a container it must say 0.0.0.0
    assert backend[backend.index("--host") + 1] == "0.0.0.0"


def test_label_studio_env_names_match_local_runner():
    env = SERVICES["label-studio"]["environment"]
    assert set(env) == LABEL_STUDIO_ENV | POSTGRES_ENV
    assert env["DJANGO_SETTINGS_MODULE"] == services.SETTINGS_MODULE
    for flag in ("ML_BLOCK_LOCAL_IP", "SSRF_PROTECTION_ENABLED"):
        assert env[flag] == services.label_studio_env(Path("/x"), CREDS)[flag] == "false"


@pytest.mark.parametrize("name", ["ml-backend", "rq-worker"])
def test_job_env_names_match_local_runner(name: str):
    assert set(SERVICES[name]["environment"]) - BACKEND_ONLY_ENV == JOB_ENV | OBJECT_STORAGE_ENV


def test_dashboard_is_reachable_from_the_host_at_the_address_its_links_name():
    """Label Studio calls http://ml-backend:9090, which a browser on the host cannot open."""
    from backend.settings import Settings

    backend = SERVICES["ml-backend"]
    url = Settings.from_env({"DASHBOARD_URL": _default(backend["environment"]["DASHBOARD_URL"])}).dashboard_url
    port = url.rsplit(":", 1)[1]
    assert url.startswith("http://localhost:") and f"127.0.0.1:{port}:{services.ML_BACKEND_PORT}" in backend["ports"]


def _default(value: str) -> str:
    """The value compose uses when .env does not override it: ``${NAME:-default}`` -> ``default``."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_backend_and_workers_share_models_and_augmentation_through_minio_only():
    """No shared volume: a worker on another machine has the same view as one next to the backend."""
    env = SERVICES["rq-worker"]["environment"]
    backend = SERVICES["ml-backend"]["environment"]
    assert {k: v for k, v in backend.items() if k not in BACKEND_ONLY_ENV} == env
    for name in ("ml-backend", "rq-worker"):
        assert not [v for v in SERVICES[name].get("volumes", []) if v.split(":")[1] in ("/data", "/data/models")]
    minio = SERVICES["minio"]
    bucket_init = " ".join(SERVICES["minio-bucket"]["entrypoint"])
    for variable in ("MODEL_DIR", "AUGMENT_DIR"):
        bucket = env[variable].removeprefix("s3://").split("/")[0]
        assert env[variable].startswith("s3://") and f"mb --ignore-existing local/{bucket}" in bucket_init
    assert _default(env["AWS_ENDPOINT_URL"]) == "http://minio:9000" and "9000:9000" in minio["ports"]
    assert env["AWS_ACCESS_KEY_ID"] == minio["environment"]["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_PASSWORD"]
    for name in ("ml-backend", "rq-worker"):
        assert SERVICES[name]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert "minio" in COMPOSE["volumes"] and "models" not in COMPOSE["volumes"]


def test_the_compose_object_storage_settings_are_valid_backend_settings():
    from backend.settings import Settings

    env = {k: _default(str(v)) for k, v in SERVICES["rq-worker"]["environment"].items()}
    settings = Settings.from_env({k: v for k, v in env.items() if "${" not in v})
    assert settings.model_dir == "s3://lsmt/models" and settings.augment_dir == "s3://lsmt/augment"


def test_rq_worker_is_scalable():
    worker = SERVICES["rq-worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_workers_share_torchs_cache_on_a_volume():
    """Training workers download pretrained weights once into TORCH_HOME; it must outlive containers."""
    dockerfile = (REPO / "Dockerfile").read_text()
    torch_home = re.search(r"^\s*TORCH_HOME=(\S+)", dockerfile, re.M).group(1)
    assert re.search(rf"mkdir -p [^\n]*{re.escape(torch_home)}\b", dockerfile), (
        "the mount point must exist, owned by the app user"
    )
    volume = next(v.split(":")[0] for v in SERVICES["rq-worker"]["volumes"] if v.split(":")[1] == torch_home)
    assert volume in COMPOSE["volumes"]


@pytest.mark.parametrize("name", ["ml-backend", "rq-worker"])
def test_settings_in_dot_env_reach_backend_and_workers(name: str):
    """README, Settings: ``echo TRAIN_INIT=none >> .env`` works for compose as for scripts/stack.sh."""
    local = services.ENV_FILE.relative_to(REPO).as_posix()
    assert SERVICES[name]["env_file"] == [{"path": local, "required": False}]


def test_third_party_images_are_pinned():
    """An unpinned image changes under a deployment at its next pull (MinIO publishes no newer image at all)."""
    for name, service in SERVICES.items():
        if name in APP_SERVICES:
            continue
        tag = service["image"].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {service['image']}"
