"""``python -m multitask {train,evaluate,predict,analyze,synthetic}``: one entry point, one module per command."""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from multitask import evaluate, inference, pose_analysis, synthetic, train

COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "train": (train, "train the multi-task model from a YAML config"),
    "evaluate": (evaluate, "COCO mAP (bbox, segm, keypoints) of a checkpoint on a combined COCO file"),
    "predict": (inference, "run a checkpoint on images, write instances as JSON"),
    "analyze": (pose_analysis, "orientation, configuration check and depth per object (paper IV.C)"),
    "synthetic": (synthetic, "write a tiny synthetic combined COCO dataset (the CPU small-data path)"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m multitask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, summary) in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=module.EXAMPLE,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    COMMANDS[args.command][0].run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
