"""The training loop: early stopping with best weights restored, strategies (including short batches
padded so that no replica gets an empty one), predictions in dataset order."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_vit.model import build_model
from tests.training_job.tiny import TINY_CONFIG, films
from training_job.options import TrainingOptions
from training_job.pipeline import make_dataset
from training_job.training_loop import (
    HISTORY_FIELDS,
    EpochRecord,
    ModelNotInStrategyScope,
    _full_batches,
    _Steps,
    predict_probabilities,
    predict_with_labels,
    train_model,
)

REPOSITORY = Path(__file__).resolve().parents[2]
CLASSES = ("normal", "covid", "no-covid")


@pytest.fixture(scope="module")
def tiny_data() -> dict[str, tf.data.Dataset]:
    items, labels = films(24)
    size = TINY_CONFIG.image_size
    return {
        "train": make_dataset(items, labels, size, 8, training=True, seed=0),
        "val": make_dataset(items[:12], labels[:12], size, 8, training=False),
    }


# -- training --------------------------------------------------------------------------------------


def test_train_model_history_rows_have_every_field_and_learn(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(TINY_CONFIG)
    before = [weight.copy() for weight in model.get_weights()]
    seen: list[EpochRecord] = []
    config = TrainingOptions(batch_size=8, epochs=2, patience=5)

    result = train_model(model, tiny_data["train"], tiny_data["val"], config, on_epoch=seen.append)

    rows = result.history_rows()
    assert [tuple(row) for row in rows] == [HISTORY_FIELDS] * 2
    assert [record.epoch for record in seen] == [1, 2]
    assert all(np.isfinite(row["loss"]) and np.isfinite(row["val_loss"]) for row in rows)
    assert all(0.0 <= row["val_macro_f1"] <= 1.0 for row in rows)
    assert all(row["images_per_second"] > 0 for row in rows)
    assert result.replicas == 1
    assert any(
        not np.array_equal(old, new) for old, new in zip(before, model.get_weights(), strict=True)
    )


def test_train_model_no_improvement_stops_after_patience_and_restores_best_weights(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(TINY_CONFIG)
    weights_by_epoch: dict[int, list[np.ndarray]] = {}
    # A min_delta no epoch can beat: epoch 1 stays the best, epochs 2 and 3 use up patience.
    config = TrainingOptions(batch_size=8, epochs=10, patience=2, min_delta=100.0)

    result = train_model(
        model,
        tiny_data["train"],
        tiny_data["val"],
        config,
        on_epoch=lambda record: weights_by_epoch.setdefault(record.epoch, model.get_weights()),
    )

    assert result.epochs_run == 3
    assert result.stopped_early
    assert result.best_epoch == 1
    assert result.best_value == result.history[0].val_loss
    final = model.get_weights()
    for restored, best in zip(final, weights_by_epoch[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert any(
        not np.array_equal(restored, last)
        for restored, last in zip(final, weights_by_epoch[3], strict=True)
    )


def test_train_model_monitoring_macro_f1_records_larger_is_better(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    model = build_model(TINY_CONFIG)
    config = TrainingOptions(batch_size=8, epochs=2, monitor="val_macro_f1")

    result = train_model(model, tiny_data["train"], tiny_data["val"], config)

    assert result.monitor == "val_macro_f1"
    assert result.best_value == max(record.val_macro_f1 for record in result.history)


def test_train_model_without_validation_runs_every_epoch(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    model = build_model(TINY_CONFIG)

    result = train_model(model, tiny_data["train"], None, TrainingOptions(epochs=2, patience=0))

    assert result.epochs_run == 2
    assert np.isnan(result.history[-1].val_loss)
    assert not result.stopped_early


def test_train_model_under_mirrored_strategy_trains_model_built_in_scope(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = build_model(TINY_CONFIG)

    result = train_model(
        model, tiny_data["train"], tiny_data["val"], TrainingOptions(epochs=1), strategy=strategy
    )

    assert result.replicas == 1
    assert np.isfinite(result.history[0].loss)


def test_train_model_model_built_outside_strategy_scope_raises(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = build_model(TINY_CONFIG)

    with pytest.raises(ModelNotInStrategyScope):
        train_model(model, tiny_data["train"], None, TrainingOptions(epochs=1), strategy=strategy)


def test_predict_with_labels_returns_probabilities_in_dataset_order() -> None:
    items, labels = films(5)
    model = build_model(TINY_CONFIG)
    dataset = make_dataset(items, labels, 16, batch_size=2, training=False)

    probabilities, returned_labels = predict_with_labels(model, dataset)
    images_only = make_dataset(items, None, 16, batch_size=2, training=False)

    assert probabilities.shape == (5, 3)
    assert returned_labels.tolist() == labels
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images_only), probabilities, atol=1e-6)


# -- short batches across replicas ----------------------------------------------------------------
# (two workers end to end: tests/training_job/test_job_multiworker.py)


def test_full_batches_pads_only_the_short_batch_with_unweighted_labels() -> None:
    items, labels = films(5)
    dataset = make_dataset(items, labels, TINY_CONFIG.image_size, 4, training=False)

    batches = list(_full_batches(dataset, 4))

    assert [tuple(images.shape) for images, _ in batches] == [(4, 16, 16, 1)] * 2
    assert batches[0][1].numpy().tolist() == labels[:4]
    assert batches[1][1].numpy().tolist() == [labels[4], -1, -1, -1]
    assert not np.any(batches[1][0].numpy()[1:])


def test_padded_batches_count_and_score_as_the_real_images_alone() -> None:
    keras.utils.set_random_seed(0)
    items, labels = films(5)
    size = TINY_CONFIG.image_size
    plain = make_dataset(items, labels, size, 4, training=False)
    padded = _full_batches(plain, 4)
    # No dropout: the two training passes must see the same network.
    model = build_model(
        TINY_CONFIG.replace(transformer_dropout=0.0, head_dropout=0.0, head_mlp_dropout=0.0)
    )
    steps = _Steps(model, tf.distribute.get_strategy(), TrainingOptions(), learning_rate=0.0)

    scores = [
        steps.validate(data, steps.compile(data.element_spec, steps._replica_eval_step))
        for data in (plain, padded)
    ]
    totals = [
        steps.train_epoch(data, steps.compile(data.element_spec, steps._replica_train_step))
        for data in (plain, padded)
    ]

    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5)
    assert totals[0][2] == totals[1][2] == 5
    np.testing.assert_allclose(totals[0][:2], totals[1][:2], rtol=1e-5)


def test_train_model_mixed_bfloat16_model_trains_with_finite_loss(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    model = build_model(TINY_CONFIG, dtype_policy="mixed_bfloat16")

    result = train_model(model, tiny_data["train"], tiny_data["val"], TrainingOptions(epochs=1))

    assert np.isfinite(result.history[0].loss)
    assert np.isfinite(result.history[0].val_loss)
    assert all(weight.dtype == "float32" for weight in model.weights)
