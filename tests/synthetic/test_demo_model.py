"""The demo model: the small preset learns synthetic X-rays in a short CPU training."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cnn_vit.config import CLASS_NAMES, get_preset
from cnn_vit.preprocessing import preprocess_batch
from synthetic.xrays import encode_png, generate_xray
from training_job.training_loop import HISTORY_FIELDS


def test_train_demo_model_small_preset_reaches_macro_f1_0_9_on_held_out_split(
    demo_model: tuple[keras.Model, dict[str, Any]],
) -> None:
    _, metrics = demo_model

    assert metrics["macro_f1"] >= 0.9
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == 3 * metrics["counts"]["test"]


def test_train_demo_model_reports_history_and_run_facts(
    demo_model: tuple[keras.Model, dict[str, Any]],
) -> None:
    _, metrics = demo_model

    assert metrics["preset"] == "small"
    assert metrics["seed"] == 0
    assert 1 <= metrics["best_epoch"] <= metrics["epochs"] == len(metrics["history"])
    assert tuple(metrics["history"][0]) == HISTORY_FIELDS


def test_train_demo_model_classifies_fresh_films_from_encoded_bytes(
    demo_model: tuple[keras.Model, dict[str, Any]],
) -> None:
    # Films from a seed the demo never used, through the serving-side batch preprocessing.
    model, _ = demo_model
    size = get_preset("small").image_size
    encoded, labels = [], []
    for class_index, class_name in enumerate(CLASS_NAMES):
        for index in range(10):
            film = generate_xray(class_name, np.random.default_rng([987, class_index, index]))
            encoded.append(encode_png(film.image))
            labels.append(class_index)

    images = preprocess_batch(tf.constant(encoded), size)
    predicted = model(images, training=False).numpy().argmax(axis=1)

    assert np.mean(predicted == np.array(labels)) >= 0.85
