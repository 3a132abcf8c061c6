"""Paths inside an exported SavedModel folder that lean code reads, and the model info reader.

No TensorFlow import: the registry and the CLI read `model_info.json` without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["MODEL_INFO_PATH", "WARMUP_PATH", "read_model_info"]

# Relative to the SavedModel folder; `assets.extra/` is where TF Serving looks for extras.
MODEL_INFO_PATH = "assets.extra/model_info.json"
WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"


def read_model_info(saved_model_dir: str | Path) -> dict[str, Any]:
    """The class list, preset, input size, Grad-CAM layer, dtype and training metadata."""
    path = Path(saved_model_dir) / MODEL_INFO_PATH
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{MODEL_INFO_PATH} is not a JSON object")
    return document
