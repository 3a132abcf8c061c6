"""Paths inside an exported SavedModel folder that lean code reads, the signature and input
names the export and its warmup records share, and the model info reader.

No TensorFlow import: the registry and the CLI read `model_info.json` without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "GRADCAM_OVERLAY_SIGNATURE",
    "GRADCAM_SIGNATURE",
    "IMAGE_BYTES_INPUT",
    "MODEL_INFO_PATH",
    "SERVING_SIGNATURE",
    "SIGNATURES",
    "TARGET_CLASS_INPUT",
    "WARMUP_PATH",
    "read_model_info",
]

# Relative to the SavedModel folder; `assets.extra/` is where TF Serving looks for extras.
MODEL_INFO_PATH = "assets.extra/model_info.json"
WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"

SERVING_SIGNATURE = "serving_default"
GRADCAM_SIGNATURE = "gradcam"
# Grad-CAM without the `heatmap` output: the answer a caller that shows the overlay needs.
GRADCAM_OVERLAY_SIGNATURE = "gradcam_overlay"
SIGNATURES = (SERVING_SIGNATURE, GRADCAM_SIGNATURE, GRADCAM_OVERLAY_SIGNATURE)
# The signatures' inputs: every one takes the image bytes, the Grad-CAM ones a target class too.
IMAGE_BYTES_INPUT = "image_bytes"
TARGET_CLASS_INPUT = "target_class"


def read_model_info(saved_model_dir: str | Path) -> dict[str, Any]:
    """The class list, preset, input size, Grad-CAM layer, dtype and training metadata."""
    path = Path(saved_model_dir) / MODEL_INFO_PATH
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{MODEL_INFO_PATH} is not a JSON object")
    return document
