"""The training loop, written once for every `tf.distribute` strategy.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the loop
is a custom step run with `strategy.run` inside a `tf.function`, with AdamW built under the
strategy's scope and the loss averaged over the *global* batch. The same code runs on the
default strategy (one CPU or GPU), MirroredStrategy (several GPUs) and MultiWorkerMirroredStrategy
(several nodes via `TF_CONFIG`). The input pipeline is `training_job.pipeline`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from training_job.metrics import per_class_f1
from training_job.options import MONITORS, TrainingOptions

__all__ = [
    "HISTORY_FIELDS",
    "EpochRecord",
    "ModelNotInStrategyScope",
    "TrainingResult",
    "predict_probabilities",
    "predict_with_labels",
    "train_model",
]

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


class _Steps:
    """The distributed train and evaluation steps of one model, optimizer and strategy.

    Each step returns sums over the global batch (all-reduced across replicas and workers), so
    every worker sees the same numbers and takes the same early-stopping decision.
    """

    def __init__(
        self,
        model: keras.Model,
        strategy: tf.distribute.Strategy,
        options: TrainingOptions,
        learning_rate: float,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.num_classes = int(model.output_shape[-1])
        with strategy.scope():
            self.optimizer = keras.optimizers.AdamW(
                learning_rate=learning_rate, weight_decay=options.weight_decay
            )
            self.optimizer.build(model.trainable_variables)
            self.loss_function = keras.losses.CategoricalCrossentropy(
                label_smoothing=options.label_smoothing, reduction=None
            )

    def _replica_train_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        model = self.model
        # Label -1 marks the padding of a short last batch (`_full_batches`): it weighs nothing.
        mask = tf.cast(labels >= 0, tf.float32)
        local_count = tf.reduce_sum(mask)
        # The loss is averaged over the global batch, whatever its size (the last batch of an
        # epoch may be short): each replica's gradient is then its share of the global mean.
        global_count = tf.distribute.get_replica_context().all_reduce("sum", local_count)
        targets = tf.one_hot(labels, self.num_classes)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            per_example = self.loss_function(targets, probabilities) * mask
            loss = tf.reduce_sum(per_example) / tf.maximum(global_count, 1.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return tf.reduce_sum(per_example), correct, local_count

    def _replica_eval_step(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
        mask = tf.cast(labels >= 0, tf.float32)
        probabilities = self.model(images, training=False)
        per_example = self.loss_function(tf.one_hot(labels, self.num_classes), probabilities)
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        matrix = tf.math.confusion_matrix(
            tf.maximum(labels, 0), predicted, self.num_classes, weights=mask, dtype=tf.float32
        )
        return tf.reduce_sum(per_example * mask), matrix

    def _sum(self, values: Any) -> Any:
        # One reduction per value: MultiWorkerMirroredStrategy packs a structure into one
        # tensor, which fails for values of different shapes (a scalar and a matrix).
        return tf.nest.map_structure(
            lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
            values,
        )

    def compile(self, element_spec: Any, replica_step: Callable[..., Any]) -> Callable[..., Any]:
        """A tf.function running `replica_step` on every replica and summing the results.

        No AutoGraph: the steps hold no Python control flow on tensors, and skipping the source
        conversion makes tracing faster and independent of the source file on disk.
        """

        @tf.function(input_signature=[element_spec], autograph=False)
        def step(batch: Any) -> Any:
            images, labels = batch
            return self._sum(self.strategy.run(replica_step, args=(images, labels)))

        return step

    def train_epoch(self, distributed: Any, step: Callable[..., Any]) -> tuple[float, float, float]:
        """(loss sum, correct answers, images seen) over one pass of the training data."""
        loss_sum = correct = seen = 0.0
        for batch in distributed:
            step_loss, step_correct, step_count = step(batch)
            loss_sum += float(step_loss)
            correct += float(step_correct)
            seen += float(step_count)
        return loss_sum, correct, seen

    def validate(self, distributed: Any, step: Callable[..., Any]) -> tuple[float, float, float]:
        """(loss, accuracy, macro-F1 over the classes present) on the validation data."""
        loss_sum = 0.0
        matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.float64)
        for batch in distributed:
            step_loss, step_matrix = step(batch)
            loss_sum += float(step_loss)
            matrix += step_matrix.numpy()
        count = matrix.sum()
        if not count:
            return float("nan"), float("nan"), float("nan")
        present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        return (
            float(loss_sum / count),
            float(np.trace(matrix) / count),
            float(per_class_f1(matrix)[present].mean()),
        )


def _full_batches(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Pads a short batch up to `batch_size` with blank images labelled -1 (the steps give them
    no weight), so that no replica is handed an empty batch: under oneDNN a convolution over an
    empty batch returns the wrong shape and the step fails (seen with TensorFlow 2.21)."""

    def pad(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        missing = tf.maximum(batch_size - tf.shape(labels)[0], 0)
        image_padding = [[0, missing]] + [[0, 0]] * (images.shape.rank - 1)
        return (
            tf.pad(images, image_padding),
            tf.pad(labels, [[0, missing]], constant_values=-1),
        )

    return dataset.map(pad)


class _EarlyStopping:
    """Keeps the best epoch's weights; says when `patience` epochs brought no improvement."""

    def __init__(self, options: TrainingOptions, validated: bool) -> None:
        self.monitor = options.monitor if validated else "loss"
        self.larger_is_better = MONITORS[options.monitor] if validated else False
        self.min_delta = options.min_delta
        self.patience = options.patience
        self.validated = validated
        self.best_value = float("nan")
        self.best_epoch = 0
        self.best_weights: list[npt.NDArray[Any]] | None = None
        self._stale_epochs = 0

    def should_stop(self, record: EpochRecord, model: keras.Model) -> bool:
        if not self.validated:
            # Nothing held out to judge by: keep the last weights, run every epoch.
            self.best_epoch, self.best_value = record.epoch, record.loss
            return False
        value = float(getattr(record, self.monitor))
        if _improved(value, self.best_value, self.larger_is_better, self.min_delta):
            self.best_value, self.best_epoch = value, record.epoch
            self.best_weights = model.get_weights()
            self._stale_epochs = 0
            return False
        self._stale_epochs += 1
        return self._stale_epochs >= self.patience


def train_model(
    model: keras.Model,
    train_dataset: tf.data.Dataset,
    validation_dataset: tf.data.Dataset | None,
    options: TrainingOptions,
    *,
    fine_tuning: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainingResult:
    """Train `model` in place on batches of (image, class index); returns the history.

    Early stopping watches `options.monitor` (by default the validation loss, as Keras'
    EarlyStopping does): an epoch improves on the best so far only by more than `min_delta`;
    after `patience` epochs without improvement training stops, and the best epoch's weights
    are restored. The learning rate is `options.learning_rate_for(fine_tuning=...)`.

    With a strategy other than the default, build the model under `strategy.scope()` first.
    The datasets are batched by the global batch size (`training_job.pipeline`), which the
    strategy splits across replicas. `on_epoch` is called after each epoch (for progress logs).
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_in_scope(model, strategy)
    if validation_dataset is None and options.monitor != "val_loss":
        raise ValueError("early stopping on a validation metric needs a validation dataset")
    steps = _Steps(model, strategy, options, options.learning_rate_for(fine_tuning=fine_tuning))
    if strategy.num_replicas_in_sync > 1:
        if options.batch_size < strategy.num_replicas_in_sync:
            raise ValueError(
                f"the batch size ({options.batch_size}) must be at least the number of replicas "
                f"({strategy.num_replicas_in_sync}): each replica takes a share of every batch"
            )
        train_dataset = _full_batches(train_dataset, options.batch_size)
        if validation_dataset is not None:
            validation_dataset = _full_batches(validation_dataset, options.batch_size)
    distributed_train = strategy.experimental_distribute_dataset(train_dataset)
    train_step = steps.compile(distributed_train.element_spec, steps._replica_train_step)
    distributed_validation = eval_step = None
    if validation_dataset is not None:
        distributed_validation = strategy.experimental_distribute_dataset(validation_dataset)
        eval_step = steps.compile(distributed_validation.element_spec, steps._replica_eval_step)

    stopping = _EarlyStopping(options, validated=validation_dataset is not None)
    history: list[EpochRecord] = []
    stopped_early = False
    run_start = time.perf_counter()
    for epoch in range(1, options.epochs + 1):
        epoch_start = time.perf_counter()
        loss_sum, correct, seen = steps.train_epoch(distributed_train, train_step)
        train_seconds = time.perf_counter() - epoch_start
        val_loss = val_accuracy = val_f1 = float("nan")
        if distributed_validation is not None and eval_step is not None:
            val_loss, val_accuracy, val_f1 = steps.validate(distributed_validation, eval_step)
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
        if stopping.should_stop(record, model):
            stopped_early = epoch < options.epochs
            break

    if stopping.best_weights is not None and stopping.best_epoch != history[-1].epoch:
        # Every worker takes the same decision: all metrics above are all-reduced.
        model.set_weights(stopping.best_weights)
    return TrainingResult(
        history=history,
        best_epoch=stopping.best_epoch,
        best_value=stopping.best_value,
        monitor=stopping.monitor,
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
