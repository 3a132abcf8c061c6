"""Predictions through an exported SavedModel's serving signature (TensorFlow).

Both models of a champion/challenger comparison are evaluated the same way: the test images'
encoded bytes go through each SavedModel's `serving_default` signature, so the numbers describe
what TF Serving would answer, preprocessing and compute dtype included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from model_contract.artifact import (
    CLASS_NAMES_OUTPUT,
    IMAGE_BYTES_INPUT,
    MODEL_NAME_OUTPUT,
    MODEL_RUN_ID_OUTPUT,
    MODEL_VERSION_OUTPUT,
    OOD_REASON_OUTPUT,
    PROBABILITIES_OUTPUT,
    SERVING_SIGNATURE,
)

__all__ = ["SavedModelPredictions", "predict_saved_model"]


@dataclass(frozen=True)
class SavedModelPredictions:
    """What a SavedModel answered for a list of images, and who it said it was."""

    probabilities: npt.NDArray[np.float32]
    class_names: tuple[str, ...]
    identity: Mapping[str, Any]  # name, version, run_id as the model reports them
    # Per image, why the model says it is not a chest film ("" if it is); None when the
    # version has no such output (exported before it).
    ood_reasons: tuple[str, ...] | None = None


def predict_saved_model(
    saved_model_dir: str | Path,
    image_paths: Sequence[str | Path],
    batch_size: int = 32,
    *,
    encoded: Sequence[bytes] | None = None,
) -> SavedModelPredictions:
    """Send the encoded files (or the `encoded` images themselves, when given) through the
    SavedModel's `serving_default` signature."""
    if not image_paths and not encoded:
        raise ValueError("nothing to predict: no images")
    loaded = tf.saved_model.load(str(saved_model_dir))
    signature = loaded.signatures[SERVING_SIGNATURE]
    if encoded:
        images = tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), tf.string))
    else:
        files = tf.data.Dataset.from_tensor_slices([str(path) for path in image_paths])
        images = files.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
    batches = images.batch(max(1, batch_size)).prefetch(tf.data.AUTOTUNE)
    reasons: list[str] | None = []
    probabilities: list[npt.NDArray[np.float32]] = []
    identity: dict[str, Any] = {}
    class_names: tuple[str, ...] = ()
    for batch in batches:
        outputs = signature(**{IMAGE_BYTES_INPUT: batch})
        probabilities.append(np.asarray(outputs[PROBABILITIES_OUTPUT].numpy(), dtype=np.float32))
        if reasons is not None and OOD_REASON_OUTPUT in outputs:
            reasons.extend(value.decode("utf-8") for value in outputs[OOD_REASON_OUTPUT].numpy())
        else:
            reasons = None
        if not identity:
            identity = {
                "name": outputs[MODEL_NAME_OUTPUT].numpy()[0].decode("utf-8"),
                "version": int(outputs[MODEL_VERSION_OUTPUT].numpy()[0]),
                "run_id": outputs[MODEL_RUN_ID_OUTPUT].numpy()[0].decode("utf-8"),
            }
            class_names = tuple(
                name.decode("utf-8") for name in outputs[CLASS_NAMES_OUTPUT].numpy()[0]
            )
    return SavedModelPredictions(
        probabilities=np.concatenate(probabilities),
        class_names=class_names,
        identity=identity,
        ood_reasons=tuple(reasons) if reasons is not None else None,
    )
