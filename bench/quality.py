"""Does the bfloat16-computing export answer as its float32 twin? (DESIGN.md: >= 99.5 % of
predicted classes agree, every probability within 0.02.)

Checked where it means something: the `small` preset trained on synthetic X-rays
(`synthetic.demo_model.train_demo_model`), both exports called through their serving signature on a
held-out synthetic test set of varied sizes (so crop and resize run too). The benchmark's
untrained `seed` model is checked as well, but its near-uniform probabilities make class
agreement a coin toss on ties, so its figures are reported with their decision margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_contract.artifact import IMAGE_BYTES_INPUT, PROBABILITIES_OUTPUT

__all__ = ["agreement", "measure_trained_agreement"]


def agreement(
    float32_function: Any, bfloat16_function: Any, images: Sequence[bytes], batch: int = 32
) -> dict[str, Any]:
    """Class agreement and probability differences of two serving signatures on `images`."""
    import tensorflow as tf

    reference, twin = [], []
    for start in range(0, len(images), batch):
        chunk = tf.constant(list(images[start : start + batch]))
        inputs = {IMAGE_BYTES_INPUT: chunk}
        reference.append(float32_function(**inputs)[PROBABILITIES_OUTPUT].numpy())
        twin.append(bfloat16_function(**inputs)[PROBABILITIES_OUTPUT].numpy())
    first, second = np.concatenate(reference), np.concatenate(twin)
    ordered = np.sort(first, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    difference = np.abs(first - second)
    return {
        "images": len(images),
        "class_agreement": float(np.mean(first.argmax(1) == second.argmax(1))),
        "max_probability_difference": float(difference.max()),
        "mean_probability_difference": float(difference.mean()),
        "median_top_margin": float(np.median(margins)),
        "predicted_class_counts": np.bincount(first.argmax(1), minlength=first.shape[1]).tolist(),
    }


def measure_trained_agreement(export_root: Path, test_images_per_class: int) -> dict[str, Any]:
    """Train the small demo model, export both twins, compare them on held-out films."""
    from bench.floor import load_signature
    from cnn_vit.config import CLASS_NAMES, get_preset
    from model_export.export import export_saved_model
    from synthetic.demo_model import train_demo_model
    from synthetic.xrays import encode_png, generate_xray

    model, metrics = train_demo_model("small", seed=0)
    config = get_preset("small")
    functions = {}
    for dtype in ("float32", "bfloat16"):
        target = export_root / f"agreement-small-{dtype}"
        export_saved_model(
            model,
            config,
            target,
            model_name="agreement",
            compute_dtype=dtype,
        )
        functions[dtype] = load_signature(target)
    images = [
        encode_png(generate_xray(name, np.random.default_rng([9090, class_index, index])).image)
        for class_index, name in enumerate(CLASS_NAMES)
        for index in range(test_images_per_class)
    ]
    figures = agreement(functions["float32"], functions["bfloat16"], images)
    figures["model_macro_f1"] = float(metrics["macro_f1"])
    figures["preset"] = "small"
    return figures
