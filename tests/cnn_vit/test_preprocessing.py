"""The shared preprocessing: decoding every supported PNG/JPEG flavour, crop, equalisation,
batch and single paths, and the training pipeline giving the very tensor the function gives."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnn_vit.preprocessing import (
    decode_grayscale,
    equalize_histogram,
    equalize_histogram_reference,
    equalized_batch,
    equalized_image_bytes,
    preprocess_batch,
    preprocess_image_bytes,
)
from synthetic.xrays import encode_png, generate_xray
from training_job.pipeline import make_dataset

SIZE = 32


def _encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def _gray_levels(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    # A smooth gradient plus noise: every format below keeps it recognisable.
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 230, width)[None, :] + np.linspace(0, 20, height)[:, None]
    return np.clip(ramp + rng.normal(0, 5, (height, width)), 0, 255).astype(np.uint8)


def test_equalize_histogram_reference_follows_opencv_formula_on_hand_example() -> None:
    # Levels 10, 10, 20, 30: cdf 2, 3, 4; cdf_min 2; span 2 -> 0, round(127.5)=128, 255.
    image = np.array([[10, 10], [20, 30]], dtype=np.uint8)

    equalized = equalize_histogram_reference(image)

    np.testing.assert_array_equal(equalized, [[0, 0], [128, 255]])


@pytest.mark.parametrize(
    "kind", ["uniform_noise", "low_contrast", "two_levels", "constant", "synthetic_xray"]
)
def test_equalize_histogram_matches_numpy_reference_within_one_level(kind: str) -> None:
    rng = np.random.default_rng(3)
    images = {
        "uniform_noise": rng.integers(0, 256, (64, 64)),
        "low_contrast": rng.integers(100, 120, (50, 70)),
        "two_levels": np.where(rng.random((30, 30)) > 0.8, 200, 40),
        "constant": np.full((16, 16), 77),
        "synthetic_xray": generate_xray("covid", 5).image,
    }
    image = np.asarray(images[kind], dtype=np.uint8)

    actual = equalize_histogram(tf.constant(image)).numpy()
    expected = equalize_histogram_reference(image)

    assert actual.dtype == np.uint8
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1


def test_equalize_histogram_spreads_low_contrast_to_full_range() -> None:
    image = np.random.default_rng(0).integers(100, 120, (40, 40)).astype(np.uint8)

    equalized = equalize_histogram(tf.constant(image)).numpy()

    assert equalized.min() == 0
    assert equalized.max() == 255


def test_decode_grayscale_16_bit_png_is_scaled_not_clipped() -> None:
    levels = _gray_levels()
    sixteen_bit = levels.astype(np.uint16) * 257  # 255 -> 65535
    data = _encode(Image.fromarray(sixteen_bit))

    decoded = decode_grayscale(tf.constant(data)).numpy()[..., 0]

    np.testing.assert_allclose(decoded, levels, atol=1e-3)


def test_preprocess_16_bit_png_keeps_detail_above_255() -> None:
    # All values above 255: clipping would flatten the image to one level.
    values = np.linspace(10_000, 60_000, 32 * 32).reshape(32, 32).astype(np.uint16)
    data = _encode(Image.fromarray(values))

    image = preprocess_image_bytes(tf.constant(data), SIZE).numpy()

    assert len(np.unique(image)) > 100
    assert image.min() == 0.0
    assert image.max() == 1.0


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_preprocess_png_in_any_mode_gives_the_gray_image_result(mode: str) -> None:
    levels = _gray_levels()
    gray = Image.fromarray(levels)
    converted = (
        Image.fromarray(levels.astype(np.uint16) * 257) if mode == "I;16" else gray.convert(mode)
    )
    expected = preprocess_image_bytes(tf.constant(_encode(gray)), SIZE).numpy()

    actual = preprocess_image_bytes(tf.constant(_encode(converted)), SIZE).numpy()

    assert actual.shape == (SIZE, SIZE, 1)
    assert actual.dtype == np.float32
    # A palette of a grey image may merge a few levels; every other mode is lossless.
    tolerance = 2 / 255 if mode == "P" else 1 / 255
    assert np.abs(actual - expected).max() <= tolerance


def test_preprocess_jpeg_and_rgb_jpeg_give_model_input() -> None:
    levels = _gray_levels()
    gray_png = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(levels))), SIZE)

    for image in (Image.fromarray(levels), Image.fromarray(levels).convert("RGB")):
        result = preprocess_image_bytes(tf.constant(_encode(image, "JPEG")), SIZE).numpy()

        assert result.shape == (SIZE, SIZE, 1)
        assert result.min() >= 0.0
        assert result.max() <= 1.0
        # Lossy, yet the same picture.
        assert np.abs(result - gray_png.numpy()).mean() < 0.05


def test_preprocess_wide_image_is_centre_cropped_to_square() -> None:
    centre = _gray_levels(40, 40)
    wide = np.full((40, 100), 255, dtype=np.uint8)
    wide[:, 30:70] = centre

    from_wide = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(wide))), SIZE)
    from_centre = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(centre))), SIZE)

    np.testing.assert_array_equal(from_wide.numpy(), from_centre.numpy())


def test_preprocess_tall_image_is_centre_cropped_to_square() -> None:
    centre = _gray_levels(40, 40)
    tall = np.zeros((90, 40), dtype=np.uint8)
    tall[25:65, :] = centre

    from_tall = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(tall))), SIZE)
    from_centre = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(centre))), SIZE)

    np.testing.assert_array_equal(from_tall.numpy(), from_centre.numpy())


def test_equalized_image_bytes_is_model_input_times_255() -> None:
    data = tf.constant(encode_png(generate_xray("no-covid", 2).image))

    equalized = equalized_image_bytes(data, SIZE).numpy()
    model_input = preprocess_image_bytes(data, SIZE).numpy()

    assert equalized.dtype == np.uint8
    assert equalized.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(np.rint(model_input[..., 0] * 255).astype(np.uint8), equalized)


def test_preprocess_batch_in_tf_function_with_unknown_batch_equals_single_calls() -> None:
    encoded = [encode_png(generate_xray(name, 7).image) for name in ("normal", "covid")]
    encoded.append(_encode(Image.fromarray(_gray_levels()).convert("RGBA")))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return preprocess_batch(image_bytes, SIZE), equalized_batch(image_bytes, SIZE)

    batch, equalized = serve(tf.constant(encoded))

    assert batch.shape == (3, SIZE, SIZE, 1)
    for index, data in enumerate(encoded):
        single = preprocess_image_bytes(tf.constant(data), SIZE).numpy()
        np.testing.assert_array_equal(batch.numpy()[index], single)
        np.testing.assert_array_equal(
            equalized.numpy()[index], equalized_image_bytes(tf.constant(data), SIZE).numpy()
        )


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\ntruncated"])
def test_preprocess_invalid_bytes_raise_tensorflow_error(data: bytes) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess_image_bytes(tf.constant(data), SIZE)


def test_training_pipeline_tensor_equals_direct_call_for_same_file(tmp_path: Path) -> None:
    # Train/serve parity on the training side: the pipeline (files read by tf.data, parallel
    # map, cache) yields exactly what the exported signatures' function yields.
    paths = []
    for index, name in enumerate(("normal", "covid", "no-covid")):
        path = tmp_path / f"{name}.png"
        path.write_bytes(encode_png(generate_xray(name, index).image))
        paths.append(path)
    jpeg_path = tmp_path / "rgb.jpg"
    jpeg_path.write_bytes(_encode(Image.fromarray(_gray_levels()).convert("RGB"), "JPEG"))
    paths.append(jpeg_path)

    dataset = make_dataset(
        [str(path) for path in paths], [0, 1, 2, 0], SIZE, batch_size=3, training=False
    )
    pipeline_images = np.concatenate([images.numpy() for images, _ in dataset])

    for index, path in enumerate(paths):
        direct = preprocess_image_bytes(tf.constant(path.read_bytes()), SIZE).numpy()
        np.testing.assert_array_equal(pipeline_images[index], direct)


def test_preprocess_image_already_at_model_size_is_only_equalized() -> None:
    levels = np.random.default_rng(4).integers(30, 200, (SIZE, SIZE)).astype(np.uint8)

    image = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(levels))), SIZE).numpy()

    expected = equalize_histogram_reference(levels)
    assert np.abs(np.rint(image[..., 0] * 255) - expected).max() <= 1
