"""The CNN-ViT's custom layers, registered with Keras where they are defined.

`CUSTOM_OBJECTS` names them for `keras.saving.load_model` (see `cnn_vit.model.load_model`), so
loading a saved model needs no import for its side effect. Backend-agnostic Keras 3.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

__all__ = ["CUSTOM_OBJECTS", "PatchEncoder", "PatchTokens"]

# The registration package: a saved model names its layers `xray>PatchTokens`, ...
_CUSTOM_PACKAGE = "xray"


@keras.saving.register_keras_serializable(package=_CUSTOM_PACKAGE)
class PatchTokens(layers.Layer):
    """Cuts a feature map [B, H, W, C] into non-overlapping patch tokens [B, N, p*p*C].

    With patch size 1 every feature-map position is one token of C features.
    """

    def __init__(self, patch_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if patch_size < 1:
            raise ValueError("patch_size must be at least 1")
        self.patch_size = patch_size

    def call(self, feature_map: Any) -> Any:
        _, height, width, channels = feature_map.shape
        size = self.patch_size
        rows, cols = height // size, width // size
        # [B, rows, p, cols, p, C] -> [B, rows, cols, p, p, C] -> [B, rows*cols, p*p*C]
        patches = ops.reshape(feature_map, (-1, rows, size, cols, size, channels))
        patches = ops.transpose(patches, (0, 1, 3, 2, 4, 5))
        return ops.reshape(patches, (-1, rows * cols, size * size * channels))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        batch, height, width, channels = input_shape
        size = self.patch_size
        return (batch, (height // size) * (width // size), size * size * channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package=_CUSTOM_PACKAGE)
class PatchEncoder(layers.Layer):
    """Projects each token to `projection_dim` and adds a learned position embedding.

    `get_config` returns both constructor arguments: the keras-io original omitted
    `projection_dim`, so its saved models could not be reloaded.
    """

    def __init__(self, num_patches: int, projection_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_patches = num_patches
        self.projection_dim = projection_dim
        self.projection = layers.Dense(projection_dim, name="projection", dtype=self.dtype_policy)

    def build(self, input_shape: tuple[Any, ...]) -> None:
        self.projection.build(input_shape)
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.num_patches, self.projection_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        super().build(input_shape)

    def call(self, tokens: Any) -> Any:
        embedding = ops.cast(self.position_embedding, self.compute_dtype)
        return self.projection(tokens) + ops.expand_dims(embedding, 0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.num_patches, self.projection_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "projection_dim": self.projection_dim,
        }


CUSTOM_OBJECTS: dict[str, type[layers.Layer]] = {
    f"{_CUSTOM_PACKAGE}>{layer.__name__}": layer for layer in (PatchTokens, PatchEncoder)
}
