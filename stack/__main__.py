"""``python -m stack up``: Redis, Label Studio with the export plugin, RQ worker(s) and the ML backend.

Everything runs as child processes of this one, with ``[name]``-prefixed output (also in
``<data dir>/logs/<name>.log``). Every child gets this process's environment plus the settings in
``.env`` (:data:`stack.services.ENV_FILE`, or ``--env-file``); a variable set in the environment wins. A child that fails is restarted (:mod:`stack.supervisor`), the
embedded Redis included (same socket, same data); Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

from backend.settings import Settings, SettingsError
from jobqueue.connection import connect, embedded_url, redis_server_command, wait_for_redis
from stack import services
from stack.selfcheck import check_worker
from stack.services import (
    DATA_DIR_ENV,
    ENV_FILE,
    ML_BACKEND_CMD_ENV,
    ML_BACKEND_MODULE,
    ML_BACKEND_PORT,
    ML_BACKEND_URL_ENV,
    REDIS_URL_ENV,
    REPO,
    WORKER_MODULE,
    Credentials,
    read_env_file,
)
from stack.supervisor import Supervisor, fail

EXAMPLE = """examples:
  scripts/stack.sh --demo                      # what README command 1 runs (creates .venv first)
  echo TRAIN_INIT=none >> .env; scripts/stack.sh   # offline: train from random weights (settings: README)
  TRAIN_STEPS=100 python -m stack up           # the environment wins over .env
  python -m stack up --demo                    # Label Studio on :8080, ML backend on :9090, 1 worker
  LSMT_DATA_DIR=/srv/lsmt python -m stack up --port 8081 --workers 2
  REDIS_URL=redis://localhost:6379/0 python -m stack up --no-backend
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stack", description="Run the local stack.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start and supervise every service until Ctrl-C",
        description="Start Redis (embedded unless REDIS_URL is set), Label Studio with the COCO combined export, "
        "RQ worker(s) and the ML backend, and supervise them until Ctrl-C/SIGTERM.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        help=f"state: label-studio/, redis/, models/, logs/ (default: ${DATA_DIR_ENV} or ./data in the repository)",
    )
    up.add_argument("--host", default="127.0.0.1", help="interface Label Studio and the backend listen on")
    up.add_argument("--port", type=int, default=8080, help="Label Studio port (default: 8080)")
    up.add_argument(
        "--backend-port", type=int, default=ML_BACKEND_PORT, help=f"ML backend port (default: {ML_BACKEND_PORT})"
    )
    up.add_argument("--workers", type=int, default=1, help="number of RQ workers (default: 1)")
    up.add_argument(
        "--env-file",
        type=Path,
        help="settings for every service, NAME=value lines such as TRAIN_INIT=none (default: .env in the "
        "repository, if there is one); a variable set in the environment wins",
    )
    up.add_argument(
        "--backend-cmd",
        help=f"command for the ML backend (default: ${ML_BACKEND_CMD_ENV} or "
        f"'python -m {ML_BACKEND_MODULE} --host HOST --port BACKEND_PORT', run only if the module exists)",
    )
    up.add_argument("--no-backend", action="store_true", help="do not start the ML backend")
    up.add_argument(
        "--demo",
        action="store_true",
        help="create a demo project wired to the backend (demo/: 16 scenes, 12 of them labelled)",
    )
    return parser.parse_args(argv)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1" if host == "0.0.0.0" else host, port)) == 0


def _backend_command(args: argparse.Namespace) -> list[str] | None:
    if args.no_backend:
        return None
    if args.backend_cmd or os.environ.get(ML_BACKEND_CMD_ENV):
        return shlex.split(args.backend_cmd or os.environ[ML_BACKEND_CMD_ENV])
    if not services.module_exists(ML_BACKEND_MODULE):
        return None
    return [sys.executable, "-m", ML_BACKEND_MODULE, "--host", args.host, "--port", str(args.backend_port)]


def load_settings(env_file: Path | None) -> str:
    """Add the settings file's variables to this process's environment, which every child inherits
    (a variable already set wins), and check them as the ML backend and the workers will; the line to log."""
    path = env_file or (ENV_FILE if ENV_FILE.exists() else None)
    values: dict[str, str] = {}
    if path is not None:
        try:
            values = read_env_file(path)
        except OSError as exc:
            fail(f"cannot read the settings file {path}: {exc.strerror}")
        except ValueError as exc:
            fail(str(exc))
    kept = sorted(name for name in values if name in os.environ)
    for name, value in values.items():
        os.environ.setdefault(name, value)
    try:
        Settings.from_env()
    except SettingsError as exc:
        fail(f"{exc} (set in {path or 'the environment'}; README: Settings)")
    if path is None:
        return f"settings: the environment only (no {ENV_FILE})"
    line = f"settings from {path}: {', '.join(sorted(values)) or 'none'}"
    return line + (f"; the environment's {', '.join(kept)} kept instead" if kept else "")


def up(args: argparse.Namespace) -> None:
    # Every child inherits this: Label Studio's SQLite file (it holds the admin token), uploads, Redis
    # data, logs and models are created readable by this user only.
    os.umask(0o077)
    settings_line = load_settings(args.env_file)
    data_dir = services.make_private((args.data_dir or Path(os.environ.get(DATA_DIR_ENV, REPO / "data"))).resolve())
    os.environ[DATA_DIR_ENV] = str(data_dir)  # children (jobqueue.connection.data_dir, backend MODEL_DIR) see it
    sup = Supervisor(data_dir / "logs")
    sup.say("stack", settings_line)
    ls_url = f"http://localhost:{args.port}"
    backend_cmd = _backend_command(args)
    for name, port in [("Label Studio", args.port)] + ([("ML backend", args.backend_port)] if backend_cmd else []):
        if _port_in_use(args.host, port):
            fail(f"port {port} for {name} is in use (another stack running?); stop it or choose another port")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    embedded = False
    url_file = data_dir / "redis.url"
    try:
        if os.environ.get(REDIS_URL_ENV):
            redis_url = os.environ[REDIS_URL_ENV]
            conn = connect(redis_url)
        else:
            embedded = True
            redis_dir = data_dir / "redis"
            redis_dir.mkdir(parents=True, exist_ok=True)
            sup.start("redis", redis_server_command(redis_dir), dict(os.environ), REPO)
            redis_url = embedded_url(redis_dir)
            conn = wait_for_redis(redis_url)
            url_file.write_text(redis_url + "\n")  # how CLIs in other terminals find this Redis
        sup.say("redis", f"{'embedded ' if embedded else ''}Redis at {redis_url}")

        creds_file = services.make_private(data_dir / "label-studio") / "credentials.json"
        creds, created = Credentials.load_or_create(creds_file)
        shared_env = {**os.environ, **services.job_env(data_dir, redis_url, ls_url, creds.token)}
        ls_env = {**shared_env, **services.label_studio_env(data_dir / "label-studio", creds)}
        ls = sup.start("label-studio", services.label_studio_command(args.port, args.host), ls_env, REPO)

        for i in range(args.workers):
            name = "worker" if args.workers == 1 else f"worker-{i + 1}"
            sup.start(name, [sys.executable, "-m", WORKER_MODULE], shared_env, REPO)
        if args.workers:
            seconds = check_worker(conn)
            sup.say("stack", f"worker self-check OK: stack.selfcheck.ping answered in {seconds:.1f} s")

        sup.say("stack", "waiting for Label Studio (the first start runs database migrations, ~1-2 min)")
        services.wait_for_http(f"{ls_url}/health", 600, alive=lambda: ls.proc.poll() is None)

        backend_url = os.environ.get(ML_BACKEND_URL_ENV, f"http://localhost:{args.backend_port}")
        if backend_cmd:
            backend = sup.start("ml-backend", backend_cmd, shared_env, REPO)
            services.wait_for_http(f"{backend_url}/health", 300, alive=lambda: backend.proc.poll() is None)
        else:
            sup.say(
                "stack", f"ML backend not started ({'--no-backend' if args.no_backend else 'no backend module yet'})"
            )

        demo_line = ""
        if args.demo:
            demo_line = _demo(creds, ls_url, backend_url if backend_cmd else None)
        login = _login_lines(creds, creds_file, created)
        _banner(sup, ls_url, login, backend_url if backend_cmd else None, redis_url, args.workers, data_dir, demo_line)

        sup.supervise()
    except KeyboardInterrupt:
        sup.say("stack", "shutting down")
    except (RuntimeError, TimeoutError) as exc:
        fail(str(exc))
    finally:
        sup.stop_all()  # Redis last: it was started first
        if embedded:
            url_file.unlink(missing_ok=True)
        sup.say("stack", "stopped")


def _demo(creds: Credentials, ls_url: str, backend_url: str | None) -> str:
    from label_studio_sdk import LabelStudio

    from stack.demo import connect_backend, create_demo_project

    client = LabelStudio(base_url=ls_url, api_key=creds.token)
    project_id = create_demo_project(client, ls_url, creds.token)
    if backend_url:
        connect_backend(client, project_id, backend_url)
    return f"{ls_url}/projects/{project_id}/data" + ("" if backend_url else " (no ML backend connected)")


def _login_lines(creds: Credentials, creds_file: Path, created: bool) -> list[str]:
    """The password and token are printed once, when created; later starts say where they are stored
    (terminal scrollback and captured logs should not collect a fresh copy on every start)."""
    if not created:
        return [f"  log in       {creds.email}   (password and API token: {creds_file}, readable by you only)"]
    return [
        f"  log in       {creds.email} / {creds.password}",
        f"  API token    {creds.token}",
        f"               (shown this once; stored in {creds_file}, readable by you only)",
        "               (legacy token, header 'Authorization: Token ...'; for a Personal Access Token open",
        "               Account & Settings > Personal Access Token; LabelStudio(base_url, api_key=PAT) refreshes it)",
    ]


def _banner(
    sup: Supervisor,
    ls_url: str,
    login: list[str],
    backend_url: str | None,
    redis_url: str,
    workers: int,
    data_dir: Path,
    demo_line: str,
) -> None:
    lines = [
        "-" * 72,
        f"Label Studio   {ls_url}   (Export dialog offers 'COCO combined')",
        *login,
        f"ML backend     {backend_url or 'not running'}",
        f"RQ workers     {workers}" + (", self-check OK" if workers else " (jobs wait for an external worker)"),
        f"Redis          {redis_url}   (other terminals: export {REDIS_URL_ENV}={redis_url})",
    ]
    if demo_line:
        lines.append(f"Demo project   {demo_line}")
    lines += [f"Logs           {data_dir / 'logs'}/*.log        Stop: Ctrl-C", "-" * 72]
    sup.say("stack", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "up":
        up(args)


if __name__ == "__main__":
    main()
