"""Geometrically exact augmentation of combined COCO datasets, in-process or sharded as RQ jobs.

``augment_dataset`` runs in this process; :mod:`augmentation.jobs` (``submit_run``, ``run_status``,
``wait``, ``resubmit``) runs the same code on RQ workers; ``python -m augmentation --help`` for the CLI.
"""

from augmentation import jobs
from augmentation.dataset_augment import AugmentationFailed, augment_dataset
from augmentation.pipelines import PipelineError, load_pipeline

__all__ = ["AugmentationFailed", "PipelineError", "augment_dataset", "jobs", "load_pipeline"]
