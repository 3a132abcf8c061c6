"""The original's `.hdf5` weights as a published version: built with tf-keras (Keras 2) as the
original built its model and saved with `save_weights(... .hdf5)` as it did, imported, exported,
published (not promoted) with test metrics; the exported SavedModel answers what tf-keras answers
on the same preprocessed images. Weights of another architecture publish nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from cnn_vit.preprocessing import preprocess_batch
from migration.cli import run
from model_contract.registry import ModelRegistry
from model_contract.settings import RegistrySettings
from storage import LocalStore, StorageSettings, keys
from synthetic.xrays import encode_png, generate_xray, write_covid_qu_ex_to_store
from tests.migration.original_tree import original_keras2_model

pytestmark = pytest.mark.slow

MODEL = "mlops_cnn_vit_model_weights"


@pytest.fixture(scope="module")
def original_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    model = original_keras2_model()
    path = tmp_path_factory.mktemp("original") / f"{MODEL}.hdf5"
    model.save_weights(str(path))
    return path, model


def _films() -> list[bytes]:
    return [
        encode_png(generate_xray(name, 700 + index, height=300, width=260).image)
        for index, name in enumerate(("normal", "covid", "no-covid", "covid"))
    ]


def test_migrated_weights_answer_what_the_original_model_answers(
    tmp_path: Path, original_weights: tuple[Path, Any]
) -> None:
    weights, original = original_weights
    source = LocalStore(tmp_path / "original")
    source.put(keys.legacy_weights_file(MODEL), weights.read_bytes())
    destination = LocalStore(tmp_path / "store")
    write_covid_qu_ex_to_store(destination.child(keys.DB_AREA), "b1", {"test": 2}, seed=3)
    settings = RegistrySettings(StorageSettings(url=str(tmp_path / "store")), MODEL)

    report = run(str(tmp_path / "original"), settings)

    step = report.steps["weights"]
    assert step.counts == {"published": 1}, step
    registry = ModelRegistry(destination, MODEL)
    state = registry.load()
    assert state.stable is None  # published, not promoted
    entry = state.versions[1]
    assert entry.preset == "seed"
    assert entry.extra["migrated_from"] == keys.legacy_weights_file(MODEL)
    assert "macro_f1" in entry.metrics
    assert entry.dataset_fingerprint

    served = tf.saved_model.load(str(registry.download_version(1, tmp_path / "v1")))
    films = tf.constant(_films())
    answered = served.signatures["serving_default"](image_bytes=films)["probabilities"].numpy()
    # The same preprocessing, fed in the original's 0-255 range (its model rescales by 1/255).
    expected = original(preprocess_batch(films, 256) * 255.0, training=False).numpy()
    np.testing.assert_allclose(answered, expected, atol=1e-4)
    assert served.signatures["gradcam"](image_bytes=films[:1], target_class=tf.constant([-1]))[
        "overlay_png_bytes"
    ].shape == (1,)

    again = run(str(tmp_path / "original"), settings)
    assert again.steps["weights"].counts == {"already_published": 1}
    assert sorted(registry.load().versions) == [1]


def test_weights_of_another_architecture_publish_nothing(tmp_path: Path) -> None:
    import tf_keras

    other = tf_keras.Sequential(
        [
            tf_keras.layers.Input(shape=(256, 256, 1)),
            tf_keras.layers.Conv2D(32, 3, padding="same"),
            tf_keras.layers.GlobalAveragePooling2D(),
            tf_keras.layers.Dense(3, activation="softmax"),
        ]
    )
    path = tmp_path / "other.hdf5"
    other.save_weights(str(path))
    source = LocalStore(tmp_path / "original")
    source.put(keys.legacy_weights_file(MODEL), path.read_bytes())
    settings = RegistrySettings(StorageSettings(url=str(tmp_path / "store")), MODEL)

    report = run(str(tmp_path / "original"), settings)

    step = report.steps["weights"]
    assert step.counts == {"refused": 1}
    (problem,) = step.problems
    assert "conv2d" in problem  # the file's first layer that does not fit
    assert "encoder_conv_1" in problem
    assert ModelRegistry(LocalStore(tmp_path / "store"), MODEL).load().versions == {}


def test_a_file_that_is_not_hdf5_is_refused(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "original")
    source.put(keys.legacy_weights_file(MODEL), b"not hdf5 at all")
    settings = RegistrySettings(StorageSettings(url=str(tmp_path / "store")), MODEL)

    report = run(str(tmp_path / "original"), settings, dry_run=True)

    assert report.steps["weights"].counts == {"refused": 1}
