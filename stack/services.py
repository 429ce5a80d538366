"""The stack's processes and the environment they share, defined once.

The local runner (``python -m stack up``), the integration-test fixture (``tests/integration/conftest.py``)
and ``docker-compose.yml`` start the same commands with the same variable names;
``tests/test_compose_consistency.py`` checks the compose file against this module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# Settings of the stack's processes (TRAIN_INIT=none, TRAIN_STEPS=100, ...): the file docker compose reads too
ENV_FILE = REPO / ".env"
SETTINGS_MODULE = "export_plugin.settings"

# Variable names shared by the runner, the fixture and docker-compose.yml.
DATA_DIR_ENV = "LSMT_DATA_DIR"
REDIS_URL_ENV = "REDIS_URL"
LABEL_STUDIO_URL_ENV = "LABEL_STUDIO_URL"  # where the ML backend reaches Label Studio
LABEL_STUDIO_API_KEY_ENV = "LABEL_STUDIO_API_KEY"  # the token the ML backend uses
ML_BACKEND_URL_ENV = "LSMT_ML_BACKEND_URL"  # where Label Studio reaches the ML backend
ML_BACKEND_CMD_ENV = "LSMT_ML_BACKEND_CMD"
ADMIN_EMAIL_ENV = "LABEL_STUDIO_USERNAME"
ADMIN_PASSWORD_ENV = "LABEL_STUDIO_PASSWORD"
ADMIN_TOKEN_ENV = "LABEL_STUDIO_USER_TOKEN"

WORKER_MODULE = "jobqueue.worker"
ML_BACKEND_MODULE = "backend"
ML_BACKEND_PORT = 9090


@dataclass(frozen=True)
class Credentials:
    """The Label Studio admin: e-mail + password for the browser, ``token`` (legacy API token) for scripts."""

    email: str
    password: str
    token: str

    @classmethod
    def generate(cls, email: str = "admin@example.com") -> Credentials:
        return cls(email=email, password=secrets.token_urlsafe(12), token=secrets.token_hex(20))

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[Credentials, bool]:
        """Env vars win; else the ones saved by an earlier run (Label Studio keeps its users); else new ones.

        They are saved (mode 0600) because ``LABEL_STUDIO_USER_TOKEN`` only takes effect when the user is
        created. Returns ``(credentials, created)``: the stack shows the secrets only when just created.
        """
        created = not path.exists()
        saved = asdict(cls.generate()) if created else json.loads(path.read_text())
        creds = cls(
            email=os.environ.get(ADMIN_EMAIL_ENV, saved["email"]),
            password=os.environ.get(ADMIN_PASSWORD_ENV, saved["password"]),
            token=os.environ.get(ADMIN_TOKEN_ENV, saved["token"]),
        )
        make_private(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(creds), indent=2))
        path.chmod(0o600)  # a file from an older version may have been created 0644
        return creds, created


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a ``.env`` file, in the syntax docker compose reads: blank lines and
    ``#`` comments are skipped (also after an unquoted value, from `` #`` on), ``export NAME=value`` is
    accepted, and a value in matching quotes loses them.

    A line that is not an assignment raises :class:`ValueError` naming the file and line (a typo must not
    silently leave a setting at its default).
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"{path}, line {number}: expected NAME=value, got {raw.strip()[:80]!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:  # an unquoted value ends where a comment starts
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values


def make_private(folder: Path) -> Path:
    """Create ``folder`` if needed and make it 0700: the stack's data holds the Label Studio database
    (with the admin's API token), the saved credentials, uploads and models. Also fixes older installs."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def _pythonpath() -> str:
    """The repository first, so children run this checkout even when the project is not pip-installed."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


def job_env(data_dir: Path, redis_url: str, label_studio_url: str, api_key: str) -> dict[str, str]:
    """Environment shared by the RQ workers and the ML backend (training jobs run on the workers)."""
    return {
        "PYTHONPATH": _pythonpath(),
        DATA_DIR_ENV: str(data_dir),
        REDIS_URL_ENV: redis_url,
        LABEL_STUDIO_URL_ENV: label_studio_url,
        LABEL_STUDIO_API_KEY_ENV: api_key,
    }


def label_studio_command(port: int, bind: str = "127.0.0.1") -> list[str]:
    """``label-studio start`` through the module, so it runs with this interpreter (the project's venv)."""
    return [
        sys.executable, "-m", "label_studio.server", "start",
        "--no-browser", "--port", str(port), "--internal-host", bind,
    ]  # fmt: skip


def label_studio_env(data_dir: Path, creds: Credentials) -> dict[str, str]:
    """Environment for a Label Studio process with the export plugin, SQLite in ``data_dir``."""
    return {
        # label_studio/server.py only *defaults* this variable, so the plugin's settings module wins.
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "PYTHONPATH": _pythonpath(),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        ADMIN_EMAIL_ENV: creds.email,
        ADMIN_PASSWORD_ENV: creds.password,
        ADMIN_TOKEN_ENV: creds.token,
        # New organisations get legacy tokens switched off; the stack and the tests use one static token
        # (created with the admin above). The SDK's LabelStudio client also takes Personal Access Tokens.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        # RISK: these two let Label Studio call any address, including localhost and the private network.
        # Needed because the ML backend runs on this machine (localhost:9090) or in the compose network;
        # do not expose such a Label Studio to untrusted users (they could make it request internal URLs).
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        # No calls home: a local stack and the tests must work offline.
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }


def module_exists(name: str) -> bool:
    """Whether ``python -m name`` can run from the repository (e.g. the ML backend before it lands)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        return False
    if spec is None:
        return False
    is_package = spec.submodule_search_locations is not None
    return not is_package or importlib.util.find_spec(f"{name}.__main__") is not None


def wait_for_http(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url`` until it answers 200; ``alive()`` returning False (process died) stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process serving {url} exited before it answered")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:  # not listening yet, or too slow to answer
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
