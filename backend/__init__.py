"""Label Studio ML backend for the multi-task model: predictions as polygon + keypoint regions, training on RQ.

``python -m backend`` serves the protocol (:mod:`backend.app`); training runs are RQ jobs
(:mod:`backend.training`) executed by ``python -m jobqueue.worker``; published models live under
``MODEL_DIR`` (:mod:`backend.model_store`). Environment: :mod:`backend.settings`.
"""
