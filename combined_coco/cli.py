"""``combined-coco`` / ``python -m combined_coco``: convert, validate, make-config.

Exit codes: 0 when the output is usable (issues about single tasks or regions are printed, one per
line, but do not fail the run), 1 when it is not (unreadable input, invalid config, invalid file),
2 for wrong command-line usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from combined_coco.config_from_description import config_from_description, load_description
from combined_coco.converter import ConversionError, convert_export_file
from combined_coco.schema import SchemaError
from combined_coco.validate import MAX_IMAGE_SIDE, validate_coco

_PROGRESS_BYTES = 5_000_000  # exports above this take seconds; show a progress bar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="combined-coco",
        description="Label Studio export -> combined COCO (polygons, boxes, keypoints per object).",
        epilog="example: combined-coco convert export.json --config labeling_configs/generic.xml -o coco.json",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    conv = sub.add_parser(
        "convert",
        help="convert a Label Studio JSON export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a Label Studio JSON export (Export -> JSON) to one combined COCO file.\n"
        "Problems are printed one per line as 'error|warning: task ID, region ID: message'.",
        epilog="example:\n  python -m combined_coco convert project-1.json --config labeling_configs/generic.xml"
        " -o coco.json\n  python -m combined_coco convert project-1.json --config cfg.xml -o coco.json"
        " --layout per_category",
    )
    conv.add_argument("export", type=Path, help="Label Studio JSON export (a list of tasks); JSON_MIN is accepted")
    conv.add_argument("--config", required=True, type=Path, help="the project's labeling config XML")
    conv.add_argument("-o", "--output", required=True, type=Path, help="combined COCO file to write")
    conv.add_argument(
        "--layout",
        choices=["global", "per_category"],
        default="global",
        help="keypoint layout (docs/FORMAT.md); default: global",
    )
    conv.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="nearest-polygon tolerance for unnested keypoints, fraction of the image diagonal",
    )
    conv.add_argument(
        "--images-dir",
        type=Path,
        help="write the images that tasks embed as data: URLs into this folder (the COCO file names "
        "them task_<id>.<ext> either way)",
    )
    conv.add_argument(
        "--max-image-side",
        type=int,
        default=MAX_IMAGE_SIDE,
        help=f"skip tasks whose image is larger than this many pixels a side (at most and by "
        f"default {MAX_IMAGE_SIDE}: COCO tools cannot make larger masks)",
    )
    conv.add_argument("-q", "--quiet", action="store_true", help="print errors only, no warnings or progress")

    val = sub.add_parser(
        "validate",
        help="check a combined COCO file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check a combined COCO file against docs/FORMAT.md and load it in pycocotools.",
        epilog="example:\n  python -m combined_coco validate coco.json",
    )
    val.add_argument("coco", type=Path)

    mk = sub.add_parser(
        "make-config",
        help="write a labeling config from a YAML/JSON description",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a Label Studio labeling config from a short YAML/JSON description "
        "(categories with their keypoints, flip_pairs, skeleton).",
        epilog="example:\n  python -m combined_coco make-config labeling_configs/diesel_engine.yaml"
        " -o labeling_configs/diesel_engine.xml",
    )
    mk.add_argument("description", type=Path, help="YAML or JSON description")
    mk.add_argument("-o", "--output", type=Path, help="XML file to write (default: print)")

    args = parser.parse_args(argv)
    return {"convert": _convert, "validate": _validate, "make-config": _make_config}[args.command](args)


def _convert(args: argparse.Namespace) -> int:
    try:
        config = args.config.read_text(encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot read labeling config {args.config}: {exc.strerror or exc}")
    big = args.export.exists() and args.export.stat().st_size > _PROGRESS_BYTES
    try:
        result = convert_export_file(
            args.export,
            args.output,
            config,
            layout=args.layout,
            progress=big and not args.quiet,
            nearest_tolerance=args.tolerance,
            max_image_side=args.max_image_side,
            images_dir=args.images_dir,
        )
    except (ConversionError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {exc.filename or args.output}: {exc.strerror or exc}")
    for issue in result.issues:
        if issue.severity == "error" or not args.quiet:
            print(f"{issue.severity}: {issue}")
    coco = result.coco
    problems = validate_coco(coco)
    for p in problems:
        print(f"error: output: {p}")
    errors = len(result.errors)
    print(
        f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} objects, "
        f"{errors} errors, {len(result.issues) - errors} warnings",
        file=sys.stderr,
    )
    return 1 if problems else 0


def _validate(args: argparse.Namespace) -> int:
    try:
        coco = json.loads(args.coco.read_text(encoding="utf-8"))
    except OSError as exc:
        return _fail(f"cannot read {args.coco}: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        return _fail(f"{args.coco} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    problems = validate_coco(coco)
    for p in problems:
        print(p)
    if problems:
        print(f"{args.coco}: {len(problems)} problems", file=sys.stderr)
        return 1
    print(
        f"{args.coco}: valid ({len(coco['images'])} images, {len(coco['annotations'])} annotations, "
        f"{len(coco['categories'])} categories)"
    )
    return 0


def _make_config(args: argparse.Namespace) -> int:
    try:
        xml = config_from_description(load_description(args.description))
    except OSError as exc:
        return _fail(f"cannot read {args.description}: {exc.strerror or exc}")
    except SchemaError as exc:
        return _fail(f"{args.description}: {exc}")
    if args.output is None:
        sys.stdout.write(xml)
    else:
        args.output.write_text(xml, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
