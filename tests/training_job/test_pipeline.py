"""The input pipeline: augmentation, datasets in training and evaluation order, unreadable files,
where decoded images are cached, and the order and shuffle buffer of the training items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.training_job.tiny import films
from training_job.pipeline import (
    augment_image,
    find_unreadable,
    make_dataset,
    pipeline_cache,
    shuffled_training_items,
)


def test_augment_image_same_seed_same_result_in_range() -> None:
    image = tf.random.stateless_uniform((32, 32, 1), seed=(1, 2))
    seed = tf.constant([3, 4], tf.int64)

    first = augment_image(image, seed).numpy()
    second = augment_image(image, seed).numpy()
    other = augment_image(image, tf.constant([5, 6], tf.int64)).numpy()

    np.testing.assert_array_equal(first, second)
    assert first.shape == (32, 32, 1)
    assert first.min() >= 0.0
    assert first.max() <= 1.0
    assert not np.array_equal(first, other)


def test_augment_image_without_rotation_or_zoom_only_flips() -> None:
    image = tf.random.stateless_uniform((16, 16, 1), seed=(1, 2))
    results = [
        augment_image(image, tf.constant([seed, 0], tf.int64), rotation_degrees=0.0, zoom=0.0)
        .numpy()
        .squeeze()
        for seed in range(8)
    ]
    original = image.numpy().squeeze()

    for result in results:
        is_identity = np.allclose(result, original, atol=1e-6)
        is_mirror = np.allclose(result, original[:, ::-1], atol=1e-6)
        assert is_identity or is_mirror
    assert any(np.allclose(result, original[:, ::-1], atol=1e-6) for result in results)


def test_make_dataset_evaluation_keeps_order_and_labels() -> None:
    items, labels = films(7)
    dataset = make_dataset(items, labels, 16, batch_size=3, training=False)

    batches = [(int(images.shape[0]), batch.numpy().tolist()) for images, batch in dataset]

    assert [size for size, _ in batches] == [3, 3, 1]
    assert [label for _, batch in batches for label in batch] == labels


def test_make_dataset_training_reshuffles_each_epoch_and_keeps_every_item() -> None:
    items, _ = films(12)
    dataset = make_dataset(
        items, list(range(12)), 16, batch_size=12, training=True, augment=False, seed=1
    )

    first_epoch = next(iter(dataset))[1].numpy().tolist()
    second_epoch = next(iter(dataset))[1].numpy().tolist()

    assert sorted(first_epoch) == list(range(12))
    assert sorted(second_epoch) == list(range(12))
    assert first_epoch != second_epoch


def test_make_dataset_training_augments_differently_each_epoch() -> None:
    items, labels = films(1)
    dataset = make_dataset(items, labels, 16, batch_size=1, training=True, seed=1)

    first = next(iter(dataset))[0].numpy()
    second = next(iter(dataset))[0].numpy()

    assert not np.array_equal(first, second)


def test_make_dataset_unreadable_file_fails_unless_skipped(tmp_path: Path) -> None:
    items, labels = films(3)
    paths = []
    for index, data in enumerate([*items, b"not an image"]):
        path = tmp_path / f"{index}.png"
        path.write_bytes(data)
        paths.append(str(path))
    labels = [*labels, 0]

    with pytest.raises(tf.errors.InvalidArgumentError):
        list(make_dataset(paths, labels, 16, 8, training=False))
    skipped = list(make_dataset(paths, labels, 16, 8, training=False, skip_unreadable=True))

    assert sum(int(images.shape[0]) for images, _ in skipped) == 3


def test_find_unreadable_names_corrupt_and_missing_files(tmp_path: Path) -> None:
    items, _ = films(2)
    good = tmp_path / "good.png"
    good.write_bytes(items[0])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(items[1][:40])
    text = tmp_path / "text.png"
    text.write_bytes(b"hello")
    paths = [str(good), str(truncated), str(tmp_path / "missing.png"), str(text), str(good)]

    assert find_unreadable(paths) == [1, 2, 3]


def test_make_dataset_labels_of_other_length_raise() -> None:
    items, _ = films(3)

    with pytest.raises(ValueError, match="labels"):
        make_dataset(items, [0, 1], 16, 8, training=False)


def test_pipeline_cache_small_in_memory_large_on_disk(tmp_path: Path) -> None:
    assert pipeline_cache(1_000, 64, tmp_path / "small") is True
    on_disk = pipeline_cache(33_000, 256, tmp_path / "seed")
    assert isinstance(on_disk, str)
    assert Path(on_disk).parent.is_dir()


def test_shuffled_training_items_keeps_pairs_and_bounds_the_buffer() -> None:
    paths = [f"{index:05d}.png" for index in range(33_000)]
    labels = [index % 3 for index in range(33_000)]

    shuffled, shuffled_labels, buffer = shuffled_training_items(paths, labels, 256, seed=0)
    again, _, _ = shuffled_training_items(paths, labels, 256, seed=0)

    assert shuffled == again
    assert shuffled != paths
    assert sorted(shuffled) == paths
    assert all(
        int(path[:5]) % 3 == label for path, label in zip(shuffled, shuffled_labels, strict=True)
    )
    assert buffer == 8192  # 2 GiB of 256 x 256 float32 images
    assert shuffled_training_items(paths[:10], labels[:10], 64, seed=0)[2] == 10
