"""The job's TensorFlow steps: starting weights, training under a strategy, saving and export.

Kept apart from `training_job.job` so that a run with nothing to do (unchanged data) decides
that without importing TensorFlow. Model code stays in `model.py`, the loop in `train.py`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from model_export.registry import VersionEntry
from storage import ObjectNotFound, Store, keys
from training_job.config import ModelConfig
from training_job.model import build_model
from training_job.outputs import MODEL_FILE
from training_job.strategy import PrecisionPlan, StrategyPlan, create_strategy
from training_job.train import (
    EpochRecord,
    TrainingConfig,
    TrainingResult,
    make_dataset,
    train_model,
)

__all__ = [
    "StartingWeights",
    "TrainedCandidate",
    "load_starting_weights",
    "pipeline_cache",
    "shuffled_training_items",
    "train_candidate",
]

# Decoded images are cached in memory below this size, on local disk above it; the shuffle
# buffer (decoded images too) is bounded by the same size.
_MEMORY_CACHE_BYTES = 2 * 1024**3
Weights = list[npt.NDArray[Any]]


@dataclass(frozen=True)
class StartingWeights:
    """Where training starts: the stable model's weights (fine-tuning) or none (scratch)."""

    weights: Weights | None
    source: str  # "stable" or "scratch"
    reason: str
    parent_version: int | None = None

    @property
    def fine_tuning(self) -> bool:
        return self.weights is not None


@dataclass(frozen=True)
class TrainedCandidate:
    model: keras.Model  # float32, outside any strategy: ready to save and export
    result: TrainingResult


def _same_shapes(weights: Weights, config: ModelConfig) -> bool:
    expected = [tuple(weight.shape) for weight in build_model(config).get_weights()]
    return expected == [tuple(weight.shape) for weight in weights]


def load_starting_weights(
    root: Store,
    stable: VersionEntry | None,
    config: ModelConfig,
    workdir: Path,
    *,
    from_scratch: bool,
) -> StartingWeights:
    """The stable version's weights to fine-tune from, or why training starts from scratch."""
    if stable is None:
        return StartingWeights(None, "scratch", "no stable model yet")
    version = stable.version
    if from_scratch:
        return StartingWeights(None, "scratch", "asked to train from scratch", version)
    if stable.preset and stable.preset != config.name:
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} is preset {stable.preset!r}; this run trains "
            f"{config.name!r}",
            version,
        )
    if not stable.run_id:
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} has no Keras model file (its registry entry names no run)",
            version,
        )
    key = keys.learning_file(stable.run_id, MODEL_FILE)
    path = workdir / "stable-model.keras"
    try:
        root.download_file(key, path)
    except (ObjectNotFound, ValueError):
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version} has no Keras model file ({key})",
            version,
        )
    weights = keras.saving.load_model(path, compile=False).get_weights()
    if not _same_shapes(weights, config):
        return StartingWeights(
            None,
            "scratch",
            f"stable version {version}'s model does not have the shape of preset {config.name!r}",
            version,
        )
    return StartingWeights(
        weights,
        "stable",
        f"fine-tuning from stable version {version} (run {stable.run_id})",
        version,
    )


def _decoded_bytes(image_size: int) -> int:
    return image_size * image_size * 4  # float32, one channel


def pipeline_cache(images: int, image_size: int, folder: Path) -> bool | str:
    """Keep decoded images in memory when they fit comfortably, else in files under `folder`."""
    if images * _decoded_bytes(image_size) <= _MEMORY_CACHE_BYTES:
        return True
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / "decoded")


def shuffled_training_items(
    paths: Sequence[str], labels: Sequence[int], image_size: int, seed: int
) -> tuple[list[str], list[int], int]:
    """The training items in a seeded random order, and a shuffle buffer that fits in memory.

    The database lists images grouped by batch, split and class; a bounded shuffle buffer over
    that order would fill batches with one class. Shuffling the items first (so the cache holds
    them in random order) and reshuffling within the buffer each epoch mixes them well.
    """
    order = np.random.default_rng(seed).permutation(len(paths))
    buffer = max(1, min(len(paths), _MEMORY_CACHE_BYTES // _decoded_bytes(image_size)))
    return [paths[i] for i in order], [int(labels[i]) for i in order], buffer


def train_candidate(
    config: ModelConfig,
    train: tuple[Sequence[str], Sequence[int]],
    validation: tuple[Sequence[str], Sequence[int]],
    training: TrainingConfig,
    *,
    strategy_plan: StrategyPlan,
    precision: PrecisionPlan,
    starting: StartingWeights,
    cache_folder: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedCandidate:
    """Train the challenger under the planned strategy and precision."""
    strategy = create_strategy(strategy_plan)
    keras.utils.set_random_seed(training.seed)
    # One cache per split and worker process: tf.data refuses to share an on-disk cache.
    task = strategy_plan.task.replace(":", "-") or "local"
    train_cache = pipeline_cache(len(train[0]), config.image_size, cache_folder / f"train-{task}")
    validation_cache = pipeline_cache(
        len(validation[0]), config.image_size, cache_folder / f"val-{task}"
    )
    common: Mapping[str, Any] = {
        "rotation_degrees": training.rotation_degrees,
        "zoom": training.zoom,
        "seed": training.seed,
    }
    train_paths, train_labels, shuffle_buffer = shuffled_training_items(
        train[0], train[1], config.image_size, training.seed
    )
    train_dataset = make_dataset(
        train_paths,
        train_labels,
        config.image_size,
        training.batch_size,
        training=True,
        augment=training.augment,
        cache=train_cache,
        shuffle_buffer=shuffle_buffer,
        **common,
    )
    validation_dataset = (
        make_dataset(
            list(validation[0]),
            list(validation[1]),
            config.image_size,
            training.batch_size,
            training=False,
            cache=validation_cache,
            **common,
        )
        if validation[0]
        else None
    )
    with strategy.scope():
        model = build_model(config, dtype_policy=precision.policy)
    if starting.weights is not None:
        model.set_weights(starting.weights)
    try:
        result = train_model(
            model,
            train_dataset,
            validation_dataset,
            training,
            strategy=strategy,
            on_epoch=on_epoch,
        )
    finally:
        shutil.rmtree(cache_folder, ignore_errors=True)
    # A float32 twin outside the strategy: what is saved, exported and fine-tuned from next.
    plain = build_model(config)
    plain.set_weights(model.get_weights())
    return TrainedCandidate(model=plain, result=result)
