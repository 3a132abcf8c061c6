"""A quickly trained model on synthetic X-rays: for tests, bench and demos.

`train_demo_model` generates a seeded synthetic dataset in memory, trains a preset (`small` by
default, well under a minute on 2 CPU cores) with the real training loop and pipeline, and
measures macro-F1 on a held-out synthetic test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from cnn_vit.config import CLASS_NAMES, ModelConfig, get_preset
from cnn_vit.model import build_model
from synthetic.xrays import encode_png, generate_dataset
from training_job.metrics import confusion_matrix, macro_f1
from training_job.options import TrainingOptions
from training_job.pipeline import make_dataset, training_datasets
from training_job.training_loop import EpochRecord, predict_with_labels, train_model

__all__ = ["DEMO_COUNTS", "DEMO_TRAINING", "load_synthetic_split", "train_demo_model"]

# Images per class and split: enough for the small preset to generalise, few enough to train
# in well under a minute.
DEMO_COUNTS: Mapping[str, int] = {"train": 200, "val": 30, "test": 40}

# Short, fixed schedule: the synthetic task is learnt in a few epochs; early stopping on the
# validation loss ends it sooner when it plateaus.
DEMO_TRAINING = TrainingOptions(batch_size=16, epochs=8, learning_rate=1e-3, patience=3)


def load_synthetic_split(
    counts: Mapping[str, int], seed: int
) -> dict[str, tuple[list[bytes], list[int]]]:
    """Encoded PNGs and class indices per split, generated in memory."""
    splits: dict[str, tuple[list[bytes], list[int]]] = {}
    for split, _, film in generate_dataset(counts, seed):
        images, labels = splits.setdefault(split, ([], []))
        images.append(encode_png(film.image))
        labels.append(CLASS_NAMES.index(film.class_name))
    return splits


def train_demo_model(
    preset: str = "small",
    seed: int = 0,
    *,
    counts: Mapping[str, int] | None = None,
    training: TrainingOptions | None = None,
    model_config: ModelConfig | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Train `preset` (or `model_config`) on synthetic X-rays; returns the model and metrics.

    Metrics: `macro_f1` and `accuracy` on the held-out test split, `confusion_matrix`,
    `history` (per-epoch rows), `epochs`, `best_epoch`, `seconds`, `preset`, `seed`, `counts`.
    """
    start = time.perf_counter()
    counts = dict(counts or DEMO_COUNTS)
    training = (training or DEMO_TRAINING).replace(seed=seed)
    config = model_config or get_preset(preset)
    keras.utils.set_random_seed(seed)

    splits = load_synthetic_split(counts, seed)
    train, validation = training_datasets(
        training, config.image_size, splits["train"], splits.get("val")
    )
    test = make_dataset(*splits["test"], config.image_size, training.batch_size, training=False)
    model = build_model(config)
    result = train_model(model, train, validation, training, on_epoch=on_epoch)
    probabilities, labels = predict_with_labels(model, test)
    predicted = probabilities.argmax(axis=1)
    metrics: dict[str, Any] = {
        "preset": preset,
        "seed": seed,
        "counts": counts,
        "macro_f1": macro_f1(labels, predicted, len(CLASS_NAMES)),
        "accuracy": float(np.mean(predicted == labels)),
        "confusion_matrix": confusion_matrix(labels, predicted, len(CLASS_NAMES)).tolist(),
        "history": result.history_rows(),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "seconds": time.perf_counter() - start,
    }
    return model, metrics
