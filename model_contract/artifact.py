"""The served model's contract as names: signatures, their input and output tensors, and the
paths inside an exported SavedModel folder that lean code reads (docs/CONTRACTS.md).

The export writes these names, its warmup records replay them, the functions' REST client and
the bench call them: all from here, so a rename is one edit. No TensorFlow import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "CLASS_INDEX_OUTPUT",
    "CLASS_NAMES_OUTPUT",
    "CLASS_NAME_OUTPUT",
    "COMPUTE_DTYPES",
    "GRADCAM_OUTPUTS",
    "GRADCAM_OVERLAY_OUTPUTS",
    "GRADCAM_OVERLAY_SIGNATURE",
    "GRADCAM_SIGNATURE",
    "HEATMAP_OUTPUT",
    "IMAGE_BYTES_INPUT",
    "MODEL_INFO_PATH",
    "MODEL_NAME_OUTPUT",
    "MODEL_RUN_ID_OUTPUT",
    "MODEL_VERSION_OUTPUT",
    "OOD_REASONS",
    "OOD_REASON_OUTPUT",
    "OOD_SCORE_OUTPUT",
    "OVERLAY_PNG_OUTPUT",
    "PREDICTED_CLASS",
    "PREDICT_OUTPUTS",
    "PROBABILITIES_OUTPUT",
    "REFER_THRESHOLD_OUTPUT",
    "SERVING_SIGNATURE",
    "SIGNATURES",
    "TARGET_CLASS_INDEX_OUTPUT",
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
# The target class that means "explain the predicted class".
PREDICTED_CLASS = -1

# Outputs of every signature: the answer and the identity of the model that gave it.
PROBABILITIES_OUTPUT = "probabilities"
CLASS_INDEX_OUTPUT = "class_index"
CLASS_NAME_OUTPUT = "class_name"
CLASS_NAMES_OUTPUT = "class_names"
MODEL_NAME_OUTPUT = "model_name"
MODEL_VERSION_OUTPUT = "model_version"
MODEL_RUN_ID_OUTPUT = "model_run_id"
# The confidence (top probability) below which the model's answer should be referred to a
# person rather than taken as a class; 0: never. Versions exported before it lack it.
REFER_THRESHOLD_OUTPUT = "refer_threshold"
# Whether the input looks like the frontal chest films the model was trained on: `ood_reason`
# is "" when it does, else why not (colour, nearly_constant, aspect_ratio, features);
# `ood_score` is the feature distance over its threshold (1 is the boundary; 0 when the
# version has no feature model). Versions exported before them lack both.
OOD_SCORE_OUTPUT = "ood_score"
OOD_REASON_OUTPUT = "ood_reason"
# Every non-empty `ood_reason` (cnn_vit/ood.py computes them in this order).
OOD_REASONS: tuple[str, ...] = ("colour", "nearly_constant", "aspect_ratio", "features")
PREDICT_OUTPUTS: tuple[str, ...] = (
    PROBABILITIES_OUTPUT,
    CLASS_INDEX_OUTPUT,
    CLASS_NAME_OUTPUT,
    CLASS_NAMES_OUTPUT,
    MODEL_NAME_OUTPUT,
    MODEL_VERSION_OUTPUT,
    MODEL_RUN_ID_OUTPUT,
    REFER_THRESHOLD_OUTPUT,
    OOD_SCORE_OUTPUT,
    OOD_REASON_OUTPUT,
)
# The Grad-CAM signatures add these (`gradcam_overlay` all but the heatmap).
HEATMAP_OUTPUT = "heatmap"
OVERLAY_PNG_OUTPUT = "overlay_png_bytes"
TARGET_CLASS_INDEX_OUTPUT = "target_class_index"
GRADCAM_OVERLAY_OUTPUTS: tuple[str, ...] = (
    *PREDICT_OUTPUTS,
    OVERLAY_PNG_OUTPUT,
    TARGET_CLASS_INDEX_OUTPUT,
)
GRADCAM_OUTPUTS: tuple[str, ...] = (*GRADCAM_OVERLAY_OUTPUTS, HEATMAP_OUTPUT)

# The compute dtypes a model can be exported with (a bfloat16 export stores its weights in
# bfloat16 too, with the softmax layer's in float32); recorded in its model info and registry
# entry. bfloat16 is faster on CPUs with AMX or AVX512-BF16 and on recent GPUs only.
COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")


def read_model_info(saved_model_dir: str | Path) -> dict[str, Any]:
    """The class list, preset, input size, Grad-CAM layer, dtype and training metadata."""
    path = Path(saved_model_dir) / MODEL_INFO_PATH
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{MODEL_INFO_PATH} is not a JSON object")
    return document
