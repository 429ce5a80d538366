"""Augmentation speed and fidelity, ours against the paper's method, in one run (not a timed test).

    .venv/bin/python benchmarks/augment_speed.py [--images 12] [--copies 3] [--scaling-images 32]

1. Throughput on one core (CPU affinity 1, OpenCV 1 thread) for the medium preset at 1280x720:
   Albumentations transforming the image alone, ours (image + exact geometry), and the paper's
   method (polygon vertices and keypoints through KeypointParams, default remove_invisible=True).
2. Fidelity of both against measured truth (tests/augmentation/truth.py: the matrix the pixels
   underwent, fitted from a warped coordinate image): mask IoU (lost instances count as 0), lost
   instances, keypoint accuracy (within 1 px under the right name), left/right accuracy (pair
   keypoints in mirrored samples).
3. Throughput with 1 vs 2 real RQ worker processes (python -m jobqueue.worker) on an embedded Redis.
   With ``--object-storage`` only this part, with workers that share no disk: each its own
   ``LSMT_DATA_DIR``, the dataset, images and output on an S3 server (moto's, over HTTP) as ``s3://`` URLs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import albumentations as A
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from augmentation import jobs  # noqa: E402
from augmentation.albumentations_steps import augment_sample  # noqa: E402
from augmentation.dataset_augment import instance_from_annotation  # noqa: E402
from augmentation.geometry_transform import Limits, map_points  # noqa: E402
from augmentation.pipelines import build_pipeline, read_pipeline  # noqa: E402
from combined_coco.geometry import clean_polygons, polygons_area  # noqa: E402
from combined_coco.schema import Schema  # noqa: E402
from jobqueue.connection import EmbeddedRedis, connect  # noqa: E402
from multitask.synthetic import write_parts_dataset  # noqa: E402
from tests.augmentation.truth import iou, measured_matrix, rasterize  # noqa: E402


def load(coco_path: Path) -> tuple[dict, list[tuple[np.ndarray, list[dict]]]]:
    coco = json.loads(coco_path.read_text())
    items = []
    for im in coco["images"]:
        bgr = cv2.imread(str(coco_path.parent / "images" / im["file_name"]))
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {im['file_name']} of {coco_path}")
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        items.append((image, [a for a in coco["annotations"] if a["image_id"] == im["id"]]))
    return coco, items


class PaperMethod:
    """Polygon vertices and keypoints as Albumentations keypoints (default remove_invisible=True);
    a polygon keeps the vertices that survived; keypoints swap names only after a HorizontalFlip."""

    def __init__(self, pipeline: dict, flip_perm: list[int]) -> None:
        self.compose = A.from_dict(pipeline)
        self.compose = A.Compose(
            self.compose.transforms,
            keypoint_params=A.KeypointParams(format="xy", label_fields=["owner"]),
            save_applied_params=True,
        )
        self.flip_perm = flip_perm

    def __call__(self, image: np.ndarray, anns: list[dict], seed: int) -> tuple[np.ndarray, list[dict | None]]:
        points, owner = [], []
        for i, ann in enumerate(anns):
            if isinstance(ann["segmentation"], list):
                for j, poly in enumerate(ann["segmentation"]):
                    points += [tuple(p) for p in np.reshape(poly, (-1, 2))]
                    owner += [("v", i, j)] * (len(poly) // 2)
            for k, (x, y, v) in enumerate(np.reshape(ann["keypoints"], (-1, 3))):
                if v > 0:
                    points.append((x, y))
                    owner.append(("k", i, k))
        # Albumentations rejects x == W, where polygons touching the right border have vertices.
        h, w = image.shape[:2]
        xy = np.minimum(np.asarray(points, dtype=np.float64).reshape(-1, 2), [w - 1e-3, h - 1e-3])
        self.compose.set_random_seed(seed)
        out = self.compose(image=image, keypoints=xy, owner=list(range(len(owner))))
        hflip = any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
        polys: dict[int, dict[int, list[float]]] = {}
        kps = {i: np.zeros((len(self.flip_perm), 3)) for i in range(len(anns))}
        for (x, y), index in zip(out["keypoints"], out["owner"]):
            kind, i, j = owner[int(index)]
            if kind == "v":
                polys.setdefault(i, {}).setdefault(j, []).extend([float(x), float(y)])
            else:
                kps[i][j] = (x, y, 2)
        results: list[dict | None] = []
        for i, ann in enumerate(anns):
            if not isinstance(ann["segmentation"], list):
                results.append(None)
                continue
            parts = [p for p in polys.get(i, {}).values() if len(p) >= 6]
            ann_kps = kps[i][self.flip_perm] if hflip else kps[i]
            results.append({"segmentation": parts, "keypoints": ann_kps} if parts else None)
        return out["image"], results


def time_per_image(fn, items, copies: int) -> float:
    """CPU seconds of this process per augmented image: one thread, so CPU time is the one-core
    cost, and it does not count the time other processes on a shared machine take."""
    start = time.process_time()
    for n, (image, anns) in enumerate(items):
        for c in range(copies):
            fn(image, anns, 1000 * n + c)
    return (time.process_time() - start) / (len(items) * copies)


def speed(pipeline: dict, coco: dict, items, copies: int, repeats: int) -> dict[str, float]:
    image_only = A.from_dict(pipeline)
    ours = build_pipeline(pipeline)
    flip_indices = Schema.from_coco_categories(coco["categories"]).flip_indices
    paper = PaperMethod(pipeline, flip_indices)
    prepared = [(image, [instance_from_annotation(a, flip_indices) for a in anns]) for image, anns in items]

    def run_image_only(image, anns, seed):
        image_only.set_random_seed(seed)
        image_only(image=image)

    polygon_items = [(image, [a for a in anns if isinstance(a["segmentation"], list)]) for image, anns in items]
    polygon_prepared = [
        (image, [instance_from_annotation(a, flip_indices) for a in anns]) for image, anns in polygon_items
    ]
    methods = {
        "image only": (run_image_only, items),
        "ours (polygons + RLE masks)": (lambda i, a, s: augment_sample(ours, i, a, s), prepared),
        "ours (polygons only)": (lambda i, a, s: augment_sample(ours, i, a, s), polygon_prepared),
        "paper (vertices as keypoints)": (paper, polygon_items),
    }
    best = {name: float("inf") for name in methods}
    for _ in range(repeats):  # interleaved, best of: other processes share these cores
        for name, (fn, data) in methods.items():
            best[name] = min(best[name], time_per_image(fn, data, copies))
    return best


def fidelity(pipeline: dict, coco: dict, items, copies: int) -> dict[str, dict[str, float]]:
    ours = build_pipeline(pipeline)
    perm = Schema.from_coco_categories(coco["categories"]).flip_indices
    paper = PaperMethod(pipeline, perm)
    limits = Limits()
    stats: dict[str, dict[str, Any]] = {
        name: {"iou": [], "lost": 0, "kp_ok": 0, "kp_n": 0, "lr_ok": 0, "lr_n": 0} for name in ("ours", "paper")
    }
    pair_idx = [i for i, j in enumerate(perm) if i != j]
    for n, (image, anns) in enumerate(items):
        anns = [a for a in anns if isinstance(a["segmentation"], list)]
        instances = [instance_from_annotation(a, perm) for a in anns]
        for c in range(copies):
            seed = 1000 * n + c
            truth = measured_matrix(pipeline, seed, image)
            mirrored = np.linalg.det(truth) < 0
            sample = augment_sample(ours, image, instances, seed, limits)
            oh, ow = sample.image.shape[:2]
            _, paper_out = paper(image, anns, seed)
            outputs: dict[str, list[dict[str, Any] | None]] = {
                "ours": [
                    None
                    if t is None
                    else {"segmentation": t.segmentation, "keypoints": np.reshape(t.keypoints, (-1, 3))}
                    for t in sample.instances
                ],
                "paper": paper_out,
            }
            for i, ann in enumerate(anns):
                mapped = [map_points(truth, np.reshape(p, (-1, 2))).ravel().tolist() for p in ann["segmentation"]]
                visible = clean_polygons(mapped, ow, oh, limits.min_part_area).polygons
                area = polygons_area(visible) if visible else 0.0
                should_exist = area >= 4 * limits.min_area and area >= 2 * limits.min_visible * polygons_area(mapped)
                src_kps = np.reshape(ann["keypoints"], (-1, 3))
                truth_kps = map_points(truth, src_kps[:, :2])
                for name, outs in outputs.items():
                    s, out = stats[name], outs[i]
                    if should_exist:
                        if out is None:
                            s["lost"] += 1
                            s["iou"].append(0.0)
                        else:
                            clipped = clean_polygons(out["segmentation"], ow, oh, 0.0).polygons
                            s["iou"].append(iou(rasterize(clipped, oh, ow), rasterize(visible, oh, ow)))
                    got = out["keypoints"] if out is not None else np.zeros_like(src_kps)
                    for k, (_x, _y, v) in enumerate(src_kps):
                        tx, ty = truth_kps[k]
                        if v == 0 or not (0 <= tx < ow and 0 <= ty < oh):
                            continue
                        name_k = perm[k] if mirrored else k  # after a mirror, "left" is the old "right"
                        ok = got[name_k, 2] > 0 and np.hypot(got[name_k, 0] - tx, got[name_k, 1] - ty) <= 1.0
                        s["kp_ok"] += ok
                        s["kp_n"] += 1
                        if mirrored and k in pair_idx:
                            s["lr_ok"] += ok
                            s["lr_n"] += 1
    return {
        name: {
            "mean IoU": float(np.mean(s["iou"])),
            "p5 IoU": float(np.percentile(s["iou"], 5)),
            "instances": len(s["iou"]),
            "lost": s["lost"],
            "keypoints within 1 px": s["kp_ok"] / s["kp_n"] if s["kp_n"] else float("nan"),
            f"left/right correct (of {s['lr_n']} in mirrored samples)": s["lr_ok"] / s["lr_n"]
            if s["lr_n"]
            else float("nan"),
        }
        for name, s in stats.items()
    }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process plus those of its reaped children (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def scaling(
    coco_path: Path, copies: int, workdir: Path, s3_env: dict[str, str] | None = None
) -> dict[int, tuple[float, float]]:
    """Images/s of a whole RQ run (submit -> merged json) with 1 and 2 worker processes, and the
    workers' CPU seconds per image during the run (their own and their finished work-horses'): if
    that stays flat from 1 to 2 workers, the work splits cleanly and a shortfall in speed-up is
    cores that other processes were using. With ``s3_env`` (boto3's variables of an S3 server whose
    bucket ``bench`` holds the dataset under ``source/``), inputs and outputs are ``s3://`` URLs and
    each worker has its own private data folder."""
    server = EmbeddedRedis(workdir / "redis")
    env = {**os.environ, **(s3_env or {}), "REDIS_URL": server.url, "PYTHONPATH": str(REPO)}
    conn = connect(server.url)
    n_images = len(json.loads(coco_path.read_text())["images"])
    source = "s3://bench/source" if s3_env else str(coco_path.parent)
    rates = {}
    procs: list[subprocess.Popen] = []
    try:
        for n_workers in (1, 2):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "jobqueue.worker", "--queues", "augment"],
                    cwd=REPO,
                    env={**env, "LSMT_DATA_DIR": str(workdir / f"worker-{n_workers}-{k}")},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for k in range(n_workers)
            ]
            # until started and preloaded (redis-py types the result Awaitable | set: this client is sync)
            while len(cast(set[bytes], conn.smembers("rq:workers"))) < n_workers:
                time.sleep(0.2)
            cpu_before = sum(_cpu_seconds(p.pid) for p in procs)
            start = time.perf_counter()
            run = jobs.submit_run(
                conn,
                f"{source}/{coco_path.name}",
                f"{source}/images",
                f"s3://bench/out{n_workers}" if s3_env else workdir / f"out{n_workers}",
                pipeline="medium",
                copies=copies,
                shard_size=max(1, n_images // 8),
            )
            status = jobs.wait(conn, run, timeout=1800, poll=0.1)
            elapsed = time.perf_counter() - start
            assert status["state"] == "finished", status
            cpu_seconds = sum(_cpu_seconds(p.pid) for p in procs) - cpu_before
            rates[n_workers] = (n_images * copies / elapsed, cpu_seconds / (n_images * copies))
            for p in procs:
                p.terminate()
                p.wait(30)
            while conn.smembers("rq:workers"):
                time.sleep(0.2)
    finally:
        for p in procs:  # a failed run leaves its workers running otherwise
            p.kill()
        server.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12, help="1280x720 images for speed and fidelity")
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds; the best round counts")
    parser.add_argument("--scaling-images", type=int, default=32, help="images for the 1 vs 2 worker run (0: skip)")
    parser.add_argument(
        "--object-storage", action="store_true", help="only the 1 vs 2 worker run, workers sharing only an S3 server"
    )
    args = parser.parse_args()
    if args.object_storage:
        with tempfile.TemporaryDirectory() as tmp:
            print_scaling(args.scaling_images, args.copies, Path(tmp), True)
        return
    pipeline = read_pipeline("medium")
    with tempfile.TemporaryDirectory() as tmp:
        coco_path = write_parts_dataset(Path(tmp) / "data", args.images, 1280, 720, n_objects=8, seed=11)
        coco, items = load(coco_path)
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
        cv2.setNumThreads(1)
        times = speed(pipeline, coco, items, args.copies, args.repeats)
        base = times["image only"]
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
        print(
            f"## Speed, medium preset, 1280x720, one core, CPU time ({len(items)} images x {args.copies} copies, best of {args.repeats})\n"
        )
        print("| method | ms / image | images/s | vs image only |\n|---|---|---|---|")
        for name, t in times.items():
            print(f"| {name} | {1000 * t:.1f} | {1 / t:.1f} | {t / base:.2f}x |")
        table = fidelity(pipeline, coco, items, args.copies)
        print("\n## Fidelity against measured truth (polygon instances)\n")
        keys = list(next(iter(table.values())))
        print("| method | " + " | ".join(keys) + " |\n" + "|---" * (len(keys) + 1) + "|")
        for name, row in table.items():
            print(
                f"| {name} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()) + " |"
            )
        os.sched_setaffinity(0, cores)
        if args.scaling_images:
            print_scaling(args.scaling_images, args.copies, Path(tmp), False)


def print_scaling(n_images: int, copies: int, workdir: Path, object_storage: bool) -> None:
    scale_path = write_parts_dataset(workdir / "scale", n_images, 1280, 720, 8, seed=12, suffix=".jpg")
    load = os.getloadavg()[0]
    if object_storage:
        from tests.support.object_storage import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server

        s3 = S3Server()
        try:
            s3.create_bucket("bench")
            for path in sorted(scale_path.parent.rglob("*")):
                if path.is_file():
                    s3.put_object("bench", f"source/{path.relative_to(scale_path.parent)}", path.read_bytes())
            s3_env = {"AWS_ENDPOINT_URL": s3.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                      "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_DEFAULT_REGION": REGION}  # fmt: skip
            os.environ.update(s3_env)  # submit_run reads the dataset from S3 here too
            rates = scaling(scale_path, copies, workdir, s3_env)
        finally:
            s3.stop()
    else:
        rates = scaling(scale_path, copies, workdir)
    where = "workers sharing only an S3 server (moto)" if object_storage else "one shared folder"
    print(f"\nload average before: {load:.1f}, after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"\n## RQ workers (real processes), {where}, medium, {n_images} images x {copies} copies, submit to merged json, incl. JPEG I/O\n"
    )
    print("| workers | images/s (wall) | speed-up | worker CPU ms / image |\n|---|---|---|---|")
    for n, (rate, cpu) in rates.items():
        print(f"| {n} | {rate:.1f} | {rate / rates[1][0]:.2f}x | {1000 * cpu:.1f} |")


if __name__ == "__main__":
    main()
