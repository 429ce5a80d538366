"""Geometrically exact augmentation of combined COCO datasets, in-process or sharded as RQ jobs.

``augment_dataset`` runs here; :mod:`augmentation.jobs` runs the same code on RQ workers.
"""

from augmentation.dataset_augment import AugmentationFailed, augment_dataset
from augmentation.pipelines import PipelineError, load_pipeline

__all__ = ["AugmentationFailed", "PipelineError", "augment_dataset", "load_pipeline"]
