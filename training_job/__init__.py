"""The training job (TensorFlow): retrain the CNN-ViT from the image database, promote a winner.

Data discovery, the image cache, the tf.data pipeline, the training loop, evaluation, the
champion/challenger decision, the learning outputs and the job itself; `python -m training_job`.
Importing the package stays cheap (no TensorFlow): `retraining` loads the job when called.
"""

from __future__ import annotations

__all__ = ["retraining"]


def retraining(storage_path: str | None = None, db_storage_path: str | None = None) -> bool:
    """Retrain from the image database; True when a new model was promoted (the original
    system's signature). See `training_job.job.retraining`."""
    from training_job.job import retraining as run_retraining

    return run_retraining(storage_path, db_storage_path)
