"""The CNN-ViT, its shared preprocessing, and the training job that retrains and promotes it.

Importing the package stays cheap (no TensorFlow): `retraining` loads the job when called.
"""

from __future__ import annotations

__all__ = ["retraining"]


def retraining(storage_path: str | None = None, db_storage_path: str | None = None) -> bool:
    """Retrain from the image database; True when a new model was promoted (the original
    system's signature). See `training_job.job.retraining`."""
    from training_job.job import retraining as run_retraining

    return run_retraining(storage_path, db_storage_path)
