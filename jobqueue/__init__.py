"""Redis + RQ plumbing shared by augmentation runs and training runs."""
