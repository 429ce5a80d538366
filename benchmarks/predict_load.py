"""Load check for the ML backend: N concurrent /predict requests against a real ``python -m backend``.

The backend runs as its own uvicorn process with a real ``multitask`` checkpoint, published through
the model store, and fetches each task's image from a real HTTP server standing in for Label Studio's
/data/upload/. Reports errors and latency p50/p95; exits 1 if any request failed.

The figures must include building the regions (mask -> polygon, keypoints, JSON), so every answer
has to carry regions: a response without any counts as a failure. A trained checkpoint
(``--checkpoint``) returns real objects; without one, a random init of the light model with the
generic.xml schema is run with detections forced (``SCORE_THRESHOLD=0`` and
``MAX_OBJECTS_PER_IMAGE=--forced-detections``), as benchmarks/table2.py forces them, so the heads and
the region building do the work of that many objects.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.model_store import ModelStore  # noqa: E402
from tests.support.backend import GENERIC_CONFIG, MediaServer, random_checkpoint, start_backend, synthetic_image  # noqa: E402

TOKEN = "bench-token"
PROJECT = 1


async def fire(url: str, requests: int, concurrency: int, image_url: str) -> tuple[list[float], list[str], list[int]]:
    payload = {
        "tasks": [{"id": 1, "project": PROJECT, "data": {"image": image_url}}],
        "project": f"{PROJECT}.1700000000",
        "label_config": GENERIC_CONFIG.read_text(),
        "params": {"login": None, "password": None, "context": None},
    }
    latencies: list[float] = []
    errors: list[str] = []
    regions: list[int] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    response = await client.post(f"{url}/predict", json=payload)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                latencies.append(time.perf_counter() - started)
                body = response.json()
                results = body.get("results") or [{}]
                if response.status_code != 200 or "error" in results[0] or body.get("model_version") == "untrained":
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                elif not results[0].get("result"):
                    errors.append("no regions returned: the timing would leave out region building")
                else:
                    regions.append(len(results[0]["result"]))

        await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, errors, regions


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="example: .venv/bin/python benchmarks/predict_load.py --requests 50 --concurrency 50",
    )
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight at once")
    parser.add_argument("--image-size", default="640x480", help="WxH of the task image (default 640x480)")
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained checkpoint with the generic.xml schema (returns objects)"
    )
    parser.add_argument("--score-threshold", type=float, default=0.5, help="backend SCORE_THRESHOLD with --checkpoint")
    parser.add_argument("--max-objects", type=int, default=50, help="backend MAX_OBJECTS_PER_IMAGE with --checkpoint")
    parser.add_argument(
        "--forced-detections",
        type=int,
        default=10,
        help="without --checkpoint: objects per image forced out of the random-init model",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.image_size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="predict-load-") as tmp:
        root = Path(tmp)
        store = ModelStore(root / "models")
        checkpoint = args.checkpoint or random_checkpoint(root / "random.pt", args.seed)
        score_threshold, max_objects = (
            (args.score_threshold, args.max_objects) if args.checkpoint else (0.0, args.forced_detections)
        )
        version = store.publish(PROJECT, checkpoint, {"note": "load check"})
        png, _ = synthetic_image(args.seed, width, height)
        media = MediaServer(TOKEN, {"/data/upload/1/bench.png": png})
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "LABEL_STUDIO_URL": media.url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            "MODEL_DIR": str(store.root),
            "SCORE_THRESHOLD": str(score_threshold),
            "MAX_OBJECTS_PER_IMAGE": str(max_objects),
            "PREDICT_QUEUE": str(max(args.concurrency, 1)),  # measure queueing, not the 503s past the default
        }
        url, backend = start_backend(env, root / "backend.log")
        try:
            warm = asyncio.run(fire(url, 1, 1, "/data/upload/1/bench.png"))  # loads the model once
            if warm[1]:
                print(f"warm-up request failed: {warm[1][0]}\n{backend.log_tail()}")
                return 1
            started = time.perf_counter()
            latencies, errors, regions = asyncio.run(
                fire(url, args.requests, args.concurrency, "/data/upload/1/bench.png")
            )
            wall = time.perf_counter() - started
        finally:
            backend.stop()
            media.stop()

    model = args.checkpoint or f"random init, light backbone, {args.forced_detections} detections forced"
    print(
        f"model {version} ({model}), image {width}x{height}, {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.requests} requests, {args.concurrency} concurrent: {len(errors)} errors, wall {wall:.1f} s, "
        f"{args.requests / wall:.2f} req/s"
    )
    if latencies:
        print(
            f"latency p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
            f"max {max(latencies):.2f} s; regions per task: {statistics.mean(regions) if regions else 0:.1f}"
        )
    for error in errors[:5]:
        print("error:", error)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
