"""The compute-bound ceiling: how many images per second the machine's GEMM rate allows.

The seed model's work is almost all convolutions (`encoder_conv_2` alone, 3 x 3 x 128 -> 128 on
128 x 128, is 83 % of its FLOPs), which oneDNN runs as GEMM-like kernels, so the best matrix
multiply rate measured on the machine bounds what any serving of that model can reach:
ceiling = GEMM FLOP/s / model FLOPs per image. The rate is the best of TensorFlow's `matmul`
(oneDNN, the library the model's kernels come from) and NumPy's (OpenBLAS) over a few square
sizes; small sizes understate it (OpenBLAS reaches its rate at n = 4096 here, not at 1024).
The model's FLOPs are TensorFlow's own count over its forward graph for one image (a
multiply-add is two FLOPs). bfloat16 is measured the same way with TensorFlow's `matmul`
(NumPy has no bfloat16 GEMM).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

__all__ = ["gemm_rates", "measure_ceiling", "model_flops"]

SIZES = (1024, 2048, 4096)


def _best_seconds(run: Any, repeats: int) -> float:
    run()  # warm (oneDNN primitive creation, page faults)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def gemm_rates(sizes: Sequence[int] = SIZES, repeats: int = 3) -> dict[str, Any]:
    """GFLOP/s of square matrix multiplies, per library, dtype and size, and the best of each."""
    import numpy as np
    import tensorflow as tf

    rates: dict[str, dict[str, float]] = {
        "numpy_float32": {},
        "tensorflow_float32": {},
        "tensorflow_bfloat16": {},
    }
    rng = np.random.default_rng(0)
    for size in sizes:
        flops = 2.0 * size**3
        a = rng.random((size, size), dtype=np.float32)
        b = rng.random((size, size), dtype=np.float32)
        seconds = _best_seconds(lambda a=a, b=b: a @ b, repeats)
        rates["numpy_float32"][str(size)] = flops / seconds / 1e9
        for dtype, key in (
            (tf.float32, "tensorflow_float32"),
            (tf.bfloat16, "tensorflow_bfloat16"),
        ):
            ta, tb = tf.cast(tf.constant(a), dtype), tf.cast(tf.constant(b), dtype)
            matmul = tf.function(tf.linalg.matmul, autograph=False)

            def run(ta: Any = ta, tb: Any = tb, matmul: Any = matmul) -> None:
                matmul(ta, tb).numpy()

            rates[key][str(size)] = flops / _best_seconds(run, repeats) / 1e9
    best = {key: max(values.values()) for key, values in rates.items()}
    return {
        "sizes": list(sizes),
        "gflops": {
            key: {size: round(rate, 1) for size, rate in values.items()}
            for key, values in rates.items()
        },
        "best_gflops": {key: round(value, 1) for key, value in best.items()},
        "sgemm_gflops": round(max(best["numpy_float32"], best["tensorflow_float32"]), 1),
        "bf16_gemm_gflops": round(best["tensorflow_bfloat16"], 1),
    }


def model_flops(preset: str) -> float:
    """FLOPs of one image's forward pass of `preset` (TensorFlow's count, a multiply-add = 2)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from cnn_vit.config import get_preset
    from cnn_vit.model import build_model

    config = get_preset(preset)
    model = build_model(config)
    spec = tf.TensorSpec([1, config.image_size, config.image_size, 1], tf.float32)
    concrete = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return float(profile.total_float_ops)


def measure_ceiling(preset: str, *, quick: bool = False) -> dict[str, Any]:
    """The GEMM rates, the model's FLOPs and the resulting images/s ceilings."""
    rates = gemm_rates(repeats=2 if quick else 3)
    flops = model_flops(preset)
    gflop = flops / 1e9
    return {
        "preset": preset,
        **rates,
        "model_gflop_per_image": round(gflop, 3),
        "ceiling_images_per_second": {
            "float32": round(rates["sgemm_gflops"] / gflop, 1),
            "bfloat16": round(rates["bf16_gemm_gflops"] / gflop, 1),
        },
    }
