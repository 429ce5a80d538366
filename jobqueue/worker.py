"""``python -m jobqueue.worker``: an RQ worker on this project's queues, connected like every other piece."""

from __future__ import annotations

import argparse
import logging

from rq import Queue, Worker

from jobqueue.connection import QUEUES, connect


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
    queues = [Queue(q, connection=conn) for q in args.queues.split(",") if q]
    Worker(queues, connection=conn, name=args.name).work(burst=args.burst, with_scheduler=False)


if __name__ == "__main__":
    main()
