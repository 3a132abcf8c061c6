"""The CNN-ViT: size of the seed preset, layer names, dtypes, .keras round trip, bf16 twin."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

import cnn_vit.model as model_module
from cnn_vit.config import CLASS_NAMES, PRESETS, get_preset
from cnn_vit.model import PatchEncoder, PatchTokens, build_model
from tests.training_job.tiny import TINY_CONFIG


def _images(size: int, count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, size, size, 1), dtype=np.float32)


def test_build_model_seed_preset_has_about_5_36_million_parameters() -> None:
    model = build_model(get_preset("seed"))

    assert 5_300_000 <= model.count_params() <= 5_420_000
    assert model.input_shape == (None, 256, 256, 1)
    assert model.output_shape == (None, len(CLASS_NAMES))


def test_build_model_seed_preset_ends_encoder_on_8x8x64_tokens() -> None:
    model = build_model(get_preset("seed"))

    assert model.get_layer("encoder_pool_5").output.shape[1:] == (8, 8, 64)
    assert model.get_layer("patch_tokens").output.shape[1:] == (64, 64)
    assert model.get_layer("patch_encoder").output.shape[1:] == (64, 64)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_build_model_encoder_layers_are_named_for_gradcam(preset: str) -> None:
    config = get_preset(preset)
    model = build_model(config)
    names = {layer.name for layer in model.layers}

    for block in range(1, len(config.encoder_filters) + 1):
        assert f"encoder_conv_{block}" in names
        assert f"encoder_pool_{block}" in names
    assert config.gradcam_layer in names


@pytest.mark.parametrize("dtype_policy", ["float32", "mixed_bfloat16", "bfloat16"])
def test_build_model_any_policy_outputs_float32_probabilities(dtype_policy: str) -> None:
    model = build_model(get_preset("small"), dtype_policy=dtype_policy)

    probabilities = model(_images(64), training=False)

    assert probabilities.dtype.name == "float32"
    np.testing.assert_allclose(np.sum(probabilities.numpy(), axis=1), 1.0, atol=1e-5)
    assert np.all(probabilities.numpy() >= 0)


def test_build_model_mixed_bfloat16_twin_takes_float32_weights_and_agrees() -> None:
    keras.utils.set_random_seed(1)
    float32_model = build_model(get_preset("small"))
    bf16_model = build_model(get_preset("small"), dtype_policy="mixed_bfloat16")

    bf16_model.set_weights(float32_model.get_weights())
    images = _images(64, count=8)
    expected = float32_model(images, training=False).numpy()
    actual = bf16_model(images, training=False).numpy()

    assert bf16_model.get_layer("encoder_conv_1").compute_dtype == "bfloat16"
    assert all(weight.dtype == "float32" for weight in bf16_model.weights)
    np.testing.assert_allclose(actual, expected, atol=0.02)


def test_build_model_bfloat16_serving_twin_is_bit_identical_to_mixed_in_half_the_bytes() -> None:
    keras.utils.set_random_seed(2)
    float32_model = build_model(get_preset("small"))
    mixed = build_model(get_preset("small"), dtype_policy="mixed_bfloat16")
    serving = build_model(get_preset("small"), dtype_policy="bfloat16")
    mixed.set_weights(float32_model.get_weights())
    serving.set_weights(float32_model.get_weights())
    images = _images(64, count=8)

    np.testing.assert_array_equal(
        serving(images, training=False).numpy(), mixed(images, training=False).numpy()
    )
    dtypes = {weight.path: weight.dtype for weight in serving.weights}
    assert {dtype for path, dtype in dtypes.items() if not path.startswith("probabilities")} == {
        "bfloat16"
    }
    assert {dtype for path, dtype in dtypes.items() if path.startswith("probabilities")} == {
        "float32"
    }


def test_build_model_unknown_dtype_policy_raises() -> None:
    with pytest.raises(ValueError, match="dtype_policy"):
        build_model(TINY_CONFIG, dtype_policy="float16")


def test_build_model_image_size_not_divisible_by_pooling_raises() -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_model(TINY_CONFIG.replace(image_size=18))


def test_model_saved_as_keras_file_reloads_with_identical_predictions(tmp_path: Path) -> None:
    model = build_model(get_preset("small"))
    images = _images(64)
    expected = model(images, training=False).numpy()
    path = tmp_path / "model.keras"

    model.save(path)
    reloaded = keras.models.load_model(path)

    np.testing.assert_array_equal(reloaded(images, training=False).numpy(), expected)
    assert isinstance(reloaded.get_layer("patch_encoder"), PatchEncoder)


def test_patch_encoder_config_round_trips_every_constructor_argument() -> None:
    layer = PatchEncoder(num_patches=16, projection_dim=24, name="encoder")

    clone = PatchEncoder.from_config(layer.get_config())

    assert (clone.num_patches, clone.projection_dim, clone.name) == (16, 24, "encoder")


def test_patch_tokens_patch_size_two_groups_each_2x2_neighbourhood() -> None:
    feature_map = np.arange(4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 2)

    tokens = PatchTokens(2)(feature_map).numpy()

    assert tokens.shape == (1, 4, 8)
    # First token: rows 0-1, columns 0-1, both channels, row-major.
    np.testing.assert_array_equal(tokens[0, 0], feature_map[0, :2, :2, :].reshape(-1))
    np.testing.assert_array_equal(tokens[0, 3], feature_map[0, 2:, 2:, :].reshape(-1))
    assert PatchTokens.from_config(PatchTokens(2).get_config()).patch_size == 2


def test_model_module_imports_no_tensorflow() -> None:
    # DESIGN decision 10: the model definition is backend-agnostic Keras 3.
    tree = ast.parse(Path(model_module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }

    assert "tensorflow" not in imported
    assert "keras" in imported
