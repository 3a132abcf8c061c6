"""The image preprocessing shared by training and serving: one in-graph function, two callers.

`preprocess_image_bytes` turns encoded PNG or JPEG bytes into the model's input: decode (8- or
16-bit; gray, gray+alpha, RGB, RGBA or palette), grayscale, centre crop to a square, resize,
histogram equalisation (OpenCV's `equalizeHist` formula), float in [0, 1]. The training pipeline
maps it over files; the exported SavedModel signatures call `preprocess_batch` on request bytes,
so a served model sees exactly the tensors it was trained on (DESIGN.md decision 2).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import tensorflow as tf

__all__ = [
    "GRAY_LEVELS",
    "decode_grayscale",
    "equalize_histogram",
    "equalize_histogram_reference",
    "equalized_batch",
    "equalized_image_bytes",
    "preprocess_batch",
    "preprocess_image_bytes",
]

GRAY_LEVELS = 256
_INVERSE_MAX_LEVEL = 1.0 / (GRAY_LEVELS - 1)

# ITU-R BT.601 luma weights, as Pillow's "L" conversion uses; they sum to exactly 1, so a grey
# image stored as RGB decodes to its own grey values.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def decode_grayscale(image_bytes: tf.Tensor) -> tf.Tensor:
    """Decode PNG or JPEG bytes to float32 [H, W, 1] grey values in [0, 255].

    16-bit images are scaled (65535 -> 255), never clipped. Alpha is dropped (X-rays carry no
    meaningful transparency). Invalid bytes raise `tf.errors.InvalidArgumentError`.
    """
    # dtype=float32 makes decode_image read PNGs at 16-bit precision and scale every format to
    # [0, 1], so 8- and 16-bit files land on the same range.
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.float32, expand_animations=False)
    channels = tf.shape(image)[-1]

    def _luma() -> tf.Tensor:
        weights = tf.constant(_LUMA_WEIGHTS, dtype=tf.float32)
        return tf.reduce_sum(image[..., :3] * weights, axis=-1, keepdims=True)

    def _first_channel() -> tf.Tensor:
        return image[..., :1]

    gray = tf.cond(channels >= 3, _luma, _first_channel)
    return tf.clip_by_value(gray * 255.0, 0.0, 255.0)


def _center_crop_square(image: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top : top + side, left : left + side, :]


def equalize_histogram(levels: tf.Tensor) -> tf.Tensor:
    """Histogram equalisation of a uint8 image of any shape, in-graph.

    OpenCV's `equalizeHist`: with `cdf` the cumulative histogram (256 bins) and `cdf_min` the
    count of the darkest present level, level v maps to
    round((cdf[v] - cdf_min) * 255 / (pixels - cdf_min)); a constant image is left as is.
    """
    flat = tf.reshape(tf.cast(levels, tf.int32), [-1])
    histogram = tf.math.bincount(flat, minlength=GRAY_LEVELS, maxlength=GRAY_LEVELS)
    cdf = tf.cast(tf.cumsum(histogram), tf.float32)
    pixels = tf.cast(tf.size(flat), tf.float32)
    cdf_min = tf.gather(cdf, tf.reduce_min(flat))
    span = pixels - cdf_min
    lookup = tf.round((cdf - cdf_min) * (GRAY_LEVELS - 1) / tf.maximum(span, 1.0))
    lookup = tf.clip_by_value(lookup, 0.0, GRAY_LEVELS - 1.0)
    identity = tf.range(GRAY_LEVELS, dtype=tf.float32)
    lookup = tf.where(span > 0, lookup, identity)
    equalized = tf.gather(tf.cast(lookup, tf.uint8), flat)
    return tf.reshape(equalized, tf.shape(levels))


def equalized_image_bytes(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """The equalised uint8 image [S, S] the model sees (scaled by 1/255): for Grad-CAM overlays.

    `preprocess_image_bytes(b, S)[..., 0] * 255`, rounded, gives the same values.
    """
    gray = decode_grayscale(image_bytes)
    square = _center_crop_square(gray)

    def _resize() -> tf.Tensor:
        # Antialiasing matters: X-rays often arrive at 1000+ px and are shrunk 4-16 fold.
        return tf.image.resize(square, (image_size, image_size), antialias=True)

    def _keep() -> tf.Tensor:
        return tf.reshape(square, (image_size, image_size, 1))

    # Images already at the model's size (COVID-QU-Ex is 256 px, as the seed preset) skip the
    # resize: it is the most expensive step of the pipeline and would only blur them.
    resized = tf.cond(tf.shape(square)[0] == image_size, _keep, _resize)
    levels = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    equalized = equalize_histogram(levels[..., 0])
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


def equalize_histogram_reference(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """NumPy reference of `equalize_histogram` (OpenCV `equalizeHist`), for tests and tools."""
    levels = np.asarray(image)
    if levels.dtype != np.uint8:
        raise TypeError("equalize_histogram_reference expects a uint8 image")
    histogram = np.bincount(levels.ravel(), minlength=GRAY_LEVELS)
    cdf = np.cumsum(histogram)
    cdf_min = cdf[levels.min()]
    span = levels.size - cdf_min
    if span == 0:
        return levels.copy()
    lookup = np.clip(np.rint((cdf - cdf_min) * (GRAY_LEVELS - 1) / span), 0, GRAY_LEVELS - 1)
    return lookup.astype(np.uint8)[levels]
