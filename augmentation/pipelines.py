"""Augmentation pipelines as YAML in Albumentations' own serialization (``A.to_dict`` / ``A.from_dict``).

Any Albumentations transform can be named in a pipeline file; loading checks that each one is
pixel-level, a geometric transform whose effect on polygons and keypoints is computed exactly, or a
non-affine distortion handled through instance masks (:mod:`augmentation.geometry_transform`), and
refuses the rest with the reason. Presets for
industrial parts live in ``presets/{light,medium,heavy}.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import yaml

from augmentation.albumentations_steps import UnsupportedTransform, step_kind

PRESETS_DIR = Path(__file__).parent / "presets"


class PipelineError(ValueError):
    """The pipeline file cannot be used; the message names the file and the transform."""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_pipeline(spec: str | Path) -> dict[str, Any]:
    """The serialized pipeline (``A.to_dict`` form) of a preset name or a YAML file path."""
    path = PRESETS_DIR / f"{spec}.yaml" if str(spec) in preset_names() else Path(spec)
    if not path.is_file():
        raise PipelineError(f"pipeline {str(spec)!r} is neither a preset ({', '.join(preset_names())}) nor a YAML file")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "transform" not in data:
        raise PipelineError(
            f"{path}: expected Albumentations' serialized form with a top-level 'transform' key (A.to_dict)"
        )
    return data


def build_pipeline(data: dict[str, Any]) -> A.Compose:
    """Instantiate and check a serialized pipeline; the result records the parameters it applies."""
    try:
        transform = A.from_dict(data)
    except Exception as exc:  # Albumentations raises many types for a bad file; report them as one
        raise PipelineError(f"Albumentations cannot load the pipeline: {exc}") from exc
    compose = transform if isinstance(transform, A.Compose) else A.Compose([transform])
    for leaf in _leaves(compose):
        name = type(leaf).__name__
        try:
            kind = step_kind(name)
        except UnsupportedTransform as exc:
            raise PipelineError(str(exc)) from None
        border = getattr(leaf, "border_mode", cv2.BORDER_CONSTANT)
        if kind in ("matrix", "remap") and border != cv2.BORDER_CONSTANT:
            raise PipelineError(
                f"{name} uses border_mode={border}: reflected/replicated borders show copies of objects that have"
                " no labels. Use border_mode: 0 (constant fill)."
            )
    compose.save_applied_params = True
    return compose


def load_pipeline(spec: str | Path) -> A.Compose:
    return build_pipeline(read_pipeline(spec))


def _leaves(transform: A.BasicTransform | A.BaseCompose) -> Iterator[A.BasicTransform]:
    if isinstance(transform, A.BaseCompose):
        for child in transform.transforms:
            yield from _leaves(child)
    else:
        yield transform
