"""Command line: submit / status / wait / resubmit runs on RQ workers, run-locally in-process, split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rq import Queue, Worker
from tqdm import tqdm

from augmentation import jobs
from augmentation.dataset_augment import AugmentationFailed, augment_dataset
from augmentation.pipelines import PipelineError, preset_names
from augmentation.split import split_file
from jobqueue.connection import RedisUnavailable, connect

EPILOG = """examples:
  # 4 copies per image with the medium preset, sharded over every RQ worker, then follow it
  python -m augmentation submit export.json images/ out/ --pipeline medium --copies 4 --wait
  python -m augmentation status 3f2a9c1e0b7d
  python -m augmentation wait 3f2a9c1e0b7d --timeout 3600
  # a worker died: re-run its shards (same seeds, same bytes) and wait
  python -m augmentation resubmit 3f2a9c1e0b7d --wait
  # no Redis needed: everything in this process
  python -m augmentation run-locally export.json images/ out/ --pipeline my_pipeline.yaml
  # keep all copies of one photo on the same side
  python -m augmentation split out/annotations.json --val 0.2

Redis: REDIS_URL, else the local stack's embedded server. Workers: python -m jobqueue.worker --queues augment
Pipelines: a preset ({presets}) or a YAML file in Albumentations' own format (A.to_dict)."""


def _add_dataset_args(p: argparse.ArgumentParser, default_pipeline: str) -> None:
    p.add_argument("coco", type=Path, help="combined COCO json")
    p.add_argument("image_root", type=Path, help="folder the json's file_name entries are relative to")
    p.add_argument("out_dir", type=Path, help="output folder: annotations.json and images/")
    p.add_argument(
        "--pipeline", default=default_pipeline, help=f"preset name or YAML file (default {default_pipeline})"
    )
    p.add_argument("--copies", type=int, default=4, help="augmented copies per image (default 4)")
    p.add_argument("--seed", type=int, default=0, help="run seed; same seed, same output bytes (default 0)")
    p.add_argument("--no-originals", action="store_true", help="do not copy the original images into the output")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m augmentation",
        description="Augment a combined COCO dataset with exact polygons, masks and keypoints.",
        epilog=EPILOG.format(presets=", ".join(preset_names())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "submit",
        help="split into shards and enqueue them on RQ queue 'augment'",
        epilog="example: python -m augmentation submit export.json images/ out/ --copies 8 --wait",
    )
    _add_dataset_args(p, "medium")
    p.add_argument("--shard-size", type=int, default=50, help="source images per RQ job (default 50)")
    p.add_argument("--wait", action="store_true", help="show a progress bar until the run ends")
    p = sub.add_parser(
        "status",
        help="state, progress and failures of a run",
        epilog="example: python -m augmentation status 3f2a9c1e0b7d --json",
    )
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="print the full status as JSON")
    p = sub.add_parser(
        "wait",
        help="progress bar until a run is finished or failed",
        epilog="example: python -m augmentation wait 3f2a9c1e0b7d --timeout 600",
    )
    p.add_argument("run_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p = sub.add_parser(
        "resubmit",
        help="re-run failed or abandoned shards of a run",
        epilog="example: python -m augmentation resubmit 3f2a9c1e0b7d --wait",
    )
    p.add_argument("run_id")
    p.add_argument("--force", action="store_true", help="re-run every unfinished shard, even ones still running")
    p.add_argument("--wait", action="store_true", help="show a progress bar until the run ends")
    p = sub.add_parser(
        "run-locally",
        help="augment in this process (no Redis, no workers)",
        epilog="example: python -m augmentation run-locally export.json images/ out/ --pipeline light",
    )
    _add_dataset_args(p, "light")
    p = sub.add_parser(
        "split",
        help="train/val split keeping all copies of a source image together",
        epilog="example: python -m augmentation split out/annotations.json --val 0.2",
    )
    p.add_argument("coco", type=Path)
    p.add_argument("--val", type=float, default=0.2, help="fraction of source images for validation (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _print_status(status: dict[str, Any]) -> None:
    print(f"run {status['run_id']}: {status['state']}, {status['done']}/{status['total']} images")
    for f in status["failures"]:
        print(f"  image {f['image_id']}: {f['error']}")
    for s in status["shards"]:
        if s["state"] not in ("finished", "queued", "running"):
            print(f"  shard {s['index']} (images {s['images'][0]}..{s['images'][1] - 1}): {s['state']}")
    if status["result"]:
        print(f"  result: {status['result']}")
    elif status["state"] == "failed":
        print(f"  fix the cause, then: python -m augmentation resubmit {status['run_id']}")


def _wait(conn: Any, run_id: str, timeout: float | None) -> int:
    if Worker.count(queue=Queue(jobs.QUEUE, connection=conn)) == 0:
        print(
            f"note: no RQ worker listens on queue {jobs.QUEUE!r} yet; start one with"
            f" python -m jobqueue.worker --queues {jobs.QUEUE}",
            file=sys.stderr,
        )
    bar = tqdm(total=jobs.run_status(conn, run_id)["total"], unit="img", desc=f"augment {run_id}")

    def update(status: dict[str, Any]) -> None:
        bar.n = status["done"]
        bar.refresh()

    status = jobs.wait(conn, run_id, timeout, on_status=update)
    bar.close()
    _print_status(status)
    return 0 if status["state"] == "finished" else 1


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        sys.exit(_run(args))
    except (PipelineError, RedisUnavailable, KeyError, FileNotFoundError, TimeoutError) as exc:
        sys.exit(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}")
    except AugmentationFailed as exc:
        sys.exit(
            "\n".join(["error: some images failed:"] + [f"  image {f['image_id']}: {f['error']}" for f in exc.failures])
        )


def _run(args: argparse.Namespace) -> int:
    if args.command == "run-locally":
        out = augment_dataset(
            args.coco,
            args.image_root,
            args.out_dir,
            pipeline=args.pipeline,
            copies=args.copies,
            seed=args.seed,
            keep_originals=not args.no_originals,
            progress=True,
        )
        print(out)
        return 0
    if args.command == "split":
        for path in split_file(args.coco, args.val, args.seed):
            print(path)
        return 0
    conn = connect()
    if args.command == "submit":
        run_id = jobs.submit_run(
            conn,
            args.coco,
            args.image_root,
            args.out_dir,
            pipeline=args.pipeline,
            copies=args.copies,
            seed=args.seed,
            shard_size=args.shard_size,
            keep_originals=not args.no_originals,
        )
        print(run_id)
        return _wait(conn, run_id, None) if args.wait else 0
    if args.command == "status":
        status = jobs.run_status(conn, args.run_id)
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            _print_status(status)
        return 0
    if args.command == "wait":
        return _wait(conn, args.run_id, args.timeout)
    redo = jobs.resubmit(conn, args.run_id, force=args.force)
    print(f"re-running shards {redo}" if redo else "nothing to re-run")
    return _wait(conn, args.run_id, None) if args.wait else 0
