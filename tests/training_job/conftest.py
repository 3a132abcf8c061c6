"""Session fixtures for the training_job tests: one demo model trained on synthetic X-rays, and
a tiny CNN-ViT config that trains in a fraction of a second per epoch."""

from __future__ import annotations

from typing import Any

import keras
import pytest

from training_job.config import ModelConfig, get_preset

# The small preset shrunk further: 16 px, one transformer block. For loop mechanics, not skill.
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


@pytest.fixture(scope="session")
def demo_run(demo_model: tuple[keras.Model, dict[str, Any]]) -> tuple[keras.Model, dict[str, Any]]:
    """The small preset trained by `train_demo_model` (once per session; tests/conftest.py)."""
    return demo_model
