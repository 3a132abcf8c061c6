"""Training throughput: the input pipeline alone, and whole training steps.

The pipeline is `training_job.pipeline.make_dataset` exactly as training uses it (decode, the
shared preprocessing, shuffle, augmentation, batching, prefetch) over synthetic 256 px PNG
files on disk. It is measured on one core (tf.data's private pool and intra-op parallelism held
to one thread) and on every core, for the first epoch (decode and preprocess every file) and a
cached epoch (what later epochs do: augmentation only). Training steps run
`training_job.training_loop.train_model`, the real loop; the first epoch (tracing, cache fill)
is left out.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_input_pipeline", "measure_training_steps"]


def _write_images(folder: Path, count: int, size: int) -> tuple[list[str], list[int]]:
    """`count` bench images (seed 5: films 5000, 5001, ...) as PNG files in `folder`, and their
    labels; files already there are kept."""
    from bench.stack import bench_images
    from cnn_vit.config import CLASS_NAMES

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:05d}.png" for index in range(count)]
    if not all(path.exists() for path in paths):
        for path, image in zip(paths, bench_images(count, size, seed=5), strict=True):
            if not path.exists():
                path.write_bytes(image)
    return [str(path) for path in paths], [index % len(CLASS_NAMES) for index in range(count)]


def _images_per_second(dataset: Any, epochs: int) -> float:
    """Images per second over `epochs` full passes (the first batch of the first is a warm-up)."""
    iterator = iter(dataset)
    first = next(iterator)
    started = time.perf_counter()
    count = 0
    for batch in iterator:
        count += int(batch[0].shape[0])
    for _ in range(epochs - 1):
        for batch in dataset:
            count += int(batch[0].shape[0])
    del first
    return count / (time.perf_counter() - started)


def measure_input_pipeline(folder: Path, count: int, repetitions: int) -> dict[str, Any]:
    """Images per second of the training pipeline, on one core and on all, uncached and cached."""
    import tensorflow as tf

    from training_job.pipeline import make_dataset

    paths, labels = _write_images(folder, count, 256)
    cores = len(os.sched_getaffinity(0))
    results: dict[str, Any] = {"images": count, "image_size": 256, "cores": cores}
    for mode in ("one_core", "all_cores"):
        options = tf.data.Options()
        if mode == "one_core":
            options.threading.private_threadpool_size = 1
            options.threading.max_intra_op_parallelism = 1
        for cached in (False, True):
            rates = []
            for _ in range(repetitions):
                dataset = make_dataset(
                    paths, labels, 256, 32, training=True, cache=cached, augment=True, seed=0
                ).with_options(options)
                if cached:
                    for _batch in dataset:  # fill the cache: later epochs only augment
                        pass
                rates.append(_images_per_second(dataset, 1))
            key = f"{mode}_{'cached' if cached else 'first_epoch'}"
            results[key] = {
                "images_per_second": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
            }
            print(f"[bench]   input pipeline {key}: {statistics.median(rates):.0f} images/s")
    for epoch in ("first_epoch", "cached"):
        results[f"per_core_{epoch}"] = {
            "one_core": results[f"one_core_{epoch}"]["images_per_second"],
            "all_cores_divided": results[f"all_cores_{epoch}"]["images_per_second"] / cores,
        }
    return results


def measure_training_steps(preset: str, count: int, batch_size: int, epochs: int) -> dict[str, Any]:
    """Images per second of `train_model` on `preset`, epochs after the first."""
    import keras

    from bench.stack import bench_images
    from cnn_vit.config import CLASS_NAMES, get_preset
    from cnn_vit.model import build_model
    from training_job.options import TrainingOptions
    from training_job.pipeline import make_dataset
    from training_job.training_loop import train_model

    config = get_preset(preset)
    keras.utils.set_random_seed(0)
    images = bench_images(count, config.image_size, seed=11)
    labels = [index % len(CLASS_NAMES) for index in range(count)]
    dataset = make_dataset(images, labels, config.image_size, batch_size, training=True, seed=0)
    model = build_model(config)
    options = TrainingOptions(batch_size=batch_size, epochs=epochs, patience=epochs)
    result = train_model(model, dataset, None, options)
    rates = [record.images_per_second for record in result.history[1:]]
    figure = {
        "preset": preset,
        "images": count,
        "batch_size": batch_size,
        "epochs_measured": len(rates),
        "images_per_second": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
    }
    print(f"[bench]   training steps {preset}: {figure['images_per_second']:.1f} images/s")
    return figure
