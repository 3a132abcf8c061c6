"""The model server's JSON number writing, before and after vectorising it, on a real heatmap.

The `gradcam` signature's heatmap (S x S float32, 65,536 values at 256 px) is the largest
numeric output the REST API writes. Both writers live in `serving.model_server.json_codec`: the
one-by-one path (the former implementation, still used for small arrays) and the vectorised one;
they give identical texts (tests/serving/test_json_numbers.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_contract.artifact import (
    GRADCAM_SIGNATURE,
    HEATMAP_OUTPUT,
    IMAGE_BYTES_INPUT,
    PREDICTED_CLASS,
    TARGET_CLASS_INPUT,
)

__all__ = ["measure_formatting"]


def _milliseconds(action: Callable[[], object], repetitions: int = 7) -> dict[str, float]:
    action()
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def measure_formatting(version_dir: Path, image: bytes) -> dict[str, Any]:
    import json

    import numpy as np
    import tensorflow as tf

    from serving.model_server.json_codec import (
        _float_texts_one_by_one,
        format_float_values,
        row_response,
    )

    loaded = tf.saved_model.load(str(version_dir))
    outputs = loaded.signatures[GRADCAM_SIGNATURE](
        **{
            IMAGE_BYTES_INPUT: tf.constant([image]),
            TARGET_CLASS_INPUT: tf.constant([PREDICTED_CLASS], tf.int32),
        }
    )
    arrays = {name: tensor.numpy() for name, tensor in outputs.items()}
    heatmap = arrays[HEATMAP_OUTPUT]
    flat = heatmap.ravel()
    assert format_float_values(heatmap) == _float_texts_one_by_one(flat)
    without_heatmap = {name: array for name, array in arrays.items() if name != HEATMAP_OUTPUT}
    text = row_response(arrays)
    return {
        "heatmap_values": int(flat.size),
        # Values whose six-digit text does not read back: written with nine digits.
        "nine_digit_share": float(
            np.mean(
                np.array([float(f"{value:.6g}") for value in flat.tolist()]).astype(np.float32)
                != flat
            )
        ),
        "one_by_one": _milliseconds(lambda: _float_texts_one_by_one(flat)),
        "vectorised": _milliseconds(lambda: format_float_values(heatmap)),
        "gradcam_response_ms": _milliseconds(lambda: row_response(arrays)),
        "gradcam_overlay_response_ms": _milliseconds(lambda: row_response(without_heatmap)),
        "gradcam_response_bytes": len(text.encode()),
        "gradcam_overlay_response_bytes": len(row_response(without_heatmap).encode()),
        "client_parse_gradcam_ms": _milliseconds(lambda: json.loads(text)),
    }
