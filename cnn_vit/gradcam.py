"""Grad-CAM for the CNN-ViT, in-graph: the heatmap, its colouring and the PNG overlay.

`gradcam_heatmap` is the pure function (model, images, layer, class) -> heatmap in [0, 1]
(keras-io's `grad_cam.py`, batched); `GradcamExplainer` is the same computation with the
sub-model built once, as the exported `gradcam` signature uses it. Colouring and PNG encoding are
separate helpers so callers can take the raw heatmap, the colours or the finished overlay.

Two choices, both measured on synthetic X-rays (see the report in `GradcamExplainer`):

- The class score is the centred logit, the class's logit minus the mean of all logits, when the
  model ends in a softmax Dense layer (as `build_model`'s does): a probability saturates at 1 on
  confident answers and its gradient vanishes, which would leave a confident model with an empty
  heatmap; and the softmax ignores whatever all logits share, so evidence that raises every
  class alike explains no class (the centred logit is also the centred log-probability).
- With a reference class (the export passes `normal`), a disease is explained against it: the
  score is the class's logit minus the reference's, so the map shows why this film is this
  disease rather than normal, which is where the lesion is. Measured over three trainings
  (seeds 0-2, 40 held-out films per class, true class, the training job's pointing game: peak
  on the lesion dilated by 3 px): centred logit 0.95 / 0.79 mean, worst 0.90 / 0.475
  (covid / no-covid); against normal 0.97 / 0.92 mean, worst 0.925 / 0.80, at the same cost.
  (Averaging the gradient along 16 scaled copies of the film from black, path-integrated, gave
  1.00 / 0.98 but costs 16 forward and backward passes per image: not for serving.) The
  reference class itself keeps the centred score (against itself it would be identically 0).
- The feature map is weighted element-wise by its gradient (HiResCAM, Draelos & Carin 2020),
  not by the gradient's spatial mean per channel (the original Grad-CAM). The CNN-ViT's head
  flattens the tokens into a dense layer, so the gradient differs from position to position;
  averaging it over the map throws away where the evidence is. On the small preset the original
  weighting almost never put its peak on the class pattern; the element-wise one mostly does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "PNG_COMPRESSION",
    "WEIGHTINGS",
    "GradcamExplainer",
    "GradcamResult",
    "bilinear_resize_weights",
    "blend_overlay",
    "colorize_heatmap",
    "encode_png_batch",
    "gradcam_heatmap",
    "normalize_per_image",
    "smooth_maps",
    "upsample_heatmap",
]

# Guards the per-image normalisation: a heatmap whose maximum is below this is all zeros
# (no positive evidence for the class in that layer) rather than amplified noise.
_EPSILON = 1e-8

# Sigma of the Gaussian smoothing of the map, as a fraction of its side (1/16: two cells of a
# 32 x 32 map, four of a 64 x 64 one). Without it the element-wise map is speckled (max pooling
# passes the gradient to one cell in four) and the overlay shows dots instead of regions.
DEFAULT_SMOOTHING = 1 / 16

# zlib level of the overlay PNGs. A 256 px overlay of a synthetic X-ray, measured: level 1
# 3.3 ms and 105 KB, zlib's default (6) 13.7 ms and 107 KB. The film's grain leaves deflate
# little to find past level 1, so the default only spends time.
PNG_COMPRESSION = 1

Weighting = Literal["elementwise", "channel_mean"]
WEIGHTINGS: tuple[Weighting, ...] = ("elementwise", "channel_mean")


@dataclass(frozen=True)
class GradcamResult:
    """Grad-CAM of a batch: heatmap at the layer's resolution, probabilities, explained class."""

    heatmap: tf.Tensor  # float32 [B, h, w] in [0, 1]
    probabilities: tf.Tensor  # float32 [B, classes]
    target_class: tf.Tensor  # int32 [B]
    # The outputs of the layers named in `extra_outputs`, from the same forward pass.
    extras: tuple[tf.Tensor, ...] = ()


def _is_softmax_dense(layer: keras.layers.Layer) -> bool:
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Dense) and activation is keras.activations.softmax


def smooth_maps(maps: tf.Tensor, sigma: float) -> tf.Tensor:
    """Gaussian smoothing of maps [B, h, w] (sigma in cells; 0 leaves them as they are).

    Separable, with zero padding: what lies beyond the map is no evidence. Mirrored borders
    would fold the spread of a cell near the edge back onto it, so the same evidence would peak
    up to twice as high on an edge (four times in a corner) as inside the map, and the heatmap's
    maximum would drift to the film's border.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(np.ceil(2 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = tf.constant(weights / weights.sum(), dtype=tf.float32)
    smoothed = maps[..., tf.newaxis]
    for pad, shape in (
        ([[0, 0], [radius, radius], [0, 0], [0, 0]], [-1, 1, 1, 1]),
        ([[0, 0], [0, 0], [radius, radius], [0, 0]], [1, -1, 1, 1]),
    ):
        padded = tf.pad(smoothed, pad)
        smoothed = tf.nn.conv2d(padded, tf.reshape(kernel, shape), strides=1, padding="VALID")
    return smoothed[..., 0]


def normalize_per_image(maps: tf.Tensor) -> tf.Tensor:
    """Scale each map [B, h, w] by its own maximum into [0, 1]; all-zero maps stay zero."""
    maxima = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(maps, tf.where(maxima > _EPSILON, maxima, tf.zeros_like(maxima)))


class GradcamExplainer:
    """Grad-CAM on one layer of a functional Keras model, the split built once.

    The model is split at the layer: the front gives its feature map, the tail takes the map on
    to the input of the final softmax layer, so one forward pass gives the heatmap, the logits
    and the probabilities, and only the tail is differentiated.

    `weighting="elementwise"` (default, HiResCAM) weighs each feature-map value by its own
    gradient; `"channel_mean"` is the original Grad-CAM (one weight per channel, the gradient's
    spatial mean). `smoothing` is the Gaussian sigma as a fraction of the map's side.

    Measured on the small preset trained by `train_demo_model` (30 held-out covid and 30
    no-covid films; "hot" = heat >= half the film's maximum; the pattern mask dilated by 3 px):

    | layer (map)          | weighting        | hot on pattern | peak on pattern |
    | encoder_conv_2 (32²) | channel mean     | 0.03 / 0.04    | 0.00 / 0.00     |
    | encoder_conv_1 (64²) | element, smooth  | 0.65 / 0.63    | 0.73 / 0.70     |
    | encoder_conv_2 (32²) | element, smooth  | 0.53 / 0.68    | 0.43 / 0.80     |
    | encoder_conv_3 (16²) | element, smooth  | 0.43 / 0.35    | 0.33 / 0.37     |

    (covid / no-covid; chance is about 0.27 / 0.11). The channel mean lit the body outline.
    `encoder_conv_1` is the most even across both patterns on a 64 px input (also on a model
    trained three times longer: 0.61 / 0.82 hot), so it is the recommended small default.
    `encoder_conv_4` for `seed` (a 32 x 32 map of 8 px cells at 256 px) is unmeasured here:
    the seed preset trains too slowly on these CPUs to compare layers.

    The score and smoothing were then chosen over 17 trainings of that model (seed 0's data,
    seeds 0-16 for initialisation and shuffling, which stand in for machines) on all 40 held-out
    films per class, `encoder_conv_1`: the raw logit with sigma 1/32 and mirrored borders gave a
    mean hot share of 0.73 / 0.60 and failed the localisation test's bar on 3 of 34 class-runs;
    the centred logit with sigma 1/16 and zero padding gives 0.79 / 0.67 and fails on none
    (worst margin over the bar 0.13 / 0.02). The trained model also reads the abdomen's
    brightness after histogram equalisation (the films' opacities shift it), and the remaining
    off-pattern heat for no-covid lies there.

    Occlusion (greying 8 px patches) credits only about 0.41 / 0.10 of the trained model's own
    evidence to the undilated mask: the model also uses the haze around it, so no explanation
    can put all of the heat inside the mask.
    """

    def __init__(
        self,
        model: keras.Model,
        layer_name: str,
        *,
        weighting: Weighting = "elementwise",
        smoothing: float = DEFAULT_SMOOTHING,
        extra_outputs: tuple[str, ...] = (),
        reference_class: int | None = None,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(f"model {model.name!r} has no layer {layer_name!r}") from None
        if len(layer.output.shape) != 4:
            raise ValueError(f"Grad-CAM needs a 4-D feature map; {layer_name!r} is not one")
        self.layer_name = layer_name
        self.weighting = weighting
        self.reference_class = reference_class
        self.smoothing = smoothing
        self.model = model
        final_layer = model.layers[-1]
        self._final_layer = final_layer if _is_softmax_dense(final_layer) else None
        head_input = final_layer.input if self._final_layer is not None else model.output
        # The model in two: the front up to the layer (the input's side, no gradient needed)
        # and the tail from the layer's map to the head (differentiated). An extra output
        # comes from whichever part computes it: those after the layer from the tail.
        position = {id(item): index for index, item in enumerate(model.layers)}
        layer_index = position[id(layer)]
        self._extra_in_tail = tuple(
            position[id(model.get_layer(name))] > layer_index for name in extra_outputs
        )
        front_extras: list[keras.KerasTensor] = []
        tail_extras: list[keras.KerasTensor] = []
        for name, in_tail in zip(extra_outputs, self._extra_in_tail, strict=True):
            (tail_extras if in_tail else front_extras).append(model.get_layer(name).output)
        self._front = keras.Model(model.inputs, [layer.output, *front_extras], name="gradcam_front")
        self._tail = keras.Model(layer.output, [head_input, *tail_extras], name="gradcam_tail")

    def _logits_and_probabilities(self, head_input: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self._final_layer is None:
            probabilities = tf.cast(head_input, tf.float32)
            return tf.math.log(probabilities + _EPSILON), probabilities
        kernel = tf.cast(self._final_layer.kernel, tf.float32)
        logits = tf.matmul(tf.cast(head_input, tf.float32), kernel)
        if self._final_layer.use_bias:
            logits += tf.cast(self._final_layer.bias, tf.float32)
        return logits, tf.nn.softmax(logits)

    def __call__(self, images: tf.Tensor, target_class: tf.Tensor | None = None) -> GradcamResult:
        """Grad-CAM of `images` [B, S, S, 1] for `target_class` [B] (-1 or None: predicted)."""
        feature_map, *front_extras = self.front(images)
        result = self.explain_features(feature_map, target_class)
        return GradcamResult(
            heatmap=result.heatmap,
            probabilities=result.probabilities,
            target_class=result.target_class,
            extras=self.merge_extras(front_extras, result.extras),
        )

    @property
    def tail_extra_outputs(self) -> list[keras.KerasTensor]:
        """The extra outputs the tail computes (symbolic: their shapes and dtypes)."""
        return tf.nest.flatten(self._tail.outputs)[1:]

    def front(self, images: tf.Tensor) -> list[tf.Tensor]:
        """The layer's feature map of `images` and the extra outputs computed before it."""
        return tf.nest.flatten(self._front(images, training=False))

    def merge_extras(
        self,
        front_extras: list[tf.Tensor] | tuple[tf.Tensor, ...],
        tail_extras: tuple[tf.Tensor, ...],
    ) -> tuple[tf.Tensor, ...]:
        """The extra outputs in the order they were asked for, from the front's and the tail's."""
        front, tail = iter(front_extras), iter(tail_extras)
        return tuple(next(tail) if in_tail else next(front) for in_tail in self._extra_in_tail)

    def explain_features(
        self, feature_map: tf.Tensor, target_class: tf.Tensor | None = None
    ) -> GradcamResult:
        """Grad-CAM from the layer's feature map [B, h, w, c] on: the tail's forward pass, the
        gradient of the class score with respect to the map, the weighting and the smoothing.
        `extras` holds only the extra outputs the tail computes (see `merge_extras`).

        Separate from the front so that this part, small operations on small tensors, can be
        compiled with XLA on its own (model_export does: see `xla` there).
        """
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(feature_map)
            head_input, *extras = tf.nest.flatten(self._tail(feature_map, training=False))
            logits, probabilities = self._logits_and_probabilities(head_input)
            predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            if target_class is None:
                target = predicted
            else:
                target_class = tf.cast(target_class, tf.int32)
                target = tf.where(target_class < 0, predicted, target_class)
            centred = logits - tf.reduce_mean(logits, axis=1, keepdims=True)
            score = tf.gather(centred, target, axis=1, batch_dims=1)
            if self.reference_class is not None:
                reference = self.reference_class
                against = tf.gather(logits, target, axis=1, batch_dims=1) - logits[:, reference]
                score = tf.where(target == reference, score, against)
        gradients = tf.cast(tape.gradient(score, feature_map), tf.float32)
        feature_map = tf.cast(feature_map, tf.float32)
        if self.weighting == "elementwise":
            weighted = tf.reduce_sum(gradients * feature_map, axis=-1)
        else:
            # One weight per channel: the mean gradient over the map (Selvaraju et al., eq. 1).
            channel_weights = tf.reduce_mean(gradients, axis=[1, 2])
            weighted = tf.einsum("bhwc,bc->bhw", feature_map, channel_weights)
        # Smoothing before the ReLU lets nearby negative evidence cancel positive evidence, and
        # gathers the gradient that max pooling routes to one cell of each 2 x 2 window.
        sigma_cells = self.smoothing * int(feature_map.shape[2])
        heatmap = normalize_per_image(tf.nn.relu(smooth_maps(weighted, sigma_cells)))
        return GradcamResult(
            heatmap=heatmap,
            probabilities=probabilities,
            target_class=target,
            extras=tuple(extras),
        )


def gradcam_heatmap(
    model: keras.Model,
    images: tf.Tensor,
    layer_name: str,
    class_index: tf.Tensor | int | None = None,
    *,
    weighting: Weighting = "elementwise",
    smoothing: float = DEFAULT_SMOOTHING,
) -> tf.Tensor:
    """Grad-CAM heatmaps [B, h, w] in [0, 1] of `images` [B, S, S, 1] on `layer_name`.

    `class_index` (scalar or [B]; None or -1: the predicted class) is the class explained.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    target = None
    if class_index is not None:
        target = tf.broadcast_to(tf.cast(class_index, tf.int32), tf.shape(images)[:1])
    return GradcamExplainer(model, layer_name, weighting=weighting, smoothing=smoothing)(
        images, target
    ).heatmap


def bilinear_resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """The [out_size, in_size] matrix of bilinear resizing along one axis, as TensorFlow's
    `ResizeBilinear` with half-pixel centres (`tf.image.resize`'s bilinear without antialias)
    computes it: output i samples the input at (i + 0.5) * in / out - 0.5, between the two
    nearest inputs, clamped at the borders."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, not {in_size} -> {out_size}")
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(centres)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(centres), in_size - 1).astype(np.int64)
    lerp = centres - floor
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - lerp)
    np.add.at(weights, (rows, upper), lerp)
    return weights.astype(np.float32)


def upsample_heatmap(heatmap: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear upsampling of [B, h, w] heatmaps to [B, size, size], kept in [0, 1].

    `tf.image.resize`'s bilinear (half-pixel centres), computed as two small matrix products
    (bilinear resizing is separable) when h and w are static: XLA lowers `ResizeBilinear` to a
    gather and a 9-tap dot per output pixel, which took 1.1 ms of the seed model's 9 ms
    Grad-CAM tail (32 -> 256 px), against about 0.05 ms for the two products. The values agree
    with `tf.image.resize` to float rounding (the sums run in another order).
    """
    heat = tf.cast(heatmap, tf.float32)
    height, width = heat.shape[1], heat.shape[2]
    if height is None or width is None:
        resized = tf.image.resize(heat[..., tf.newaxis], (size, size), method="bilinear")[..., 0]
    else:
        rows = tf.constant(bilinear_resize_weights(height, size))  # [size, h]
        columns = tf.constant(bilinear_resize_weights(width, size).T)  # [w, size]
        resized = tf.matmul(tf.matmul(rows, heat), columns)
    return tf.clip_by_value(resized, 0.0, 1.0)


def colorize_heatmap(heatmap: tf.Tensor) -> tf.Tensor:
    """A jet-like colour map: [...] in [0, 1] -> uint8 RGB [..., 3] (blue cold, red hot).

    Computed in-graph (piecewise-linear jet) so no colour-map table or matplotlib is needed.
    """
    value = tf.clip_by_value(tf.cast(heatmap, tf.float32), 0.0, 1.0)[..., tf.newaxis]
    centres = tf.constant([0.75, 0.5, 0.25], dtype=tf.float32)  # red, green, blue peaks
    rgb = tf.clip_by_value(1.5 - tf.abs(4.0 * (value - centres)), 0.0, 1.0)
    return tf.cast(tf.round(rgb * 255.0), tf.uint8)


def blend_overlay(gray: tf.Tensor, heatmap: tf.Tensor, max_opacity: float = 0.6) -> tf.Tensor:
    """The X-ray [B, S, S] (uint8) with the coloured heatmap [B, S, S] blended over it.

    Opacity grows with the heat, so cold regions show the film unobscured and the hot regions
    are what catches the eye. Returns uint8 RGB [B, S, S, 3].
    """
    film = tf.cast(gray, tf.float32)[..., tf.newaxis] * tf.ones([3], tf.float32)
    colours = tf.cast(colorize_heatmap(heatmap), tf.float32)
    opacity = max_opacity * tf.clip_by_value(tf.cast(heatmap, tf.float32), 0.0, 1.0)
    opacity = opacity[..., tf.newaxis]
    blended = film * (1.0 - opacity) + colours * opacity
    return tf.cast(tf.round(tf.clip_by_value(blended, 0.0, 255.0)), tf.uint8)


def encode_png_batch(images: tf.Tensor, compression: int = PNG_COMPRESSION) -> tf.Tensor:
    """uint8 images [B, H, W, C] -> PNG bytes [B] (string), one tf.io.encode_png each."""
    return tf.map_fn(
        lambda image: tf.io.encode_png(image, compression=compression),
        images,
        fn_output_signature=tf.TensorSpec([], tf.string),
    )
