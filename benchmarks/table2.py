"""Paper Table II on this machine: one multi-task network vs separate mask and keypoint networks.

Per image at 1280x720 (no resizing: min_size=720, max_size=1280), every model on the same backbone,
random init (speed does not depend on the weights), and the same number of detections for all
(``box_score_thresh=0``, ``detections_per_img`` fixed), so the heads do the same work:

- faster     Faster R-CNN (box head only)
- mask       Mask R-CNN
- keypoint   Keypoint R-CNN
- multitask  the multi-task model (box + mask + keypoint heads, one backbone, one RPN)
- pair_seq   Mask R-CNN then Keypoint R-CNN on each image, one process
- pair_par   Mask R-CNN and Keypoint R-CNN as two processes running at the same time (latency: the
             slower of the two, both started together; memory: the sum of both peaks)

Each configuration runs in a fresh spawned process that reports its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), so measurements do not contaminate each other;
"model RSS" subtracts the RSS the process had after importing torch, before building models.
Latency: median and minimum over the timed images; ratios use the minimum, the least disturbed by
other work on a shared machine (check the load average: the median shows the disturbance).

``--engines torchvision detectron2`` adds the multi-task R50-FPN model of each training engine
(``multitask.engines``) side by side: a random-init checkpoint of each, loaded by the engine's own
predictor and timed through the same ``Predictor.predict`` call on the same image, with the same forced
detection count (score threshold 0, ``max_detections``), each in a fresh process. This path includes
what the backend pays per image (mask pasting, polygons), so it is slower than the bare-model rows above.

Example:
  .venv/bin/python benchmarks/table2.py                       # light backbone, ~2-4 min on 2 cores
  .venv/bin/python benchmarks/table2.py --backbone resnet50_fpn --iters 1 --warmup 1
  .venv/bin/python benchmarks/table2.py --configs --engines torchvision detectron2 --iters 1 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Heads each configuration's model(s) carry: (with_masks, with_keypoints) per model.
CONFIGS: dict[str, list[tuple[bool, bool]]] = {
    "faster": [(False, False)],
    "mask": [(True, False)],
    "keypoint": [(False, True)],
    "multitask": [(True, True)],
    "pair_seq": [(True, False), (False, True)],
}
PARALLEL = "pair_par"


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _child(heads: list[tuple[bool, bool]], args: dict, barrier, results) -> None:
    """Build the model(s), warm up, time ``iters`` images; put latency and memory on ``results``."""
    import torch

    from combined_coco.schema import Category, Schema
    from multitask.model import ModelConfig, build_model

    baseline = _rss_now_mib()
    names = tuple(f"kp{i}" for i in range(args["keypoints"]))
    schema = Schema(tuple(Category(i + 1, f"class{i + 1}", names) for i in range(args["classes"])), names)
    config = ModelConfig.for_schema(
        schema,
        backbone=args["backbone"],
        min_size=args["height"],
        max_size=args["width"],
        detections_per_img=args["detections"],
        box_score_thresh=0.0,
    )
    torch.manual_seed(0)
    models = [build_model(config, with_masks=m, with_keypoints=k).eval() for m, k in heads]
    image = [torch.rand(3, args["height"], args["width"], generator=torch.Generator().manual_seed(1))]
    detections, times = [], []
    with torch.inference_mode():
        for _ in range(args["warmup"]):
            for model in models:
                model(image)
        if barrier is not None:
            barrier.wait()
        for _ in range(args["iters"]):
            start = time.perf_counter()
            for model in models:
                detections.append(len(model(image)[0]["boxes"]))
            times.append(time.perf_counter() - start)
    _put_measurement(results, times, detections, baseline)


def _engine_child(engine_name: str, args: dict, results) -> None:
    """The engine's multi-task R50-FPN predictor on one image: latency and memory on ``results``."""
    import tempfile

    import numpy as np

    from combined_coco.schema import Category, Schema
    from multitask import engines

    engine = engines.get(engine_name)
    baseline = _rss_now_mib()
    names = tuple(f"kp{i}" for i in range(args["keypoints"]))
    schema = Schema(tuple(Category(i + 1, f"class{i + 1}", names) for i in range(args["classes"])), names)
    with tempfile.TemporaryDirectory() as tmp:
        path = engine.random_checkpoint(schema, Path(tmp) / "model.pt", "resnet50_fpn", args["height"], args["width"])
        predictor = engine.load_predictor(path, score_threshold=0.0, max_detections=args["detections"])
    rng = np.random.default_rng(1)
    image = [rng.integers(0, 256, (args["height"], args["width"], 3), dtype=np.uint8)]
    detections, times = [], []
    for _ in range(args["warmup"]):
        predictor.predict(image)
    for _ in range(args["iters"]):
        start = time.perf_counter()
        detections.append(len(predictor.predict(image)[0]))
        times.append(time.perf_counter() - start)
    _put_measurement(results, times, detections, baseline)


def _put_measurement(results, times: list[float], detections: list[int], baseline: float) -> None:
    """One child's latency, peak memory (ru_maxrss is KiB on Linux) and detection counts, on ``results``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put(
        {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "peak_rss_mib": peak,
            "model_rss_mib": peak - baseline,
            "detections": sorted(set(detections)),
        }
    )


def measure_engine(engine_name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_engine_child, args=(engine_name, args, results))
    proc.start()
    row = results.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"engine {engine_name}: benchmark process failed with exit code {proc.exitcode}")
    return row


def measure(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter per configuration
    results = ctx.Queue()
    if name == PARALLEL:
        barrier = ctx.Barrier(2)
        procs = [
            ctx.Process(target=_child, args=(h, args, barrier, results)) for h in ([(True, False)], [(False, True)])
        ]
    else:
        procs = [ctx.Process(target=_child, args=(CONFIGS[name], args, None, results))]
    for p in procs:
        p.start()
    parts = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{name}: benchmark process failed with exit code {p.exitcode}")
    return {
        "median_s": max(r["median_s"] for r in parts),
        "min_s": max(r["min_s"] for r in parts),
        "peak_rss_mib": sum(r["peak_rss_mib"] for r in parts),
        "model_rss_mib": sum(r["model_rss_mib"] for r in parts),
        "detections": sorted({d for r in parts for d in r["detections"]}),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--backbone", default="mobilenet_v3_large_fpn", choices=["mobilenet_v3_large_fpn", "resnet50_fpn"]
    )
    parser.add_argument("--iters", type=int, default=5, help="timed images per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--detections", type=int, default=20, help="detections per image, forced for every model")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--keypoints", type=int, default=8)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--configs", nargs="*", default=[*CONFIGS, PARALLEL], choices=[*CONFIGS, PARALLEL])
    parser.add_argument(
        "--engines",
        nargs="*",
        default=[],
        choices=["torchvision", "detectron2"],
        help="also time each engine's multi-task R50-FPN predictor (side by side)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the numbers as JSON")
    ns = parser.parse_args(argv)
    args = vars(ns)
    print(
        f"Table II, {ns.backbone if ns.configs else 'engines'}, {ns.width}x{ns.height}, {ns.detections} detections/image, "
        f"{ns.iters} timed iterations after {ns.warmup} warm-up, {mp.cpu_count()} CPU cores"
    )
    rows: dict[str, dict] = {}
    if ns.configs:
        print(f"{'model':<10} {'median s':>9} {'min s':>7} {'peak RSS MiB':>13} {'model RSS MiB':>14}  detections")
    for name in ns.configs:
        rows[name] = measure(name, args)
        r = rows[name]
        print(
            f"{name:<10} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['peak_rss_mib']:>13.0f}"
            f" {r['model_rss_mib']:>14.0f}  {r['detections']}"
        )
    ratios = {}
    if "multitask" in rows:
        mt = rows["multitask"]
        for pair in ("pair_seq", PARALLEL):
            if pair in rows:
                ratios[pair] = {
                    "speedup": rows[pair]["min_s"] / mt["min_s"],
                    "peak_rss_ratio": mt["peak_rss_mib"] / rows[pair]["peak_rss_mib"],
                    "model_rss_ratio": mt["model_rss_mib"] / rows[pair]["model_rss_mib"],
                }
                r = ratios[pair]
                print(
                    f"multitask vs {pair}: {r['speedup']:.2f}x faster (target >= 1.8x), peak RSS x{r['peak_rss_ratio']:.2f},"
                    f" model RSS x{r['model_rss_ratio']:.2f} (target <= 0.75x)"
                )
        if ns.backbone == "mobilenet_v3_large_fpn":
            verdict = "meets" if mt["min_s"] <= 1.0 else "misses"
            print(
                f"light backbone, multi-task model: {mt['min_s']:.2f} s/image (min; median {mt['median_s']:.2f})"
                f" at {ns.width}x{ns.height} ({verdict} the <= 1 s target)"
            )
    engine_rows: dict[str, dict] = {}
    if ns.engines:
        print(f"multi-task R50-FPN per engine, through Predictor.predict ({ns.detections} detections forced):")
        print(f"{'engine':<12} {'median s':>9} {'min s':>7} {'peak RSS MiB':>13} {'model RSS MiB':>14}  detections")
    for name in ns.engines:
        engine_rows[name] = r = measure_engine(name, args)
        print(
            f"{name:<12} {r['median_s']:>9.3f} {r['min_s']:>7.3f} {r['peak_rss_mib']:>13.0f}"
            f" {r['model_rss_mib']:>14.0f}  {r['detections']}"
        )
    out = {"settings": args | {"json_out": None}, "rows": rows, "ratios": ratios, "engines": engine_rows}
    if ns.json_out:
        ns.json_out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
