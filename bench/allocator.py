"""TensorFlow's CPU allocator, malloc against BFC: the served SavedModel in a child process each.

TensorFlow allocates CPU tensors with malloc unless `TF_CPU_ALLOCATOR_USE_BFC` is true; glibc
serves a buffer of 32 MiB or more with its own mmap and unmaps it on free, so every request
page-faults its largest tensors in again (the seed model's first convolution writes 32 MiB an
image). The allocator is chosen once per process, so each setting runs in its own child:
`python -m bench.allocator VERSION_DIR` prints one JSON line (one image at a time, p50 ms; a
batch of 8, images/s; minor page faults and kernel CPU seconds per batch call; resident memory
after them). Settings alternate, so the machine's drift falls on both.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["compare_allocators"]

ENV_NAME = "TF_CPU_ALLOCATOR_USE_BFC"


def _probe(version_dir: Path, one_calls: int, batch_calls: int) -> dict[str, float]:
    import tensorflow as tf

    from bench.stack import bench_images
    from model_contract.artifact import IMAGE_BYTES_INPUT, SERVING_SIGNATURE

    images = bench_images(16, 256)  # the seed preset's size, as the bench's requests
    loaded = tf.saved_model.load(str(version_dir))
    function = loaded.signatures[SERVING_SIGNATURE]

    def call(batch: list[bytes]) -> None:
        for tensor in function(**{IMAGE_BYTES_INPUT: tf.constant(batch)}).values():
            tensor.numpy()

    for warm in range(2):
        call(images[warm : warm + 1])
        call(images[:8])
    one = []
    for number in range(one_calls):
        started = time.perf_counter()
        call(images[number % len(images) : number % len(images) + 1])
        one.append(time.perf_counter() - started)
    before = resource.getrusage(resource.RUSAGE_SELF)
    batch = []
    for _ in range(batch_calls):
        started = time.perf_counter()
        call(images[:8])
        batch.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "one_p50_ms": statistics.median(one) * 1e3,
        "batch8_images_per_second": 8 / statistics.median(batch),
        "minor_faults_per_batch": (after.ru_minflt - before.ru_minflt) / batch_calls,
        "kernel_seconds_per_batch": (after.ru_stime - before.ru_stime) / batch_calls,
        "rss_mib": _resident_mib(),
    }


def _resident_mib() -> float:
    """The process's resident memory now (not its peak, which loading the model sets)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def compare_allocators(
    version_dir: Path, *, pairs: int = 3, one_calls: int = 20, batch_calls: int = 6
) -> dict[str, Any]:
    """Each setting (`malloc`: the variable false, `bfc`: true) run `pairs` times, alternating."""
    runs: dict[str, list[dict[str, float]]] = {"malloc": [], "bfc": []}
    root = Path(__file__).resolve().parents[1]
    for pair in range(pairs):
        order = ("malloc", "bfc") if pair % 2 == 0 else ("bfc", "malloc")
        for setting in order:
            env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
            env[ENV_NAME] = "true" if setting == "bfc" else "false"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.allocator",
                    str(version_dir),
                    str(one_calls),
                    str(batch_calls),
                ],
                env=env,
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
            )
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    medians = {
        setting: {key: statistics.median(run[key] for run in series) for key in series[0]}
        for setting, series in runs.items()
    }
    return {"runs": runs, "median": medians, "pairs": pairs}


if __name__ == "__main__":
    arguments = sys.argv[1:]
    print(json.dumps(_probe(Path(arguments[0]), int(arguments[1]), int(arguments[2]))))
