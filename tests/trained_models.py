"""The trained demo model the export, Grad-CAM and publish tests share, and its held-out films:
constants, the shapes of the session fixtures (tests/conftest.py), the pattern-mask projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from cnn_vit.config import ModelConfig

MODEL_NAME = "cnn_vit"
RUN_ID = "20261127T101500Z-test01"
# The layer these tests export Grad-CAM on: it localised the synthetic patterns best on the small
# preset (see cnn_vit.gradcam.GradcamExplainer), so it is the recommended small default.
GRADCAM_LAYER = "encoder_conv_1"
# Held-out films come from their own seed streams, apart from the training data's.
TEST_SET_SEED = 424242
TEST_IMAGES_PER_CLASS = 40


@dataclass(frozen=True)
class HeldOutFilm:
    png: bytes
    class_index: int
    # Where the class pattern lies, in the model's input frame (S x S, after centre crop).
    mask: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Trained:
    model: Any  # keras.Model
    config: ModelConfig
    metrics: dict[str, Any]


def project_mask(mask: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    """A full-size pattern mask in the model's frame: the preprocessing's centre crop and resize."""
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = mask[top : top + side, left : left + side].astype(np.float32)
    resized = Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized) > 0.5


def fitted_ood_check(trained: Trained, films: list[HeldOutFilm]) -> Any:
    """The "not a chest X-ray" statistics of the trained model, fitted on held-out films (every
    other one for the fit, the rest for the threshold), as the training job fits them."""
    import tensorflow as tf

    from cnn_vit.ood import encoder_statistics_model, statistics_from_outputs
    from cnn_vit.preprocessing import preprocess_batch
    from training_job.ood import fit_ood

    images = preprocess_batch(tf.constant([f.png for f in films]), trained.config.image_size)
    maps = encoder_statistics_model(trained.model, False)(images)
    features = statistics_from_outputs(maps).numpy().astype(np.float64)
    return fit_ood(features[::2], features[1::2])
