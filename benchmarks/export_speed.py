"""Export speed: combined COCO vs Label Studio's own export paths, same process, same export file.

    python benchmarks/export_speed.py                    # 5,000 tasks x 5 objects (the target case)
    python benchmarks/export_speed.py --tasks 500 --repeat 1

Generates a Label Studio JSON export (each object a 12-vertex polygon with its keypoints, half of the
keypoints nested via parentID, half placed by position) and times:

  (a) label_studio_sdk Converter(config, project_dir=None).convert(export, out_dir, "JSON", is_dir=False)
      -- the path the brief names as the baseline; for a single file it is a file copy;
  (b) combined_coco.converter.convert_export_file  -- this project's combined COCO export;
  (c) json.load + json.dump of the export  -- the least any export that reads the tasks must do;
  (d) label_studio_sdk Converter ... "COCO"  -- Label Studio's own COCO export, for scale.

Best of --repeat runs each. Target: (b) <= 1.5 x (a).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from combined_coco.converter import convert_export_file  # noqa: E402
from combined_coco.ls_results import keypoint_result, polygon_result, task  # noqa: E402
from combined_coco.schema import Schema  # noqa: E402

CONFIG = REPO / "labeling_configs" / "generic.xml"
W, H = 1280, 960


def make_export(n_tasks: int, n_objects: int, schema: Schema, seed: int = 0) -> list[dict]:
    """Objects sit in distinct cells of a grid so keypoints placed by position are unambiguous."""
    rng = random.Random(seed)
    cols = math.ceil(math.sqrt(n_objects))
    cw, ch = W / cols, H / math.ceil(n_objects / cols)
    tasks = []
    for t in range(1, n_tasks + 1):
        results = []
        for n in range(n_objects):
            category = schema.categories[n % len(schema.categories)]
            cx, cy = (n % cols + 0.5) * cw, (n // cols + 0.5) * ch
            r = min(cw, ch) * 0.4
            outline = [(cx + r * rng.uniform(0.7, 1.0) * math.cos(a * math.pi / 6),
                        cy + r * rng.uniform(0.7, 1.0) * math.sin(a * math.pi / 6)) for a in range(12)]
            pid = f"t{t}o{n}"
            results.append(polygon_result(pid, category.name, outline, W, H))
            nested = n % 2 == 0
            for k, name in enumerate(category.keypoints):
                angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.6 * r)
                results.append(keypoint_result(f"{pid}k{k}", name, cx + dist * math.cos(angle),
                                               cy + dist * math.sin(angle), W, H, parent_id=pid if nested else None))
        tasks.append(task(t, f"/data/upload/1/{t:08x}-image_{t}.jpg", results))
    return tasks


def _with_model_index(config: str) -> str:
    """Label Studio's COCO exporter needs ``model_index`` on keypoint labels to order them."""
    root = ET.fromstring(config)
    for tag in root.iter("KeyPointLabels"):
        for i, label in enumerate(tag.iter("Label")):
            label.set("model_index", str(i))
            label.attrib.pop("category", None)  # Label Studio reads it as a numeric COCO category id
    return ET.tostring(root, encoding="unicode")


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (the CPU figure is steadier on a shared machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from label_studio_sdk.converter import Converter

    config = CONFIG.read_text()
    schema = Schema.from_label_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export.json"
        export.write_text(json.dumps(make_export(args.tasks, args.objects, schema)))
        size_mb = export.stat().st_size / 1e6
        n_kp = sum(len(schema.categories[n % len(schema.categories)].keypoints) for n in range(args.objects))
        print(f"export: {args.tasks} tasks x {args.objects} objects ({n_kp} keypoints per task), {size_mb:.1f} MB")

        ls = Converter(config, project_dir=None)
        ls_coco = Converter(_with_model_index(config), project_dir=None)
        t_json = best_of(args.repeat, lambda: ls.convert(str(export), str(Path(tmp) / "ls_json"), "JSON", is_dir=False))
        t_ours = best_of(args.repeat, lambda: convert_export_file(export, Path(tmp) / "coco.json", config))

        def load_dump() -> None:
            with export.open() as f:
                tasks = json.load(f)
            (Path(tmp) / "dump.json").write_text(json.dumps(tasks))

        t_dump = best_of(args.repeat, load_dump)
        try:
            t_ls_coco: tuple[float, float] | None = best_of(
                1, lambda: ls_coco.convert(str(export), str(Path(tmp) / "ls_coco"), "COCO", is_dir=False))
        except Exception as exc:  # the SDK's COCO exporter is not ours to fix; report and go on
            print(f"(d) Label Studio COCO export failed: {type(exc).__name__}: {exc}")
            t_ls_coco = None

    rows = [("(a) Label Studio JSON export path (Converter 'JSON', is_dir=False)", t_json),
            ("(b) combined COCO convert_export_file", t_ours),
            ("(c) json.load + json.dump of the export", t_dump)]
    if t_ls_coco is not None:
        rows.append(("(d) Label Studio COCO export (Converter 'COCO', 1 run)", t_ls_coco))
    print(f"{'':66s} {'wall s':>8s} {'cpu s':>8s}")
    for name, (wall, cpu) in rows:
        print(f"{name:66s} {wall:8.3f} {cpu:8.3f}")
    for name, (wall, cpu) in rows:
        if name[:3] != "(b)":
            print(f"(b)/{name[:3]}: {t_ours[0] / wall:6.2f}x wall, {t_ours[1] / max(cpu, 1e-9):6.2f}x cpu"
                  + ("   (target <= 1.5x)" if name[:3] == "(a)" else ""))

if __name__ == "__main__":
    main()
