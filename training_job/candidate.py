"""Train the challenger: the pipeline, the model under the planned strategy and precision, the loop.

The result is a float32 model outside any strategy, ready to save, export and fine-tune from.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from cnn_vit.config import ModelConfig
from cnn_vit.model import build_model
from training_job.options import TrainingOptions
from training_job.pipeline import pipeline_cache, shuffled_training_items, training_datasets
from training_job.starting_weights import StartingWeights
from training_job.strategy import PrecisionPlan, StrategyPlan
from training_job.training_loop import EpochRecord, TrainingResult, train_model

__all__ = ["TrainedCandidate", "train_candidate"]


@dataclass(frozen=True)
class TrainedCandidate:
    model: keras.Model  # float32, outside any strategy: ready to save and export
    result: TrainingResult


def train_candidate(
    config: ModelConfig,
    train: tuple[Sequence[str], Sequence[int]],
    validation: tuple[Sequence[str], Sequence[int]],
    options: TrainingOptions,
    *,
    strategy: tuple[StrategyPlan, tf.distribute.Strategy],
    precision: PrecisionPlan,
    starting: StartingWeights,
    cache_folder: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedCandidate:
    """Train the challenger under the strategy (built as planned, before any other TensorFlow
    op ran) and the planned precision."""
    strategy_plan, engine = strategy
    keras.utils.set_random_seed(options.seed)
    # One cache per split and worker process: tf.data refuses to share an on-disk cache.
    task = strategy_plan.task.replace(":", "-") or "local"
    train_paths, train_labels, shuffle_buffer = shuffled_training_items(
        train[0], train[1], config.image_size, options.seed
    )
    train_dataset, validation_dataset = training_datasets(
        options,
        config.image_size,
        (train_paths, train_labels),
        (list(validation[0]), list(validation[1])),
        train_cache=pipeline_cache(
            len(train[0]), config.image_size, cache_folder / f"train-{task}"
        ),
        validation_cache=pipeline_cache(
            len(validation[0]), config.image_size, cache_folder / f"val-{task}"
        ),
        shuffle_buffer=shuffle_buffer,
    )
    with engine.scope():
        model = build_model(config, dtype_policy=precision.policy)
    if starting.weights is not None:
        model.set_weights(starting.weights)
    try:
        result = train_model(
            model,
            train_dataset,
            validation_dataset,
            options,
            fine_tuning=starting.fine_tuning,
            strategy=engine,
            on_epoch=on_epoch,
        )
    finally:
        shutil.rmtree(cache_folder, ignore_errors=True)
    # A float32 twin outside the strategy: what is saved, exported and fine-tuned from next.
    plain = build_model(config)
    plain.set_weights(model.get_weights())
    return TrainedCandidate(model=plain, result=result)
