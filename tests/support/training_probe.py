"""An RQ job that runs only a training run's augmentation step (``backend.training._augment``), so a test can
watch that step inside a real worker without exporting from Label Studio or training a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.settings import Settings
from backend.training import _augment


def augment_as_a_training_run(dataset: str, image_root: str, out_dir: str) -> dict[str, Any]:
    """What the run would report (the ``report`` calls) and where the augmented dataset is."""
    reports: list[dict[str, Any]] = []

    def report(**fields: Any) -> bool:
        reports.append(fields)
        return True

    result, images = _augment(0, Path(dataset), Path(image_root), Path(out_dir), Settings.from_env(), report)
    return {"reports": reports, "dataset": str(result), "images": str(images)}
