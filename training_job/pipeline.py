"""The input pipeline: tf.data from image files or bytes, through the shared preprocessing.

Decoding runs `cnn_vit.preprocessing` (the exported model's own preprocessing, so training and
serving see the same pixels), decoded images are cached (in memory when they fit, else on local
disk), and augmentation (flip, rotation, zoom) happens after the cache, in the pipeline and never
in the model, so each epoch sees fresh variations and the export carries none of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from cnn_vit.preprocessing import decode_grayscale, preprocess_image_bytes
from training_job.options import TrainingOptions

__all__ = [
    "ImageItems",
    "augment_image",
    "find_unreadable",
    "make_dataset",
    "pipeline_cache",
    "shuffled_training_items",
    "training_datasets",
]

ImageItems = Sequence[str] | Sequence[bytes]
# Decoded images are cached in memory below this size, on local disk above it; the shuffle
# buffer (decoded images too) is bounded by the same size.
_MEMORY_CACHE_BYTES = 2 * 1024**3


def augment_image(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    rotation_degrees: float = 10.0,
    zoom: float = 0.2,
) -> tf.Tensor:
    """Random horizontal flip, rotation (up to +-`rotation_degrees`) and zoom (+-`zoom`).

    Stateless: the same `seed` (int64 [2]) gives the same result. Pixels moved in from outside
    the image are reflected, as Keras' RandomRotation/RandomZoom do by default.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    size = tf.cast(tf.shape(image)[0], tf.float32)
    angle = tf.random.stateless_uniform([], seeds[1], -rotation_degrees, rotation_degrees) * (
        math.pi / 180.0
    )
    # Sampling scale: > 1 shows more of the image (zoom out), < 1 less (zoom in).
    scale = 1.0 + tf.random.stateless_uniform([], seeds[2], -zoom, zoom)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    center = (size - 1.0) / 2.0
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotate and scale
    # about the centre.
    transform = tf.stack(
        [
            cos,
            -sin,
            center - cos * center + sin * center,
            sin,
            cos,
            center - sin * center - cos * center,
            0.0,
            0.0,
        ]
    )
    transformed = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    return tf.clip_by_value(tf.ensure_shape(transformed, image.shape), 0.0, 1.0)


def _without_autograph(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a tf.data map function as plain graph code (no Python control flow on tensors):
    AutoGraph would otherwise re-parse its source, which fails for lambdas and is slow."""
    return tf.autograph.experimental.do_not_convert(function)


def _is_bytes_items(items: ImageItems) -> bool:
    return bool(items) and isinstance(items[0], bytes | bytearray)


def _image_bytes_dataset(items: ImageItems) -> tf.data.Dataset:
    """Encoded bytes per item: read from disk for paths, as given for bytes."""
    if _is_bytes_items(items):
        return tf.data.Dataset.from_tensor_slices(tf.constant(list(items), dtype=tf.string))
    paths = tf.data.Dataset.from_tensor_slices(
        tf.constant([str(item) for item in items], dtype=tf.string)
    )
    return paths.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    items: ImageItems,
    labels: Sequence[int] | npt.NDArray[np.integer[Any]] | None,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    cache: bool | str = True,
    augment: bool | None = None,
    rotation_degrees: float = 10.0,
    zoom: float = 0.2,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    skip_unreadable: bool = False,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of (image float32 [B, S, S, 1], label int32 [B]).

    `items` are file paths or encoded image bytes; `labels` are class indices (None: images
    only). Decoding runs in parallel through `preprocess_image_bytes` (the exported model's own
    preprocessing), then the decoded images are cached (`True`: in memory; a path: on disk, one
    path per image size, dataset and worker process; `False`: not at all). `training=True`
    reshuffles every epoch and, when `augment` (default: `training`), augments after the cache
    so each epoch sees fresh variations. Evaluation keeps the input order. `skip_unreadable`
    drops images the decoder rejects (`find_unreadable` names them); otherwise an unreadable
    image fails the iteration.
    """
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    augment = training if augment is None else augment
    images = _image_bytes_dataset(items).map(
        _without_autograph(lambda data: preprocess_image_bytes(data, image_size)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if labels is not None:
        label_tensor = tf.constant(np.asarray(labels, dtype=np.int32))
        dataset = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(label_tensor)))
    else:
        dataset = images
    if skip_unreadable:
        dataset = dataset.ignore_errors()
    if cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(str(cache))
    if training:
        buffer = shuffle_buffer or max(1, len(items))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        # A fresh random seed per element and per epoch, yet reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def _augment(element: Any, element_seed: tf.Tensor) -> Any:
            if labels is None:
                return augment_image(
                    element, element_seed, rotation_degrees=rotation_degrees, zoom=zoom
                )
            image, label = element
            image = augment_image(image, element_seed, rotation_degrees=rotation_degrees, zoom=zoom)
            return image, label

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            _without_autograph(_augment), num_parallel_calls=tf.data.AUTOTUNE
        )
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory items have no files to shard by: multi-worker training shards by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def find_unreadable(items: ImageItems) -> list[int]:
    """Indices of items the shared decoder rejects (missing file, corrupt or unknown format)."""
    if not items:
        return []
    indices = tf.data.Dataset.range(len(items))
    data = _image_bytes_dataset(items)

    def _decode(index: tf.Tensor, encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # Return something computed from the pixels, so the decode cannot be pruned away and its
        # failure drops this index.
        return index, tf.reduce_max(decode_grayscale(encoded))

    readable = (
        tf.data.Dataset.zip((indices, data))
        .map(_without_autograph(_decode), num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    seen = {int(index) for index, _ in readable.as_numpy_iterator()}
    return [index for index in range(len(items)) if index not in seen]


def _decoded_bytes(image_size: int) -> int:
    return image_size * image_size * 4  # float32, one channel


def pipeline_cache(images: int, image_size: int, folder: Path) -> bool | str:
    """Keep decoded images in memory when they fit comfortably, else in files under `folder`."""
    if images * _decoded_bytes(image_size) <= _MEMORY_CACHE_BYTES:
        return True
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / "decoded")


def shuffled_training_items(
    paths: Sequence[str], labels: Sequence[int], image_size: int, seed: int
) -> tuple[list[str], list[int], int]:
    """The training items in a seeded random order, and a shuffle buffer that fits in memory.

    The database lists images grouped by batch, split and class; a bounded shuffle buffer over
    that order would fill batches with one class. Shuffling the items first (so the cache holds
    them in random order) and reshuffling within the buffer each epoch mixes them well.
    """
    order = np.random.default_rng(seed).permutation(len(paths))
    buffer = max(1, min(len(paths), _MEMORY_CACHE_BYTES // _decoded_bytes(image_size)))
    return [paths[i] for i in order], [int(labels[i]) for i in order], buffer


def training_datasets(
    options: TrainingOptions,
    image_size: int,
    train: tuple[ImageItems, Sequence[int]],
    validation: tuple[ImageItems, Sequence[int]] | None = None,
    *,
    train_cache: bool | str = True,
    validation_cache: bool | str = True,
    shuffle_buffer: int | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The training pipeline (shuffled, augmented as `options` say) and the validation one
    (in order, never augmented; None without validation images)."""
    train_dataset = make_dataset(
        train[0],
        train[1],
        image_size,
        options.batch_size,
        training=True,
        augment=options.augment,
        cache=train_cache,
        rotation_degrees=options.rotation_degrees,
        zoom=options.zoom,
        seed=options.seed,
        shuffle_buffer=shuffle_buffer,
    )
    if validation is None or not len(validation[0]):
        return train_dataset, None
    validation_dataset = make_dataset(
        validation[0],
        validation[1],
        image_size,
        options.batch_size,
        training=False,
        cache=validation_cache,
    )
    return train_dataset, validation_dataset
