"""The training loop, written once for every `tf.distribute` strategy, and its input pipeline.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop
is a custom step run with `strategy.run` inside a `tf.function`, with AdamW built under the
strategy's scope and the loss averaged over the *global* batch. The same code runs on the
default strategy (one CPU or GPU), MirroredStrategy (several GPUs) and MultiWorkerMirroredStrategy
(several nodes via `TF_CONFIG`). Augmentation lives in the tf.data pipeline, never in the model,
so the exported model carries only the shared preprocessing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from training_job.evaluate import confusion_matrix, macro_f1, per_class_f1
from training_job.preprocessing import decode_grayscale, preprocess_image_bytes

__all__ = [
    "HISTORY_FIELDS",
    "MONITORS",
    "EpochRecord",
    "ModelNotInStrategyScope",
    "TrainingConfig",
    "TrainingResult",
    "augment_image",
    "confusion_matrix",
    "find_unreadable",
    "macro_f1",
    "make_dataset",
    "per_class_f1",
    "predict_probabilities",
    "predict_with_labels",
    "train_model",
]

Monitor = Literal["val_loss", "val_macro_f1", "val_accuracy"]
# Whether a larger value of each monitored metric is better.
MONITORS: dict[str, bool] = {"val_loss": False, "val_macro_f1": True, "val_accuracy": True}

ImageItems = Sequence[str] | Sequence[bytes]


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation hyperparameters; the defaults are the original system's.

    Early stopping watches `monitor` (by default the validation loss, as Keras' EarlyStopping
    does): an epoch improves on the best so far only by more than `min_delta`; after `patience`
    epochs without improvement training stops, and the best epoch's weights are restored.
    """

    batch_size: int = 32
    epochs: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    patience: int = 5
    min_delta: float = 0.005
    monitor: Monitor = "val_loss"
    augment: bool = True
    # Augmentation ranges (training only): horizontal flip, rotation and zoom.
    rotation_degrees: float = 10.0
    zoom: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {sorted(MONITORS)}, not {self.monitor!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError("patience and min_delta must not be negative")


# The columns of the per-epoch history, in order (a CSV writer can use them as its header).
HISTORY_FIELDS: tuple[str, ...] = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "images_per_second",
    "seconds",
)


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training history. Validation values are NaN when there is no val set.

    `images_per_second` is training throughput (training images / training time, across all
    replicas); `seconds` is the whole epoch, validation included.
    """

    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    images_per_second: float
    seconds: float

    def as_row(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run did. The model passed in holds the best epoch's weights."""

    history: list[EpochRecord]
    best_epoch: int
    best_value: float
    monitor: str
    stopped_early: bool
    seconds: float
    replicas: int = 1

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def history_rows(self) -> list[dict[str, float | int]]:
        return [record.as_row() for record in self.history]


class ModelNotInStrategyScope(ValueError):
    """The model's variables were not created under the strategy's scope."""


# -- input pipeline ----------------------------------------------------------------------------


def augment_image(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    rotation_degrees: float = 10.0,
    zoom: float = 0.2,
) -> tf.Tensor:
    """Random horizontal flip, rotation (up to +-`rotation_degrees`) and zoom (+-`zoom`).

    Stateless: the same `seed` (int64 [2]) gives the same result. Pixels moved in from outside
    the image are reflected, as Keras' RandomRotation/RandomZoom do by default.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    size = tf.cast(tf.shape(image)[0], tf.float32)
    angle = tf.random.stateless_uniform([], seeds[1], -rotation_degrees, rotation_degrees) * (
        math.pi / 180.0
    )
    # Sampling scale: > 1 shows more of the image (zoom out), < 1 less (zoom in).
    scale = 1.0 + tf.random.stateless_uniform([], seeds[2], -zoom, zoom)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    center = (size - 1.0) / 2.0
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotate and scale
    # about the centre.
    transform = tf.stack(
        [
            cos,
            -sin,
            center - cos * center + sin * center,
            sin,
            cos,
            center - sin * center - cos * center,
            0.0,
            0.0,
        ]
    )
    transformed = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    return tf.clip_by_value(tf.ensure_shape(transformed, image.shape), 0.0, 1.0)


def _without_autograph(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a tf.data map function as plain graph code (no Python control flow on tensors):
    AutoGraph would otherwise re-parse its source, which fails for lambdas and is slow."""
    return tf.autograph.experimental.do_not_convert(function)


def _is_bytes_items(items: ImageItems) -> bool:
    return bool(items) and isinstance(items[0], bytes | bytearray)


def _image_bytes_dataset(items: ImageItems) -> tf.data.Dataset:
    """Encoded bytes per item: read from disk for paths, as given for bytes."""
    if _is_bytes_items(items):
        return tf.data.Dataset.from_tensor_slices(tf.constant(list(items), dtype=tf.string))
    paths = tf.data.Dataset.from_tensor_slices(
        tf.constant([str(item) for item in items], dtype=tf.string)
    )
    return paths.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    items: ImageItems,
    labels: Sequence[int] | npt.NDArray[np.integer[Any]] | None,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    cache: bool | str = True,
    augment: bool | None = None,
    rotation_degrees: float = 10.0,
    zoom: float = 0.2,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    skip_unreadable: bool = False,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of (image float32 [B, S, S, 1], label int32 [B]).

    `items` are file paths or encoded image bytes; `labels` are class indices (None: images
    only). Decoding runs in parallel through `preprocess_image_bytes` (the exported model's own
    preprocessing), then the decoded images are cached (`True`: in memory; a path: on disk, one
    path per image size, dataset and worker process; `False`: not at all). `training=True`
    reshuffles every epoch and, when `augment` (default: `training`), augments after the cache
    so each epoch sees fresh variations. Evaluation keeps the input order. `skip_unreadable`
    drops images the decoder rejects (`find_unreadable` names them); otherwise an unreadable
    image fails the iteration.
    """
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    augment = training if augment is None else augment
    images = _image_bytes_dataset(items).map(
        _without_autograph(lambda data: preprocess_image_bytes(data, image_size)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if labels is not None:
        label_tensor = tf.constant(np.asarray(labels, dtype=np.int32))
        dataset = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(label_tensor)))
    else:
        dataset = images
    if skip_unreadable:
        dataset = dataset.ignore_errors()
    if cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(str(cache))
    if training:
        buffer = shuffle_buffer or max(1, len(items))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        # A fresh random seed per element and per epoch, yet reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def _augment(element: Any, element_seed: tf.Tensor) -> Any:
            if labels is None:
                return augment_image(
                    element, element_seed, rotation_degrees=rotation_degrees, zoom=zoom
                )
            image, label = element
            image = augment_image(image, element_seed, rotation_degrees=rotation_degrees, zoom=zoom)
            return image, label

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            _without_autograph(_augment), num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory items have no files to shard by: multi-worker training shards by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def find_unreadable(items: ImageItems) -> list[int]:
    """Indices of items the shared decoder rejects (missing file, corrupt or unknown format)."""
    if not items:
        return []
    indices = tf.data.Dataset.range(len(items))
    data = _image_bytes_dataset(items)

    def _decode(index: tf.Tensor, encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Return something computed from the pixels, so the decode cannot be pruned away and its
        # failure drops this index.
        return index, tf.reduce_max(decode_grayscale(encoded))

    readable = (
        tf.data.Dataset.zip((indices, data))
        .map(_without_autograph(_decode), num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    seen = {int(index) for index, _ in readable.as_numpy_iterator()}
    return [index for index in range(len(items)) if index not in seen]


# -- training ----------------------------------------------------------------------------------


def _check_in_scope(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    variables = model.trainable_variables
    if not variables:
        return
    value = getattr(variables[0], "value", variables[0])
    if not strategy.extended.variable_created_in_scope(value):
        raise ModelNotInStrategyScope(
            "build the model under `strategy.scope()` before training it with that strategy"
        )


def _improved(value: float, best: float, larger_is_better: bool, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    if larger_is_better:
        return value > best + min_delta
    return value < best - min_delta


def train_model(
    model: keras.Model,
    train_dataset: tf.data.Dataset,
    validation_dataset: tf.data.Dataset | None,
    config: TrainingConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingResult:
    """Train `model` in place on batches of (image, class index); returns the history.

    With a strategy other than the default, build the model under `strategy.scope()` first.
    The datasets are batched by the global batch size (`make_dataset`), which the strategy
    splits across replicas. `on_epoch` is called after each epoch (for progress logs).
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_in_scope(model, strategy)
    num_classes = int(model.output_shape[-1])
    larger_is_better = MONITORS[config.monitor]
    if validation_dataset is None and config.monitor != "val_loss":
        raise ValueError("early stopping on a validation metric needs a validation dataset")

    with strategy.scope():
        optimizer = keras.optimizers.AdamW(
            learning_rate=config.learning_rate, weight_decay=config.weight_decay
        )
        optimizer.build(model.trainable_variables)
        loss_function = keras.losses.CategoricalCrossentropy(
            label_smoothing=config.label_smoothing, reduction=None
        )

    distributed_train = strategy.experimental_distribute_dataset(train_dataset)
    distributed_validation = (
        strategy.experimental_distribute_dataset(validation_dataset)
        if validation_dataset is not None
        else None
    )

    def _replica_train_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        local_count = tf.cast(tf.shape(labels)[0], tf.float32)
        # The loss is averaged over the global batch, whatever its size (the last batch of an
        # epoch may be short): each replica's gradient is then its share of the global mean.
        global_count = tf.distribute.get_replica_context().all_reduce("sum", local_count)
        targets = tf.one_hot(labels, num_classes)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = loss_function(targets, probabilities)
            loss = tf.reduce_sum(per_example) / tf.maximum(global_count, 1.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        correct = tf.reduce_sum(
            tf.cast(
                tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), labels),
                tf.float32,
            )
        )
        return tf.reduce_sum(per_example), correct, local_count

    def _replica_eval_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        probabilities = model(images, training=False)
        per_example = loss_function(tf.one_hot(labels, num_classes), probabilities)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        matrix = tf.math.confusion_matrix(labels, predicted, num_classes, dtype=tf.float32)
        return tf.reduce_sum(per_example), matrix

    def _sum(values: Any) -> Any:
        # One reduction per value: MultiWorkerMirroredStrategy packs a structure into one
        # tensor, which fails for values of different shapes (a scalar and a matrix).
        return tf.nest.map_structure(
            lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None), values
        )

    # No AutoGraph: the steps hold no Python control flow on tensors, and skipping the source
    # conversion makes tracing faster and independent of the source file on disk.
    @tf.function(input_signature=[distributed_train.element_spec], autograph=False)
    def train_step(batch: Any) -> Any:
        images, labels = batch
        return _sum(strategy.run(_replica_train_step, args=(images, labels)))

    eval_step: Callable[[Any], Any] | None = None
    if distributed_validation is not None:

        @tf.function(input_signature=[distributed_validation.element_spec], autograph=False)
        def eval_step(batch: Any) -> Any:
            images, labels = batch
            return _sum(strategy.run(_replica_eval_step, args=(images, labels)))

    history: list[EpochRecord] = []
    best_value = float("nan")
    best_epoch = 0
    best_weights: list[npt.NDArray[Any]] | None = None
    epochs_without_improvement = 0
    stopped_early = False
    run_start = time.perf_counter()

    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for batch in distributed_train:
            step_loss, step_correct, step_count = train_step(batch)
            loss_sum += float(step_loss)
            correct += float(step_correct)
            seen += float(step_count)
        train_seconds = time.perf_counter() - epoch_start

        val_loss = val_accuracy = val_f1 = float("nan")
        if eval_step is not None and distributed_validation is not None:
            val_loss_sum = 0.0
            matrix = np.zeros((num_classes, num_classes), dtype=np.float64)
            for batch in distributed_validation:
                step_loss, step_matrix = eval_step(batch)
                val_loss_sum += float(step_loss)
                matrix += step_matrix.numpy()
            val_count = matrix.sum()
            if val_count:
                val_loss = float(val_loss_sum / val_count)
                val_accuracy = float(np.trace(matrix) / val_count)
                present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
                val_f1 = float(per_class_f1(matrix)[present].mean())

        record = EpochRecord(
            epoch=epoch,
            loss=loss_sum / seen if seen else float("nan"),
            accuracy=correct / seen if seen else float("nan"),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            val_macro_f1=val_f1,
            images_per_second=seen / train_seconds if train_seconds > 0 else float("nan"),
            seconds=time.perf_counter() - epoch_start,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)

        if validation_dataset is None:
            # Nothing held out to judge by: keep the last weights, run every epoch.
            best_epoch, best_value = epoch, record.loss
            continue
        value = float(getattr(record, config.monitor))
        if _improved(value, best_value, larger_is_better, config.min_delta):
            best_value, best_epoch = value, epoch
            best_weights = model.get_weights()
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
            if epochs_without_improvement >= config.patience:
                stopped_early = epoch < config.epochs
                break

    if best_weights is not None and best_epoch != history[-1].epoch:
        # Every worker takes the same decision: all metrics above are all-reduced.
        model.set_weights(best_weights)
    return TrainingResult(
        history=history,
        best_epoch=best_epoch,
        best_value=best_value,
        monitor=config.monitor if validation_dataset is not None else "loss",
        stopped_early=stopped_early,
        seconds=time.perf_counter() - run_start,
        replicas=int(strategy.num_replicas_in_sync),
    )


def _prediction_batches(dataset: tf.data.Dataset) -> Any:
    for batch in dataset:
        if isinstance(batch, tuple | list):
            yield batch[0], batch[1] if len(batch) > 1 else None
        else:
            yield batch, None


def predict_with_labels(
    model: keras.Model, dataset: tf.data.Dataset
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Probabilities [N, C] and the dataset's labels [N] (dataset of (image, label) batches)."""
    probabilities: list[npt.NDArray[np.float32]] = []
    labels: list[npt.NDArray[np.int32]] = []
    for images, batch_labels in _prediction_batches(dataset):
        # Keras traces its predict function once per model and keeps it, whatever the caller.
        probabilities.append(np.asarray(model.predict_on_batch(images), dtype=np.float32))
        if batch_labels is not None:
            labels.append(np.asarray(batch_labels, dtype=np.int32))
    num_classes = int(model.output_shape[-1])
    stacked = (
        np.concatenate(probabilities) if probabilities else np.zeros((0, num_classes), np.float32)
    )
    return stacked, (np.concatenate(labels) if labels else np.zeros((0,), np.int32))


def predict_probabilities(model: keras.Model, dataset: tf.data.Dataset) -> npt.NDArray[np.float32]:
    """Probabilities [N, C] for a dataset of image batches (labels, if present, are ignored)."""
    return predict_with_labels(model, dataset)[0]
