"""The compute floor: the published SavedModel's signature called in-process, no HTTP at all.

What any server can at best add nothing to: decode and preprocessing in-graph, the forward pass,
the outputs fetched as NumPy. Measured with the same closed loop as the HTTP systems (threads
calling the concrete function; TensorFlow releases the GIL while it computes), and once with
one call holding a batch of eight images (what server-side batching can reach).

The seed model's floors run in a child process per compute dtype (`measure_floor_in_child`):
measured in the bench process itself, after the setup's exports and the other dtype's runs, the
bfloat16 floor came out 40 % below the same calls in a fresh process (33 against 59 images/s in
batches of 8, on an AVX512-BF16 EPYC), which made the whole stack look faster than its floor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import Client
from bench.measure import Plan, load_series
from bench.stats import over_repetitions, percentile
from model_contract.artifact import IMAGE_BYTES_INPUT, PROBABILITIES_OUTPUT, SERVING_SIGNATURE

__all__ = [
    "batch_throughput",
    "load_signature",
    "measure_floor",
    "measure_floor_in_child",
    "signature_client_factory",
]


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


def _seed_floors(
    version_dirs: Mapping[str, Path], dtype: str, images: Sequence[bytes], plan: Plan
) -> dict[str, Any]:
    """The seed export's floors in one compute dtype: predict over the plan's client levels and
    in batches of 8, and the Grad-CAM signatures at one client (with and without XLA on the tail:
    `version_dirs` maps `dtype` and `<dtype>-plain` to their exports)."""
    import tensorflow as tf

    from model_contract.artifact import (
        GRADCAM_OVERLAY_SIGNATURE,
        GRADCAM_SIGNATURE,
        PREDICTED_CLASS,
        TARGET_CLASS_INPUT,
    )

    floors: dict[str, Any] = {
        f"seed-{dtype}": measure_floor(
            version_dirs[dtype], images, plan, plan.client_levels, f"floor seed {dtype}"
        )
    }
    variants = [
        (GRADCAM_SIGNATURE, dtype, ""),
        (GRADCAM_OVERLAY_SIGNATURE, dtype, ""),
        # The before of XLA on Grad-CAM's tail (the export's gradcam_xla).
        (GRADCAM_OVERLAY_SIGNATURE, f"{dtype}-plain", "-plain"),
    ]
    for signature, version_key, suffix in variants:
        function = load_signature(version_dirs[version_key], signature)
        floors[f"seed-{dtype}-{signature}{suffix}"] = load_series(
            signature_client_factory(
                function, images, {TARGET_CLASS_INPUT: tf.constant([PREDICTED_CLASS], tf.int32)}
            ),
            [1],
            plan,
            seconds=plan.seconds * 0.7,
            label=f"floor seed {dtype} {signature}{suffix}",
        )
        if signature == GRADCAM_OVERLAY_SIGNATURE and not suffix:
            floors[f"seed-{dtype}-png"] = png_encoding_cost(function, images)
        del function
    return floors


def png_encoding_cost(
    overlay_function: Any, images: Sequence[bytes], rounds: int = 20
) -> dict[str, float]:
    """What encoding Grad-CAM's PNG costs alone: the overlays `overlay_function` (the
    `gradcam_overlay` signature) draws for `images`, decoded, then encoded again as the export
    does (`tf.io.encode_png` at `PNG_COMPRESSION`), one at a time, `rounds` times each."""
    import tensorflow as tf

    from cnn_vit.gradcam import PNG_COMPRESSION
    from model_contract.artifact import (
        OVERLAY_PNG_OUTPUT,
        PREDICTED_CLASS,
        TARGET_CLASS_INPUT,
    )

    overlays = [
        tf.io.decode_png(
            overlay_function(
                **{
                    IMAGE_BYTES_INPUT: tf.constant([image]),
                    TARGET_CLASS_INPUT: tf.constant([PREDICTED_CLASS], tf.int32),
                }
            )[OVERLAY_PNG_OUTPUT][0]
        )
        for image in images
    ]
    times, sizes = [], []
    for _ in range(rounds):
        for overlay in overlays:
            started = time.perf_counter()
            encoded = tf.io.encode_png(overlay, compression=PNG_COMPRESSION).numpy()
            times.append((time.perf_counter() - started) * 1000)
            sizes.append(len(encoded))
    return {
        "ms_p50": percentile(times, 0.5),
        "bytes_mean": sum(sizes) / len(sizes),
        "side": float(overlays[0].shape[0]),
    }


def measure_floor_in_child(
    version_dirs: Mapping[str, Path], dtype: str, image_count: int, image_size: int, plan: Plan
) -> dict[str, Any]:
    """`_seed_floors` in a fresh process (`python -m bench.floor`), which makes the bench's
    images again (`bench_images(image_count, image_size)`); its progress lines go to this
    process's output, TensorFlow's log only if it fails. The environment is this process's (the
    model server's allocator)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as folder:
        request = Path(folder) / "request.json"
        answer = Path(folder) / "answer.json"
        request.write_text(
            json.dumps(
                {
                    "version_dirs": {key: str(path) for key, path in version_dirs.items()},
                    "dtype": dtype,
                    "image_count": image_count,
                    "image_size": image_size,
                    "plan": dataclasses.asdict(plan),
                    "answer": str(answer),
                }
            ),
            encoding="utf-8",
        )
        env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(
            [sys.executable, "-m", "bench.floor", str(request)],
            env=env,
            cwd=root,
            stderr=subprocess.PIPE,  # TensorFlow's start-up chatter; shown if the child fails
            text=True,
            check=False,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the {dtype} floor's process failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(answer.read_text(encoding="utf-8"))
        return result


def _child(request_path: Path) -> None:
    from bench.stack import bench_images

    request = json.loads(request_path.read_text(encoding="utf-8"))
    fields = {field.name for field in dataclasses.fields(Plan)}
    plan = Plan(
        **{
            key: tuple(value) if isinstance(value, list) else value
            for key, value in request["plan"].items()
            if key in fields
        }
    )
    floors = _seed_floors(
        {key: Path(path) for key, path in request["version_dirs"].items()},
        request["dtype"],
        bench_images(request["image_count"], request["image_size"]),
        plan,
    )
    Path(request["answer"]).write_text(json.dumps(floors), encoding="utf-8")


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
