"""The compute floor: the published SavedModel's signature called in-process, no HTTP at all.

What any server can at best add nothing to: decode and preprocessing in-graph, the forward pass,
the outputs fetched as NumPy. Measured with the same closed loop as the HTTP systems (threads
calling the concrete function; TensorFlow releases the GIL while it computes), and once with
one call holding a batch of eight images (what server-side batching can reach).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import Client
from bench.measure import Plan, load_series
from bench.stats import over_repetitions
from model_contract.artifact import IMAGE_BYTES_INPUT, PROBABILITIES_OUTPUT, SERVING_SIGNATURE

__all__ = ["batch_throughput", "load_signature", "measure_floor", "signature_client_factory"]


def load_signature(version_dir: Path, signature: str = SERVING_SIGNATURE) -> Any:
    """The restored concrete function of `signature` (the object is kept alive on it)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures[signature]
    function._bench_keep_alive = loaded  # the signature needs the restored variables
    return function


def signature_client_factory(
    function: Any, images: Sequence[bytes], inputs: Mapping[str, Any] | None = None
) -> Callable[[], Client]:
    """Clients calling `function` with one image per call, in turn, and the same other `inputs`
    (tensors by argument name, e.g. Grad-CAM's `target_class`) on every call."""
    import tensorflow as tf

    batches = [tf.constant([image]) for image in images]
    other_inputs = dict(inputs or {})

    def make_client() -> Client:
        def call(number: int) -> int:
            image = {IMAGE_BYTES_INPUT: batches[number % len(batches)]}
            outputs = function(**image, **other_inputs)
            for tensor in outputs.values():
                tensor.numpy()  # fetch every output, as a server does
            return 200

        return call

    return make_client


def batch_throughput(
    function: Any, images: Sequence[bytes], batch_size: int, seconds: float
) -> dict[str, float]:
    """Images per second when `batch_size` images go through one call, for `seconds`."""
    import tensorflow as tf

    batch = tf.constant([images[index % len(images)] for index in range(batch_size)])
    function(**{IMAGE_BYTES_INPUT: batch})  # warm
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function(**{IMAGE_BYTES_INPUT: batch})[PROBABILITIES_OUTPUT].numpy()
        calls += 1
    elapsed = time.perf_counter() - started
    return {
        "images_per_second": calls * batch_size / elapsed,
        "ms_per_batch": 1000 * elapsed / calls,
    }


def measure_floor(
    version_dir: Path, images: Sequence[bytes], plan: Plan, levels: Sequence[int], label: str
) -> dict[str, Any]:
    """Closed-loop series over `levels` plus batch-of-8 throughput for one published version."""
    function = load_signature(version_dir)
    series = load_series(
        signature_client_factory(function, images),
        levels,
        plan,
        seconds=plan.seconds * 0.7,
        label=label,
    )
    batched = over_repetitions(
        batch_throughput(function, images, 8, plan.seconds * 0.7) for _ in range(plan.repetitions)
    )
    return {"series": series, "batch_8": batched}
