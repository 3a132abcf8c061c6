"""The shared preprocessing: decoding every supported PNG/JPEG flavour, crop, equalisation,
batch and single paths, and the training pipeline giving the very tensor the function gives.
16-bit PNGs are equalised on their full depth (10-, 12- and 16-bit films keep their levels), and
8-bit images give what they always gave."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnn_vit.preprocessing import (
    GRAY_LEVELS,
    WIDE_GRAY_LEVELS,
    decode_grayscale,
    decode_levels,
    equalize_histogram,
    equalize_histogram_reference,
    equalized_batch,
    equalized_image_bytes,
    input_gray_levels,
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


def _png16(samples: np.ndarray, *, sbit: int | None = None) -> bytes:
    """A 16-bit PNG of uint16 samples: [H, W] grey, or [H, W, C] with C = 2 grey+alpha, 3 RGB,
    4 RGBA (Pillow writes only 16-bit grey), with an sBIT chunk when `sbit` is given."""
    array = np.asarray(samples, dtype=np.uint16)
    if array.ndim == 2:
        array = array[..., np.newaxis]
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = array.astype(">u2").reshape(height, width * channels)
    scanlines = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 (none)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    significant = b"" if sbit is None else chunk(b"sBIT", bytes([sbit] * channels))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + significant
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def _film(bits: int, side: int, seed: int = 0) -> np.ndarray:
    """A chest-like film digitised at `bits` bits, stored as the raw integers (as DICOM exports
    do): body, two darker lung fields, ribs, noise, using about half of the detector's range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    body = np.exp(-((((x - 0.5) / 0.45) ** 2 + ((y - 0.55) / 0.5) ** 2) ** 2))
    lungs = sum(
        np.exp(-((((x - cx) / 0.15) ** 2 + ((y - 0.45) / 0.25) ** 2) ** 2)) for cx in (0.3, 0.7)
    )
    ribs = 0.5 + 0.5 * np.sin(y * 40.0 + 3.0 * (x - 0.5) ** 2)
    density = 0.1 + 0.4 * body - 0.15 * lungs + 0.03 * ribs * lungs
    density += rng.normal(0.0, 0.004, density.shape)
    top = 2**bits - 1
    return np.clip(np.rint(density * top), 0, top).astype(np.uint8 if bits == 8 else np.uint16)


def _distinct(image: np.ndarray) -> int:
    return len(np.unique(image))


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


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P"])
def test_preprocess_png_in_any_mode_gives_the_gray_image_result(mode: str) -> None:
    levels = _gray_levels()
    gray = Image.fromarray(levels)
    converted = gray.convert(mode)
    expected = preprocess_image_bytes(tf.constant(_encode(gray)), SIZE).numpy()

    actual = preprocess_image_bytes(tf.constant(_encode(converted)), SIZE).numpy()

    assert actual.shape == (SIZE, SIZE, 1)
    assert actual.dtype == np.float32
    # A palette of a grey image may merge a few levels; every other mode is lossless.
    tolerance = 2 / 255 if mode == "P" else 1 / 255
    assert np.abs(actual - expected).max() <= tolerance


def test_16_bit_copy_of_8_bit_image_gives_its_result_at_model_size_and_finer_when_resized() -> None:
    # v * 257: the 8-bit image in a 16-bit file. Not resized, equalisation sees the same order
    # of levels, so the same tensor. Resized, the 16-bit path rounds the resize's in-between
    # values to 16-bit levels, where the 8-bit path merged them into 256: equalisation then
    # spreads a crowded 8-bit level over the output levels it covers. The same picture, finer.
    levels = generate_xray("covid", 1).image
    square = levels[:SIZE, :SIZE]

    def both(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eight = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(image))), SIZE)
        sixteen = preprocess_image_bytes(tf.constant(_png16(image.astype(np.uint16) * 257)), SIZE)
        return eight.numpy(), sixteen.numpy()

    eight, sixteen = both(square)
    np.testing.assert_array_equal(sixteen, eight)

    eight, sixteen = both(levels)
    assert not np.array_equal(sixteen, eight)
    assert np.abs(sixteen - eight).mean() < 3 / 255
    assert _distinct(sixteen) >= _distinct(eight)


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
    encoded.append(_png16(_film(12, 40)))  # 8- and 16-bit in one batch

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return preprocess_batch(image_bytes, SIZE), equalized_batch(image_bytes, SIZE)

    batch, equalized = serve(tf.constant(encoded))

    assert batch.shape == (4, SIZE, SIZE, 1)
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
    for bits in (12, 16):
        path = tmp_path / f"film-{bits}.png"
        path.write_bytes(_png16(_film(bits, 48, seed=bits)))
        paths.append(path)

    dataset = make_dataset(
        [str(path) for path in paths], [0, 1, 2, 0, 1, 2], SIZE, batch_size=3, training=False
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


def test_preprocess_8_bit_image_at_model_size_is_exactly_the_8_bit_reference() -> None:
    levels = generate_xray("no-covid", 3).image[:SIZE, :SIZE]

    equalized = equalized_image_bytes(tf.constant(_encode(Image.fromarray(levels))), SIZE)

    np.testing.assert_array_equal(equalized.numpy(), equalize_histogram_reference(levels))


# -- 16-bit PNGs: equalised on their full depth ---------------------------------------------------


def test_input_gray_levels_is_wide_for_16_bit_png_only() -> None:
    levels = _gray_levels()
    wide = levels.astype(np.uint16) * 257
    sixteen_bit = {
        "gray": _png16(wide),
        "gray+alpha": _png16(np.stack([wide, np.full_like(wide, 65535)], axis=-1)),
        "rgb": _png16(np.stack([wide] * 3, axis=-1)),
        "rgba": _png16(np.stack([wide] * 3 + [np.full_like(wide, 65535)], axis=-1)),
        "pillow I;16": _encode(Image.fromarray(wide)),
    }
    gray = Image.fromarray(levels)
    eight_bit_or_less = {
        "L": _encode(gray),
        "RGB": _encode(gray.convert("RGB")),
        "P": _encode(gray.convert("P")),
        "1-bit": _encode(gray.convert("1")),
        "JPEG": _encode(gray, "JPEG"),
        "RGB JPEG": _encode(gray.convert("RGB"), "JPEG"),
        "not an image": b"not an image",
        "empty": b"",
    }

    for name, data in sixteen_bit.items():
        assert input_gray_levels(tf.constant(data)).numpy() == WIDE_GRAY_LEVELS, name
    for name, data in eight_bit_or_less.items():
        assert input_gray_levels(tf.constant(data)).numpy() == GRAY_LEVELS, name


def test_decode_levels_keeps_16_bit_values_exactly() -> None:
    film = _film(16, 40)

    gray, gray_levels = decode_levels(tf.constant(_png16(film)))

    assert gray_levels.numpy() == WIDE_GRAY_LEVELS
    np.testing.assert_array_equal(np.rint(gray.numpy()[..., 0]).astype(np.uint16), film)


@pytest.mark.parametrize(
    "kind", ["full_range", "twelve_bit", "narrow_window", "two_levels", "constant", "film"]
)
def test_equalize_histogram_on_65536_levels_matches_numpy_reference(kind: str) -> None:
    rng = np.random.default_rng(5)
    images = {
        "full_range": rng.integers(0, 65536, (64, 64)),
        "twelve_bit": rng.integers(0, 4096, (50, 70)),
        "narrow_window": rng.integers(1000, 1501, (40, 40)),
        "two_levels": np.where(rng.random((30, 30)) > 0.8, 40000, 300),
        "constant": np.full((16, 16), 51400),  # 51400 * 255 / 65535 = 200
        "film": _film(16, 48),
    }
    image = np.asarray(images[kind], dtype=np.uint16)

    actual = equalize_histogram(tf.constant(image.astype(np.int32)), WIDE_GRAY_LEVELS).numpy()

    assert actual.dtype == np.uint8
    np.testing.assert_array_equal(actual, equalize_histogram_reference(image))


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_10_12_16_bit_films_keep_their_levels_through_equalisation(bits: int) -> None:
    film = _film(bits, SIZE * 2)
    occupied = _distinct(film)

    image = preprocess_image_bytes(tf.constant(_png16(film)), SIZE * 2).numpy()

    # Equalised on the film's own levels: what the NumPy reference gives on the uint16 image,
    # its occupied levels (hundreds to thousands) spread over the 256 output levels...
    expected = equalize_histogram_reference(film)
    np.testing.assert_array_equal(np.rint(image[..., 0] * 255).astype(np.uint8), expected)
    assert occupied > 256
    assert _distinct(image) > 200
    assert image.min() == 0.0
    assert image.max() == 1.0
    # ...where scaling 65535 -> 255 first, as before, left a handful: the 8-bit version of the
    # same file (divided by 257) has them, and no longer gives the same tensor.
    as_8_bit = np.rint(film / 257).astype(np.uint8)
    crushed = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(as_8_bit))), SIZE * 2)
    assert not np.array_equal(image, crushed.numpy())
    if bits < 16:
        assert _distinct(as_8_bit) <= 2 ** (bits - 8) + 1
        assert _distinct(crushed.numpy()) <= 2 ** (bits - 8) + 1


def test_12_bit_gradient_in_16_bits_keeps_4096_levels_up_to_the_256_output_levels() -> None:
    # 4096 levels, 16 pixels each: before, 17 grey levels reached the model.
    gradient = np.tile(np.arange(4096, dtype=np.uint16), 16).reshape(256, 256)

    image = preprocess_image_bytes(tf.constant(_png16(gradient)), 256).numpy()[..., 0]
    as_8_bit = np.rint(gradient / 257).astype(np.uint8)
    crushed = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(as_8_bit))), 256)

    assert _distinct(crushed.numpy()) == 17
    assert _distinct(image) == 256
    # A uniform histogram equalises to a ramp: 16 consecutive input levels per output level.
    levels = np.rint(image * 255).astype(int).reshape(-1)
    assert np.all(np.diff(levels[:4096]) >= 0)
    counts = np.bincount(levels, minlength=256)
    assert counts.min() > 0
    assert counts.max() <= 2 * 16 * 16


def test_narrow_16_bit_range_gives_what_8_bit_film_with_the_same_levels_gives() -> None:
    # An 8-bit film's levels recoded into 1000-1800 of 65535 by a strictly increasing, uneven
    # table: equalisation depends only on the order of the levels, so the same tensor. Scaled
    # 65535 -> 255 first, as before, these 16-bit values were 4 grey levels.
    levels = generate_xray("covid", 4).image[:64, :64]
    table = 1000 + np.cumsum(np.random.default_rng(0).integers(1, 6, 256))
    wide = table[levels].astype(np.uint16)
    assert wide.max() < 1800

    eight = preprocess_image_bytes(tf.constant(_encode(Image.fromarray(levels))), 64).numpy()
    sixteen = preprocess_image_bytes(tf.constant(_png16(wide)), 64).numpy()

    np.testing.assert_array_equal(sixteen, eight)
    assert _distinct(sixteen) == _distinct(eight) > 100


@pytest.mark.parametrize("bits", [10, 12])
def test_significant_bits_scaling_does_not_change_the_result(bits: int) -> None:
    # sBIT is not read: the same film stored raw, left-shifted or bit-replicated to 16 bits
    # (with its sBIT chunk), or offset, has the same order of levels, hence the same output at
    # the model's size. Resized, the levels are rounded after the resize on each file's own
    # scale, finer for the larger scales (more of the resize's in-between values survive), so
    # a pixel may move by an output level or two.
    shift = 16 - bits

    def stored(film: np.ndarray) -> dict[str, bytes]:
        wide = film.astype(np.uint32)
        return {
            "shifted, sBIT": _png16(wide << shift, sbit=bits),
            "replicated, sBIT": _png16((wide << shift) | (wide >> (bits - shift)), sbit=bits),
            "offset": _png16(wide + 20_000),
        }

    film = _film(bits, SIZE, seed=1)
    raw = preprocess_image_bytes(tf.constant(_png16(film)), SIZE).numpy()
    for name, data in stored(film).items():
        np.testing.assert_array_equal(preprocess_image_bytes(tf.constant(data), SIZE), raw, name)

    film = _film(bits, SIZE * 3, seed=2)
    raw = preprocess_image_bytes(tf.constant(_png16(film)), SIZE).numpy()
    for name, data in stored(film).items():
        difference = np.abs(preprocess_image_bytes(tf.constant(data), SIZE).numpy() - raw)
        assert difference.max() <= 2 / 255 + 1e-7, name
        assert difference.mean() < 0.5 / 255, name


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_gray_alpha_rgb_rgba_give_the_16_bit_gray_result(channels: int) -> None:
    film = _film(12, 48, seed=3)
    planes = [film] * min(channels, 3) if channels >= 3 else [film]
    if channels in (2, 4):
        planes.append(np.full_like(film, 65535))
    expected = preprocess_image_bytes(tf.constant(_png16(film)), SIZE).numpy()

    actual = preprocess_image_bytes(tf.constant(_png16(np.stack(planes, axis=-1))), SIZE)

    # Luma of equal R, G, B is the grey value up to float rounding: at most one level apart.
    assert np.abs(actual.numpy() - expected).max() <= 1 / 255 + 1e-7


def test_saved_model_serves_16_bit_films_as_eager_preprocessing(tmp_path: Path) -> None:
    # What the exported signatures run: preprocess_batch in a SavedModel, reloaded.
    module = tf.Module()
    module.serve = tf.function(  # type: ignore[attr-defined]
        lambda image_bytes: preprocess_batch(image_bytes, SIZE),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "model"))
    served = tf.saved_model.load(str(tmp_path / "model"))
    encoded = [
        _png16(_film(10, 40)),
        _png16(_film(16, 50, seed=1), sbit=16),
        encode_png(generate_xray("normal", 1).image),
    ]

    batch = served.serve(tf.constant(encoded)).numpy()

    for index, data in enumerate(encoded):
        direct = preprocess_image_bytes(tf.constant(data), SIZE).numpy()
        np.testing.assert_array_equal(batch[index], direct)
