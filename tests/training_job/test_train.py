"""The training loop and its pipeline: metrics, augmentation, datasets, early stopping with best
weights restored, strategies (including two MultiWorkerMirroredStrategy workers on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training_job.tiny import TINY_CONFIG
from training_job.model import build_model
from training_job.synthetic import encode_png, generate_xray
from training_job.train import (
    HISTORY_FIELDS,
    EpochRecord,
    ModelNotInStrategyScope,
    TrainingConfig,
    augment_image,
    confusion_matrix,
    find_unreadable,
    macro_f1,
    make_dataset,
    per_class_f1,
    predict_probabilities,
    predict_with_labels,
    train_model,
)

REPOSITORY = Path(__file__).resolve().parents[2]
CLASSES = ("normal", "covid", "no-covid")


def _films(count: int, seed: int = 0) -> tuple[list[bytes], list[int]]:
    items, labels = [], []
    for index in range(count):
        film = generate_xray(CLASSES[index % 3], seed * 1000 + index, size_range=(40, 56))
        items.append(encode_png(film.image))
        labels.append(index % 3)
    return items, labels


@pytest.fixture(scope="module")
def tiny_data() -> dict[str, tf.data.Dataset]:
    items, labels = _films(24)
    size = TINY_CONFIG.image_size
    return {
        "train": make_dataset(items, labels, size, 8, training=True, seed=0),
        "val": make_dataset(items[:12], labels[:12], size, 8, training=False),
    }


# -- metrics -------------------------------------------------------------------------------------


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    matrix = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)

    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


def test_macro_f1_hand_computed_example() -> None:
    # Per class: F1(0) = 2*1/(2+2) = 0.5; F1(1) = 2*1/(1+2) = 2/3; F1(2) = 2*1/(2+1) = 2/3.
    score = macro_f1([0, 0, 1, 2, 2], [0, 1, 1, 2, 0])

    assert score == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_macro_f1_absent_class_counts_only_when_num_classes_given() -> None:
    perfect_two_classes = ([0, 1, 0, 1], [0, 1, 0, 1])

    assert macro_f1(*perfect_two_classes) == 1.0
    assert macro_f1(*perfect_two_classes, num_classes=3) == pytest.approx(2 / 3)


def test_per_class_f1_never_seen_class_scores_zero() -> None:
    scores = per_class_f1(np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0]]))

    np.testing.assert_allclose(scores, [1.0, 1.0, 0.0])


# -- configuration and augmentation ----------------------------------------------------------------


def test_training_config_defaults_are_the_original_systems() -> None:
    config = TrainingConfig()

    assert (config.batch_size, config.epochs, config.learning_rate) == (32, 100, 1e-3)
    assert (config.weight_decay, config.label_smoothing) == (1e-4, 0.1)
    assert (config.patience, config.min_delta, config.monitor) == (5, 0.005, "val_loss")
    assert (config.augment, config.rotation_degrees, config.zoom) == (True, 10.0, 0.2)


def test_training_config_unknown_monitor_raises() -> None:
    with pytest.raises(ValueError, match="monitor"):
        TrainingConfig(monitor="loss")  # type: ignore[arg-type]


def test_augment_image_same_seed_same_result_in_range() -> None:
    image = tf.random.stateless_uniform((32, 32, 1), seed=(1, 2))
    seed = tf.constant([3, 4], tf.int64)

    first = augment_image(image, seed).numpy()
    second = augment_image(image, seed).numpy()
    other = augment_image(image, tf.constant([5, 6], tf.int64)).numpy()

    np.testing.assert_array_equal(first, second)
    assert first.shape == (32, 32, 1)
    assert first.min() >= 0.0
    assert first.max() <= 1.0
    assert not np.array_equal(first, other)


def test_augment_image_without_rotation_or_zoom_only_flips() -> None:
    image = tf.random.stateless_uniform((16, 16, 1), seed=(1, 2))
    results = [
        augment_image(image, tf.constant([seed, 0], tf.int64), rotation_degrees=0.0, zoom=0.0)
        .numpy()
        .squeeze()
        for seed in range(8)
    ]
    original = image.numpy().squeeze()

    for result in results:
        is_identity = np.allclose(result, original, atol=1e-6)
        is_mirror = np.allclose(result, original[:, ::-1], atol=1e-6)
        assert is_identity or is_mirror
    assert any(np.allclose(result, original[:, ::-1], atol=1e-6) for result in results)


# -- datasets --------------------------------------------------------------------------------------


def test_make_dataset_evaluation_keeps_order_and_labels() -> None:
    items, labels = _films(7)
    dataset = make_dataset(items, labels, 16, batch_size=3, training=False)

    batches = [(int(images.shape[0]), batch.numpy().tolist()) for images, batch in dataset]

    assert [size for size, _ in batches] == [3, 3, 1]
    assert [label for _, batch in batches for label in batch] == labels


def test_make_dataset_training_reshuffles_each_epoch_and_keeps_every_item() -> None:
    items, _ = _films(12)
    dataset = make_dataset(
        items, list(range(12)), 16, batch_size=12, training=True, augment=False, seed=1
    )

    first_epoch = next(iter(dataset))[1].numpy().tolist()
    second_epoch = next(iter(dataset))[1].numpy().tolist()

    assert sorted(first_epoch) == list(range(12))
    assert sorted(second_epoch) == list(range(12))
    assert first_epoch != second_epoch


def test_make_dataset_training_augments_differently_each_epoch() -> None:
    items, labels = _films(1)
    dataset = make_dataset(items, labels, 16, batch_size=1, training=True, seed=1)

    first = next(iter(dataset))[0].numpy()
    second = next(iter(dataset))[0].numpy()

    assert not np.array_equal(first, second)


def test_make_dataset_unreadable_file_fails_unless_skipped(tmp_path: Path) -> None:
    items, labels = _films(3)
    paths = []
    for index, data in enumerate([*items, b"not an image"]):
        path = tmp_path / f"{index}.png"
        path.write_bytes(data)
        paths.append(str(path))
    labels = [*labels, 0]

    with pytest.raises(tf.errors.InvalidArgumentError):
        list(make_dataset(paths, labels, 16, 8, training=False))
    skipped = list(make_dataset(paths, labels, 16, 8, training=False, skip_unreadable=True))

    assert sum(int(images.shape[0]) for images, _ in skipped) == 3


def test_find_unreadable_names_corrupt_and_missing_files(tmp_path: Path) -> None:
    items, _ = _films(2)
    good = tmp_path / "good.png"
    good.write_bytes(items[0])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(items[1][:40])
    text = tmp_path / "text.png"
    text.write_bytes(b"hello")
    paths = [str(good), str(truncated), str(tmp_path / "missing.png"), str(text), str(good)]

    assert find_unreadable(paths) == [1, 2, 3]


def test_make_dataset_labels_of_other_length_raise() -> None:
    items, _ = _films(3)

    with pytest.raises(ValueError, match="labels"):
        make_dataset(items, [0, 1], 16, 8, training=False)


# -- training --------------------------------------------------------------------------------------


def test_train_model_history_rows_have_every_field_and_learn(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(TINY_CONFIG)
    before = [weight.copy() for weight in model.get_weights()]
    seen: list[EpochRecord] = []
    config = TrainingConfig(batch_size=8, epochs=2, patience=5)

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
    config = TrainingConfig(batch_size=8, epochs=10, patience=2, min_delta=100.0)

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
    config = TrainingConfig(batch_size=8, epochs=2, monitor="val_macro_f1")

    result = train_model(model, tiny_data["train"], tiny_data["val"], config)

    assert result.monitor == "val_macro_f1"
    assert result.best_value == max(record.val_macro_f1 for record in result.history)


def test_train_model_without_validation_runs_every_epoch(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    model = build_model(TINY_CONFIG)

    result = train_model(model, tiny_data["train"], None, TrainingConfig(epochs=2, patience=0))

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
        model, tiny_data["train"], tiny_data["val"], TrainingConfig(epochs=1), strategy=strategy
    )

    assert result.replicas == 1
    assert np.isfinite(result.history[0].loss)


def test_train_model_model_built_outside_strategy_scope_raises(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = build_model(TINY_CONFIG)

    with pytest.raises(ModelNotInStrategyScope):
        train_model(model, tiny_data["train"], None, TrainingConfig(epochs=1), strategy=strategy)


def test_predict_with_labels_returns_probabilities_in_dataset_order() -> None:
    items, labels = _films(5)
    model = build_model(TINY_CONFIG)
    dataset = make_dataset(items, labels, 16, batch_size=2, training=False)

    probabilities, returned_labels = predict_with_labels(model, dataset)
    images_only = make_dataset(items, None, 16, batch_size=2, training=False)

    assert probabilities.shape == (5, 3)
    assert returned_labels.tolist() == labels
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images_only), probabilities, atol=1e-6)


# -- two workers -----------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_train_model_two_multiworker_processes_end_with_identical_weights(
    tmp_path: Path,
) -> None:
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(2):
        environment = dict(
            os.environ,
            PYTHONPATH=str(REPOSITORY),
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(REPOSITORY / "tests" / "training_job" / "multiworker_worker.py"),
                    str(tmp_path / f"worker{index}"),
                ],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=240)
            outputs.append(output)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    finals = [np.load(tmp_path / f"worker{index}" / "final.npz") for index in range(2)]
    initial = np.load(tmp_path / "worker0" / "initial.npz")
    histories = [
        json.loads((tmp_path / f"worker{index}" / "history.json").read_text()) for index in range(2)
    ]
    assert [history["replicas"] for history in histories] == [2, 2]
    for name in finals[0].files:
        np.testing.assert_array_equal(finals[0][name], finals[1][name])
    assert any(not np.array_equal(finals[0][name], initial[name]) for name in initial.files)
    losses = [[row["loss"] for row in history["history"]] for history in histories]
    assert losses[0] == losses[1]


def test_train_model_mixed_bfloat16_model_trains_with_finite_loss(
    tiny_data: dict[str, tf.data.Dataset],
) -> None:
    model = build_model(TINY_CONFIG, dtype_policy="mixed_bfloat16")

    result = train_model(model, tiny_data["train"], tiny_data["val"], TrainingConfig(epochs=1))

    assert np.isfinite(result.history[0].loss)
    assert np.isfinite(result.history[0].val_loss)
    assert all(weight.dtype == "float32" for weight in model.weights)
