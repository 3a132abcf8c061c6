"""The image preprocessing shared by training and serving: one in-graph function, two callers.

`preprocess_image_bytes` turns encoded PNG or JPEG bytes into the model's input: decode (8- or
16-bit; gray, gray+alpha, RGB, RGBA or palette), grayscale, centre crop to a square, resize,
histogram equalisation (OpenCV's `equalizeHist` formula), float in [0, 1]. The training pipeline
maps it over files; the exported SavedModel signatures call `preprocess_batch` on request bytes,
so a served model sees exactly the tensors it was trained on (DESIGN.md decision 2).

Bit depth. A 16-bit PNG (IHDR bit depth 16, read in-graph from the bytes) is equalised on its
full depth: its grey values stay in [0, 65535] through crop and resize, are rounded to 16-bit
levels and equalised on a histogram with one bin per 16-bit level (over the image's own range)
into the same 256 output levels. So a film whose values occupy a narrow part of the 16-bit
range (12 bits stored as 0-4095, or 1000-1500) keeps its levels apart instead of being crushed
to a handful by an 8-bit quantisation first. Every other input (8-bit or less PNG, palette,
JPEG, which is 8-bit) takes the 8-bit path, unchanged: 256 levels, bit for bit what earlier
versions computed, so models trained on 8-bit films answer as before.

The PNG `sBIT` chunk (significant bits) is not read, on purpose. The OpenCV formula maps a pixel
by the count of pixels at or below its level, so it depends only on the order of the levels: any
strictly increasing recoding of the stored values (sBIT's left shift or bit replication, no
scaling at all, an offset) gives the very same output. With a resize in between, the resize is
linear and the levels are rounded after it, on the stored 16-bit scale, which is never coarser
than the significant-bit scale. sBIT would only matter to a fixed scale (it did when 16 bits
were divided by 257) and to a single-level image, which is left unequalised (v * 255 / 65535).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

__all__ = [
    "GRAY_LEVELS",
    "WIDE_GRAY_LEVELS",
    "decode_grayscale",
    "decode_levels",
    "equalize_histogram",
    "equalize_histogram_reference",
    "equalized_batch",
    "equalized_image_bytes",
    "input_gray_levels",
    "preprocess_batch",
    "preprocess_image_bytes",
]

GRAY_LEVELS = 256  # of the equalised output, and of every input but a 16-bit PNG
WIDE_GRAY_LEVELS = 65536  # of a 16-bit PNG, equalised on its full depth
_INVERSE_MAX_LEVEL = 1.0 / (GRAY_LEVELS - 1)

# A PNG starts with its signature, then the IHDR chunk: length (4 bytes), type, width (4),
# height (4), bit depth (1), colour type (1)...
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_BYTES = 26
_PNG_BIT_DEPTH_OFFSET = 24

# ITU-R BT.601 luma weights, as Pillow's "L" conversion uses; they sum to exactly 1, so a grey
# image stored as RGB decodes to its own grey values.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def input_gray_levels(image_bytes: tf.Tensor) -> tf.Tensor:
    """int32 scalar: 65536 for a 16-bit PNG (IHDR bit depth 16), 256 for anything else.

    Reads the first 26 bytes only; bytes that are not a PNG (JPEG, garbage) give 256 and are
    left to the decoder to accept or refuse.
    """
    header = tf.io.decode_raw(tf.strings.substr(image_bytes, 0, _PNG_HEADER_BYTES), tf.uint8)
    header = tf.pad(header, [[0, _PNG_HEADER_BYTES - tf.size(header)]])
    signature = tf.constant(list(_PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR"), dtype=tf.uint8)
    is_png = tf.reduce_all(tf.equal(header[:16], signature))
    sixteen_bit = tf.logical_and(is_png, tf.equal(header[_PNG_BIT_DEPTH_OFFSET], 16))
    return tf.where(sixteen_bit, WIDE_GRAY_LEVELS, GRAY_LEVELS)


def decode_levels(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decode PNG or JPEG bytes to float32 [H, W, 1] grey values in [0, L - 1], and L.

    L (int32 scalar) is `input_gray_levels`: 65536 for a 16-bit PNG, whose values come out on
    their own 16-bit scale, 256 for every other image. Alpha is dropped (X-rays carry no
    meaningful transparency). Invalid bytes raise `tf.errors.InvalidArgumentError`.
    """
    gray_levels = input_gray_levels(image_bytes)
    # dtype=float32 makes decode_image read PNGs at 16-bit precision and scale every format to
    # [0, 1]; multiplied back by L - 1 (exact after rounding: float32 carries 24 bits).
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.float32, expand_animations=False)
    channels = tf.shape(image)[-1]

    def _luma() -> tf.Tensor:
        weights = tf.constant(_LUMA_WEIGHTS, dtype=tf.float32)
        return tf.reduce_sum(image[..., :3] * weights, axis=-1, keepdims=True)

    def _first_channel() -> tf.Tensor:
        return image[..., :1]

    gray = tf.cond(channels >= 3, _luma, _first_channel)
    max_level = tf.cast(gray_levels - 1, tf.float32)
    return tf.clip_by_value(gray * max_level, 0.0, max_level), gray_levels


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode PNG or JPEG bytes to float32 [H, W, 1] grey values in [0, 255].

    16-bit images are scaled (65535 -> 255), never clipped (for display and checks; the model's
    preprocessing equalises them on their full depth, see `decode_levels`). Alpha is dropped.
    Invalid bytes raise `tf.errors.InvalidArgumentError`.
    """
    gray, gray_levels = decode_levels(image_bytes)
    return gray * ((GRAY_LEVELS - 1) / tf.cast(gray_levels - 1, tf.float32))


def _center_crop_square(image: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top : top + side, left : left + side, :]


def equalize_histogram(levels: tf.Tensor, gray_levels: int | tf.Tensor = GRAY_LEVELS) -> tf.Tensor:
    """Histogram equalisation of an integer image of any shape, in-graph, to uint8 levels.

    `levels` holds values in [0, gray_levels - 1] (uint8 for the default 256; int32 or uint16
    with 65536 for a 16-bit image). OpenCV's `equalizeHist` on the full depth: with `cdf` the
    cumulative histogram and `cdf_min` the count of the darkest present level, level v maps to
    round((cdf[v] - cdf_min) * 255 / (pixels - cdf_min)); a constant image is only rescaled to
    8 bits (round(v * 255 / (gray_levels - 1)), so with 256 levels it is left as is).

    The histogram spans only the image's own range [min, max] (one bin per level of the input's
    depth; empty bins outside it change no cdf value that is looked up), so a 12-bit film in a
    16-bit file costs 4096 bins, not 65536.
    """
    flat = tf.reshape(tf.cast(levels, tf.int32), [-1])
    darkest = tf.reduce_min(flat)
    offsets = flat - darkest
    bins = tf.reduce_max(offsets) + 1
    histogram = tf.math.bincount(offsets, minlength=bins, maxlength=bins)
    cdf = tf.cast(tf.cumsum(histogram), tf.float32)
    pixels = tf.cast(tf.size(flat), tf.float32)
    cdf_min = cdf[0]
    span = pixels - cdf_min
    lookup = tf.round((cdf - cdf_min) * (GRAY_LEVELS - 1) / tf.maximum(span, 1.0))
    lookup = tf.clip_by_value(lookup, 0.0, GRAY_LEVELS - 1.0)
    # 255 / 255 is exactly 1: with 256 levels a constant image keeps its value.
    to_8_bit = (GRAY_LEVELS - 1) / tf.cast(tf.convert_to_tensor(gray_levels) - 1, tf.float32)
    constant = tf.round(tf.cast(darkest, tf.float32) * to_8_bit)
    lookup = tf.where(span > 0, lookup, constant)
    equalized = tf.gather(tf.cast(lookup, tf.uint8), offsets)
    return tf.reshape(equalized, tf.shape(levels))


def equalized_image_bytes(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """The equalised uint8 image [S, S] the model sees (scaled by 1/255): for Grad-CAM overlays.

    `preprocess_image_bytes(b, S)[..., 0] * 255`, rounded, gives the same values.
    """
    gray, gray_levels = decode_levels(image_bytes)
    square = _center_crop_square(gray)

    def _resize() -> tf.Tensor:
        # Antialiasing matters: X-rays often arrive at 1000+ px and are shrunk 4-16 fold.
        return tf.image.resize(square, (image_size, image_size), antialias=True)

    def _keep() -> tf.Tensor:
        return tf.reshape(square, (image_size, image_size, 1))

    # Images already at the model's size (COVID-QU-Ex is 256 px, as the seed preset) skip the
    # resize: it is the most expensive step of the pipeline and would only blur them.
    resized = tf.cond(tf.shape(square)[0] == image_size, _keep, _resize)
    # Levels on the input's own depth: a 16-bit image is equalised on 65536 bins, not first
    # quantised to 256 (which crushed a 12-bit range to 17 levels).
    max_level = tf.cast(gray_levels - 1, tf.float32)
    levels = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, max_level)), tf.int32)
    equalized = equalize_histogram(levels[..., 0], gray_levels)
    return tf.ensure_shape(equalized, (image_size, image_size))


def preprocess_image_bytes(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded image bytes (scalar string) -> model input float32 [S, S, 1] in [0, 1]."""
    equalized = equalized_image_bytes(image_bytes, image_size)
    # Multiply by the reciprocal rather than divide: graph optimisation rewrites a division by a
    # constant into this multiplication, so eager and graph calls (tf.data, SavedModel) would
    # otherwise differ in the last bit.
    image = tf.cast(equalized, tf.float32)[..., tf.newaxis] * _INVERSE_MAX_LEVEL
    return tf.ensure_shape(image, (image_size, image_size, 1))


def preprocess_batch(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images (string [B]) -> float32 [B, S, S, 1]; B may be unknown."""
    return tf.map_fn(
        lambda item: preprocess_image_bytes(item, image_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec((image_size, image_size, 1), tf.float32),
    )


def equalized_batch(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """A batch of encoded images (string [B]) -> the equalised uint8 images [B, S, S]."""
    return tf.map_fn(
        lambda item: equalized_image_bytes(item, image_size),
        image_bytes,
        fn_output_signature=tf.TensorSpec((image_size, image_size), tf.uint8),
    )


def equalize_histogram_reference(
    image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
) -> npt.NDArray[np.uint8]:
    """NumPy reference of `equalize_histogram` (OpenCV `equalizeHist`), for tests and tools.

    A uint8 image is equalised on 256 bins, a uint16 one on 65536 (as `equalize_histogram` with
    `WIDE_GRAY_LEVELS`); the result has 256 levels either way.
    """
    levels = np.asarray(image)
    if levels.dtype == np.uint8:
        gray_levels = GRAY_LEVELS
    elif levels.dtype == np.uint16:
        gray_levels = WIDE_GRAY_LEVELS
    else:
        raise TypeError("equalize_histogram_reference expects a uint8 or uint16 image")
    histogram = np.bincount(levels.ravel(), minlength=gray_levels)
    cdf = np.cumsum(histogram)
    cdf_min = cdf[levels.min()]
    span = levels.size - cdf_min
    if span == 0:
        scale = (GRAY_LEVELS - 1) / (gray_levels - 1)
        return np.rint(levels.astype(np.float64) * scale).astype(np.uint8)
    lookup = np.clip(np.rint((cdf - cdf_min) * (GRAY_LEVELS - 1) / span), 0, GRAY_LEVELS - 1)
    return lookup.astype(np.uint8)[levels]
