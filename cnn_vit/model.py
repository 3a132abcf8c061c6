"""The CNN-ViT: a convolutional encoder whose feature map becomes the tokens of a small ViT.

Backend-agnostic Keras 3 (layers and `keras.ops` only, DESIGN.md decision 10). The model takes
an already preprocessed image (float32 [S, S, 1] in [0, 1], see `cnn_vit.preprocessing`) and
returns float32 softmax probabilities over `config.classes`, also under mixed precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers

from cnn_vit.config import ModelConfig
from cnn_vit.layers import CUSTOM_OBJECTS, PatchEncoder, PatchTokens

__all__ = [
    "DTYPE_POLICIES",
    "build_model",
    "encoder_conv_name",
    "encoder_pool_name",
    "load_model",
]

# "mixed_bfloat16" keeps variables in float32 (so weights move freely between the two twins)
# and computes in bfloat16, which AMX/GPU tensor cores run several times faster.
# "bfloat16" is for serving only: the variables are bfloat16 too. Its answers are bit-identical
# to "mixed_bfloat16"'s with the same weights (that policy rounds each float32 variable to
# bfloat16 at every use; this one rounds it once, when the weights are set), and it halves the
# weights and removes those casts from every call. Never train with it: updates smaller than
# bfloat16's resolution would be lost.
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "bfloat16")

# Initialisation (the architecture is the original's; only starting weights differ from Keras
# defaults). Chest films all look alike, so at the start the image-dependent part of each token
# is a few percent of it; with default initialisation every transformer block adds a larger,
# image-independent term and the classifier starts with confident random logits, and training
# stalls for epochs at chance (or never leaves it under dropout). So: He init for the ReLU
# convolutions (keeps the feature scale through five blocks), residual branches (attention,
# last MLP layer) and the classifier start near zero (each block starts close to the identity,
# as in GPT-2/Fixup-style scaled init; the first loss is ln(classes), as ViT's zero-init head).
_SMALL_INIT_SCALE = 0.01


def encoder_conv_name(block: int) -> str:
    """Name of the convolution of encoder block `block` (1-based); Grad-CAM names one."""
    return f"encoder_conv_{block}"


def encoder_pool_name(block: int) -> str:
    return f"encoder_pool_{block}"


def _mlp(
    inputs: Any,
    units: tuple[int, ...],
    dropout: float,
    prefix: str,
    dtype_policy: str,
    last_initializer: Any = "glorot_uniform",
) -> Any:
    """Dense + GELU + dropout per entry of `units` (the keras-io ViT's `mlp`)."""
    outputs = inputs
    for index, width in enumerate(units, start=1):
        outputs = layers.Dense(
            width,
            activation="gelu",
            kernel_initializer=last_initializer if index == len(units) else "glorot_uniform",
            name=f"{prefix}_dense_{index}",
            dtype=dtype_policy,
        )(outputs)
        outputs = layers.Dropout(dropout, name=f"{prefix}_dropout_{index}", dtype=dtype_policy)(
            outputs
        )
    return outputs


def _small_initializer() -> keras.initializers.Initializer:
    """Glorot-uniform shrunk 10-fold in amplitude (see `_SMALL_INIT_SCALE`)."""
    return keras.initializers.VarianceScaling(
        _SMALL_INIT_SCALE, mode="fan_avg", distribution="uniform"
    )


def _check_config(config: ModelConfig) -> None:
    downscale = 2 ** len(config.encoder_filters)
    if config.image_size % downscale:
        raise ValueError(
            f"image_size {config.image_size} is not divisible by {downscale} "
            f"({len(config.encoder_filters)} pooling blocks)"
        )
    if config.feature_map_size % config.patch_size:
        raise ValueError(
            f"feature map {config.feature_map_size} is not divisible by patch {config.patch_size}"
        )
    if config.transformer_mlp_units and config.transformer_mlp_units[-1] != config.projection_dim:
        # The MLP's output is added back to its input (residual), so widths must agree.
        raise ValueError("the last transformer MLP width must equal projection_dim")


def build_model(config: ModelConfig, *, dtype_policy: str = "float32") -> keras.Model:
    """The CNN-ViT of `config`, computing in `dtype_policy` (one of `DTYPE_POLICIES`).

    Input: float32 [S, S, 1] in [0, 1]. Output: float32 softmax over `config.classes`.
    Models built from the same config under either policy share weight shapes and order, so
    `bf16_twin.set_weights(float32_model.get_weights())` works.
    """
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {DTYPE_POLICIES}, not {dtype_policy!r}")
    _check_config(config)
    policy = dtype_policy
    size = config.image_size

    inputs = keras.Input(shape=(size, size, 1), dtype="float32", name="image")
    features = inputs
    for block, filters in enumerate(config.encoder_filters, start=1):
        features = layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer="he_uniform",
            name=encoder_conv_name(block),
            dtype=policy,
        )(features)
        features = layers.MaxPooling2D(2, name=encoder_pool_name(block), dtype=policy)(features)

    tokens = PatchTokens(config.patch_size, name="patch_tokens", dtype=policy)(features)
    encoded = PatchEncoder(
        config.num_patches, config.projection_dim, name="patch_encoder", dtype=policy
    )(tokens)

    for index in range(1, config.transformer_layers + 1):
        prefix = f"transformer_{index}"
        normed = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm_1", dtype=policy)(
            encoded
        )
        attention = layers.MultiHeadAttention(
            num_heads=config.num_heads,
            key_dim=config.key_dim,
            dropout=config.transformer_dropout,
            kernel_initializer=_small_initializer(),
            name=f"{prefix}_attention",
            dtype=policy,
        )(normed, normed)
        attended = layers.Add(name=f"{prefix}_residual_1", dtype=policy)([attention, encoded])
        normed = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm_2", dtype=policy)(
            attended
        )
        transformed = _mlp(
            normed,
            config.transformer_mlp_units,
            config.transformer_dropout,
            f"{prefix}_mlp",
            policy,
        )
        encoded = layers.Add(name=f"{prefix}_residual_2", dtype=policy)([transformed, attended])

    representation = layers.LayerNormalization(epsilon=1e-6, name="head_norm", dtype=policy)(
        encoded
    )
    representation = layers.Flatten(name="head_flatten", dtype=policy)(representation)
    representation = layers.Dropout(config.head_dropout, name="head_dropout", dtype=policy)(
        representation
    )
    features = _mlp(
        representation, config.mlp_head_units, config.head_mlp_dropout, "head_mlp", policy
    )
    # The softmax runs in float32 whatever the policy: bfloat16 has 8 bits of mantissa, too
    # coarse for probabilities that callers compare and threshold.
    probabilities = layers.Dense(
        config.num_classes,
        activation="softmax",
        kernel_initializer=_small_initializer(),
        name="probabilities",
        dtype="float32",
    )(features)
    return keras.Model(inputs, probabilities, name=f"cnn_vit_{config.name}")


def load_model(path: str | Path) -> keras.Model:
    """A CNN-ViT saved with `model.save(...)` (`.keras`), its custom layers named explicitly."""
    return keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
