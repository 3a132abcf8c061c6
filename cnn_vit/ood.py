"""Is this a frontal chest X-ray of the kind the model was trained on? In-graph checks.

Two parts, both in the exported SavedModel (the functions only read their outputs):

- Cheap image checks on the decoded upload, before any feature: a colour photograph (the
  channels differ: an X-ray stored as RGB has R = G = B), a nearly constant image (grey
  spread under 2 % of the range), an extreme aspect ratio (over 2:1 either way; chest films
  are close to square).
- A feature score: the Mahalanobis distance of the encoder's channel statistics (mean and
  standard deviation of every channel after every encoder block's pooling: low-level texture
  and contrast, what makes an image look like these films) from their mean on the training
  split, with a shrunk covariance. After the pooling, not on the convolutions' full maps: the
  first block's map of the seed preset is 256 x 256 x 128, and its statistics alone cost 40 %
  of the model's own time (measured: +26 ms against +4 ms on the pooled maps, in one pass of
  mean and mean square). One Gaussian, not one per class: the question is "like the training
  films", not "like which class". Measured on synthetic films against images that are not chest
  films (synthetic/not_chest.py), these statistics separated them far better than the head's
  features, whose distances have a heavy tail on confident in-distribution films.

The training job fits the statistics (`training_job/ood.py`) and the threshold (a high quantile
of cross-fitted in-distribution scores); the export bakes them in as constants. The score is
served divided by the threshold, so 1 is the boundary for every model version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cnn_vit.model import encoder_conv_name, encoder_pool_name

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_COLOUR",
    "MIN_GREY_SPREAD",
    "OOD_REASONS",
    "OodStatistics",
    "encoder_statistics_model",
    "image_check_reasons",
    "statistics_from_outputs",
    "statistics_layers",
]

MAX_ASPECT_RATIO = 2.0
# Standard deviation of the grey values, as a share of the full range.
MIN_GREY_SPREAD = 0.02
# Mean over pixels of (max - min) over R, G, B, as a share of the range.
MAX_COLOUR = 0.04
# What `ood_reason` may say; "" means the image passed.
OOD_REASONS: tuple[str, ...] = ("colour", "nearly_constant", "aspect_ratio", "features")


def encoder_conv_layers(model: keras.Model) -> list[str]:
    """Names of the encoder convolutions, in order."""
    names = {layer.name for layer in model.layers}
    found = []
    block = 1
    while encoder_conv_name(block) in names:
        found.append(encoder_conv_name(block))
        block += 1
    if not found:
        raise ValueError(f"model {model.name} has no encoder convolution")
    return found


def statistics_layers(model: keras.Model) -> tuple[str, ...]:
    """The layers whose outputs the statistics are computed on: every encoder block's pooling."""
    return tuple(
        encoder_pool_name(block) for block in range(1, len(encoder_conv_layers(model)) + 1)
    )


def encoder_statistics_model(model: keras.Model, with_probabilities: bool) -> keras.Model:
    """A model giving the encoder blocks' pooled maps (and the probabilities when asked): one
    forward pass for both when the probabilities are needed too."""
    maps = [model.get_layer(name).output for name in statistics_layers(model)]
    outputs = [model.output, *maps] if with_probabilities else maps
    return keras.Model(model.input, outputs, name=f"{model.name}_encoder_statistics")


def statistics_from_outputs(maps: Sequence[tf.Tensor]) -> tf.Tensor:
    """[B, 2 * sum(channels)] float32: every channel's spatial mean, then its standard
    deviation, layer by layer (from the mean and the mean square: one pass over each map)."""
    values = [tf.cast(item, tf.float32) for item in maps]
    means = [tf.reduce_mean(item, axis=[1, 2]) for item in values]
    squares = [tf.reduce_mean(tf.square(item), axis=[1, 2]) for item in values]
    spreads = [
        tf.sqrt(tf.maximum(square - mean * mean, 0.0))
        for square, mean in zip(squares, means, strict=True)
    ]
    return tf.concat(means + spreads, axis=-1)


@dataclass(frozen=True)
class OodStatistics:
    """What the export bakes in: the features' mean and precision, and the threshold."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float

    def __post_init__(self) -> None:
        dims = self.mean.shape[0]
        if self.mean.ndim != 1 or self.precision.shape != (dims, dims):
            raise ValueError("the OOD mean and precision do not agree in size")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.precision))):
            raise ValueError("the OOD statistics must be finite")
        if not self.threshold > 0:
            raise ValueError("the OOD threshold must be positive")

    def to_json(self) -> dict[str, Any]:
        return {"features": int(self.mean.shape[0]), "threshold": float(self.threshold)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> OodStatistics:
        return cls(
            np.asarray(values["mean"], np.float64),
            np.asarray(values["precision"], np.float64),
            float(values["threshold"]),
        )

    def score(self, features: tf.Tensor) -> tf.Tensor:
        """[B] Mahalanobis distance squared over the threshold (in-graph)."""
        mean = tf.constant(self.mean, tf.float32)
        precision = tf.constant(self.precision, tf.float32)
        centred = features - mean
        distance = tf.reduce_sum(tf.matmul(centred, precision) * centred, axis=-1)
        return distance / tf.constant(self.threshold, tf.float32)


def _check_one(image_bytes: tf.Tensor) -> tf.Tensor:
    """The first cheap check an image fails, as an index into OOD_REASONS; -1 if none."""
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.float32, expand_animations=False)
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    channels = shape[2]

    def _colour() -> tf.Tensor:
        rgb = image[..., :3]
        return tf.reduce_mean(tf.reduce_max(rgb, axis=-1) - tf.reduce_min(rgb, axis=-1))

    colour = tf.cond(channels >= 3, _colour, lambda: tf.constant(0.0))
    grey = tf.cond(
        channels >= 3,
        lambda: tf.reduce_mean(image[..., :3], axis=-1),
        lambda: image[..., 0],
    )
    spread = tf.math.reduce_std(grey)
    aspect = tf.maximum(height, width) / tf.maximum(tf.minimum(height, width), 1.0)
    reason = tf.constant(-1)
    # Last assignment wins: the order below is the order of priority, most telling last.
    reason = tf.where(aspect > MAX_ASPECT_RATIO, 2, reason)
    reason = tf.where(spread < MIN_GREY_SPREAD, 1, reason)
    return tf.where(colour > MAX_COLOUR, 0, reason)


def image_check_reasons(image_bytes: tf.Tensor) -> tf.Tensor:
    """[B] int32: for each image the cheap check it fails (index into OOD_REASONS), or -1."""
    return tf.map_fn(_check_one, image_bytes, fn_output_signature=tf.TensorSpec([], tf.int32))
