"""The class list and the model presets: frozen dataclasses, no TensorFlow import.

`seed` is the original system's CNN-ViT (about 5.36 million parameters at 256x256); `small` is
the same shape scaled down so tests and the local demo train in seconds to a minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLASS_NAMES",
    "PRESETS",
    "ModelConfig",
    "get_preset",
]

# Index = position. Every model answer carries this list as `class_names`.
CLASS_NAMES: tuple[str, ...] = ("normal", "covid", "no-covid")


@dataclass(frozen=True)
class ModelConfig:
    """The CNN-ViT's shape. Every field is part of the model's identity in its metadata."""

    name: str
    image_size: int
    encoder_filters: tuple[int, ...]
    patch_size: int
    projection_dim: int
    transformer_layers: int
    num_heads: int
    key_dim: int
    transformer_mlp_units: tuple[int, ...]
    transformer_dropout: float
    head_dropout: float
    mlp_head_units: tuple[int, ...]
    head_mlp_dropout: float
    # The encoder layer whose feature map Grad-CAM weighs (see model_export for the reason).
    gradcam_layer: str
    classes: tuple[str, ...] = CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def feature_map_size(self) -> int:
        return self.image_size // (2 ** len(self.encoder_filters))

    @property
    def num_patches(self) -> int:
        return (self.feature_map_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        fields = {field.name for field in dataclasses.fields(cls)}
        cleaned: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value
            for key, value in values.items()
            if key in fields
        }
        return cls(**cleaned)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    "seed": ModelConfig(
        name="seed",
        image_size=256,
        encoder_filters=(128, 128, 64, 64, 64),
        patch_size=1,
        projection_dim=64,
        transformer_layers=4,
        num_heads=8,
        key_dim=64,
        transformer_mlp_units=(128, 64),
        transformer_dropout=0.1,
        head_dropout=0.5,
        mlp_head_units=(1024, 256),
        head_mlp_dropout=0.5,
        gradcam_layer="encoder_conv_4",
    ),
    "small": ModelConfig(
        name="small",
        image_size=64,
        encoder_filters=(16, 32, 32),
        patch_size=1,
        projection_dim=32,
        transformer_layers=2,
        num_heads=4,
        key_dim=16,
        transformer_mlp_units=(64, 32),
        transformer_dropout=0.1,
        head_dropout=0.1,
        mlp_head_units=(64,),
        head_mlp_dropout=0.1,
        gradcam_layer="encoder_conv_1",
    ),
}


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
