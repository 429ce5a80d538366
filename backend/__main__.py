"""``python -m backend``: serve the ML backend (uvicorn) on port 9090."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from backend.app import create_app
from backend.server import server_config
from backend.settings import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Serve the Label Studio ML backend (predictions + training triggers) for multi-task models.",
        epilog=(
            "example: LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=<token> "
            "REDIS_URL=redis://localhost:6379/0 python -m backend --port 9090\n"
            "then run a worker for training: python -m jobqueue.worker --queues train"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default: 127.0.0.1; use 0.0.0.0 for containers, with BASIC_AUTH_* or ML_BACKEND_TOKEN)",
    )
    parser.add_argument("--port", type=int, default=9090, help="port (default: 9090)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.error(str(exc))
    app = create_app(settings)
    uvicorn.Server(server_config(app, settings, args.host, args.port, args.log_level)).run()


if __name__ == "__main__":
    main()
