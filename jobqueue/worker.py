"""``python -m jobqueue.worker``: an RQ worker on this project's queues, connected like every other piece."""

from __future__ import annotations

import argparse
import importlib
import logging

from rq import Queue, Worker

from jobqueue.connection import QUEUES, connect

# Job modules imported once in the worker before it forks a process per job, so each job skips
# their import time (albumentations alone takes seconds).
PRELOAD = {"augment": "augmentation.jobs"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run an RQ worker for augmentation and training jobs.",
        epilog="example: REDIS_URL=redis://localhost:6379/0 python -m jobqueue.worker --queues augment,train",
    )
    parser.add_argument("--queues", default=",".join(QUEUES), help="comma-separated queue names, in priority order")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--name", default=None, help="worker name (default: RQ's host.pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conn = connect()
    names = [q for q in args.queues.split(",") if q]
    for module in (PRELOAD[q] for q in names if q in PRELOAD):
        try:
            importlib.import_module(module)
        except ImportError as exc:  # that extra is not installed here; its jobs will fail with the reason
            logging.warning("not preloading %s: %s", module, exc)
    queues = [Queue(q, connection=conn) for q in names]
    Worker(queues, connection=conn, name=args.name).work(burst=args.burst, with_scheduler=False)


if __name__ == "__main__":
    main()
