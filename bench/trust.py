"""What the trust outputs cost per request (issue 17): calibration, the refer threshold and the
out-of-distribution check, each added to the same network's export, timed in-process.

Three exports of one model: `plain` (no temperature, no threshold, no OOD statistics),
`calibrated` (a temperature and a refer threshold: two constants and one softmax more) and
`checked` (also the OOD statistics: the image checks decode the upload once more, and the
encoder's channel statistics feed one Mahalanobis product; Grad-CAM pays one more encoder
pass). Each signature is called with one image at a time, the variants interleaved call by
call so drift hits them alike; medians per variant and their ratio to `plain`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_contract.artifact import (
    GRADCAM_OVERLAY_SIGNATURE,
    IMAGE_BYTES_INPUT,
    PREDICTED_CLASS,
    SERVING_SIGNATURE,
    TARGET_CLASS_INPUT,
)

__all__ = ["measure_trust_costs"]

VARIANTS = ("plain", "calibrated", "checked")


def _fit_ood(model: Any, image_size: int, images: Sequence[bytes]) -> Any:
    import numpy as np
    import tensorflow as tf

    from cnn_vit.ood import encoder_statistics_model, statistics_from_outputs
    from cnn_vit.preprocessing import preprocess_batch
    from training_job.ood import fit_ood

    encoder = encoder_statistics_model(model, with_probabilities=False)
    maps = encoder(preprocess_batch(tf.constant(list(images)), image_size), training=False)
    features = statistics_from_outputs(maps if isinstance(maps, list) else [maps]).numpy()
    half = len(features) // 2
    return fit_ood(features[:half].astype(np.float64), features[half:].astype(np.float64))


def measure_trust_costs(
    preset: str,
    weights_file: Path,
    work: Path,
    images: Sequence[bytes],
    calls: int,
    fit_images: Sequence[bytes],
) -> dict[str, Any]:
    """Median milliseconds per call of `serving_default` and `gradcam_overlay` for each
    variant, with their ratios to `plain` (the OOD statistics fitted on `fit_images`)."""
    import tensorflow as tf

    from cnn_vit.config import get_preset
    from cnn_vit.model import build_model
    from model_export.export import export_saved_model

    config = get_preset(preset)
    model = build_model(config)
    model.load_weights(str(weights_file))
    ood = _fit_ood(model, config.image_size, fit_images)
    options: dict[str, dict[str, Any]] = {
        "plain": {},
        "calibrated": {"temperature": 0.7, "refer_threshold": 0.6},
        "checked": {"temperature": 0.7, "refer_threshold": 0.6, "ood": ood},
    }
    signatures: dict[str, dict[str, Any]] = {}
    for variant, extra in options.items():
        export_dir = work / f"trust-{preset}-{variant}"
        export_saved_model(model, config, export_dir, model_name="bench", **extra)
        loaded = tf.saved_model.load(str(export_dir))
        signatures[variant] = {
            SERVING_SIGNATURE: loaded.signatures[SERVING_SIGNATURE],
            GRADCAM_OVERLAY_SIGNATURE: loaded.signatures[GRADCAM_OVERLAY_SIGNATURE],
            "keep": loaded,
        }
    batches = [tf.constant([image]) for image in images]
    target = tf.constant([PREDICTED_CLASS], tf.int32)
    figures: dict[str, Any] = {"preset": preset, "calls": calls, "image_count": len(images)}
    for signature in (SERVING_SIGNATURE, GRADCAM_OVERLAY_SIGNATURE):
        times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for number in range(calls + 3):  # the first three of each: warm-up, not counted
            inputs = {IMAGE_BYTES_INPUT: batches[number % len(batches)]}
            if signature != SERVING_SIGNATURE:
                inputs[TARGET_CLASS_INPUT] = target
            for variant in VARIANTS:
                function = signatures[variant][signature]
                started = time.perf_counter()
                function(**inputs)
                if number >= 3:
                    times[variant].append((time.perf_counter() - started) * 1000)
        medians = {variant: statistics.median(values) for variant, values in times.items()}
        figures[signature] = {
            "p50_ms": {variant: round(value, 2) for variant, value in medians.items()},
            "ratio_to_plain": {
                variant: round(value / medians["plain"], 3) for variant, value in medians.items()
            },
        }
    return figures
