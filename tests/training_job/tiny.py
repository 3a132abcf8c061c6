"""A tiny CNN-ViT config that trains in a fraction of a second per epoch (for loop mechanics,
not skill)."""

from __future__ import annotations

from cnn_vit.config import CLASS_NAMES, ModelConfig, get_preset
from synthetic.xrays import encode_png, generate_xray

# The small preset shrunk further: 16 px, one transformer block.
TINY_CONFIG: ModelConfig = get_preset("small").replace(
    name="tiny",
    image_size=16,
    encoder_filters=(4, 8),
    projection_dim=8,
    transformer_layers=1,
    num_heads=2,
    key_dim=4,
    transformer_mlp_units=(16, 8),
    mlp_head_units=(16,),
    gradcam_layer="encoder_conv_2",
)


def films(count: int, seed: int = 0) -> tuple[list[bytes], list[int]]:
    items, labels = [], []
    for index in range(count):
        film = generate_xray(CLASS_NAMES[index % 3], seed * 1000 + index, size_range=(40, 56))
        items.append(encode_png(film.image))
        labels.append(index % 3)
    return items, labels
