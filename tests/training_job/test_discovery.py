"""Discovery of the image database: both layouts, batches at the root, masks ignored, unknown
classes refused, seeded stratified splits for batches without them, the dataset fingerprint."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from storage import ObjectInfo, Store, keys
from synthetic.xrays import encode_png, write_covid_qu_ex_to_store
from training_job.discovery import (
    DatasetError,
    ImageRecord,
    assign_missing_splits,
    dataset_fingerprint,
    discover_dataset,
    index_images,
    parse_image_key,
)

PNG = encode_png(np.zeros((4, 4), dtype=np.uint8))


def _db(store: Store) -> Store:
    return store.child(keys.DB_AREA)


def _records(keys_and_tags: dict[str, str]) -> list[ImageRecord]:
    records = []
    for key, etag in keys_and_tags.items():
        parsed = parse_image_key(key)
        assert parsed is not None
        batch, split, class_name = parsed
        records.append(ImageRecord(key, etag, 1, batch, class_name, split, split is not None))
    return records


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("b1/Train/COVID-19/images/a.png", ("b1", "train", "covid")),
        ("b1/Val/Non-COVID/images/a.PNG", ("b1", "val", "no-covid")),
        ("b1/Test/Normal/images/a.jpg", ("b1", "test", "normal")),
        ("b1/Train/COVID-19/lung masks/a.png", None),
        ("b1/Train/COVID-19/infection masks/a.png", None),
        ("b1/train/normal/a.png", ("b1", "train", "normal")),
        ("Train/Normal/images/a.png", ("", "train", "normal")),
        ("test/no-covid/a.jpeg", ("", "test", "no-covid")),
        ("b2/covid/a.png", ("b2", None, "covid")),
        ("b2/Normal/images/a.png", ("b2", None, "normal")),
        ("site/2026-01/validation/COVID/a.png", ("site/2026-01", "val", "covid")),
        ("b1/README.md", None),
        ("b1/Train/Normal/images/.hidden.png", None),
    ],
)
def test_parse_image_key_layouts_give_batch_split_class(
    key: str, expected: tuple[str, str | None, str] | None
) -> None:
    assert parse_image_key(key) == expected


@pytest.mark.parametrize(
    "key", ["b1/Train/Pneumonia/images/a.png", "b1/Train/a.png", "b1/x.png", "x.png"]
)
def test_parse_image_key_image_outside_a_class_folder_raises_naming_the_folder(key: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_image_key(key)

    assert key in str(caught.value)


def test_discover_dataset_covid_qu_ex_layout_indexes_images_and_ignores_masks(
    store: Store,
) -> None:
    written = write_covid_qu_ex_to_store(
        store, keys.db_prefix("b1"), {"train": 3, "val": 1, "test": 2}
    )

    index = discover_dataset(_db(store))

    images = [item for item in written if item.is_image]
    assert len(index.records) == len(images)
    assert index.ignored == len(written) - len(images)  # the lung masks
    assert index.batches == ["b1"]
    assert index.counts()["train"] == {"normal": 3, "covid": 3, "no-covid": 3}
    assert index.counts()["test"] == {"normal": 2, "covid": 2, "no-covid": 2}
    by_key = {record.key: record for record in index.records}
    assert by_key["b1/Train/COVID-19/images/covid_00001.png"].label == 1
    assert all(record.etag for record in index.records)
    assert index.fingerprint.startswith("sha256:")


def test_discover_dataset_plain_layout_at_database_root_and_in_a_batch(store: Store) -> None:
    write_covid_qu_ex_to_store(
        store, keys.DB_AREA, {"train": 2, "val": 1, "test": 1}, layout="plain"
    )
    write_covid_qu_ex_to_store(store, keys.db_prefix("b2"), {"train": 2, "test": 1}, layout="plain")

    index = discover_dataset(_db(store))

    assert index.batches == ["", "b2"]
    assert index.counts()["train"] == {"normal": 4, "covid": 4, "no-covid": 4}
    assert index.counts()["val"] == {"normal": 1, "covid": 1, "no-covid": 1}
    assert all(record.split_given for record in index.records)


def test_discover_dataset_unknown_class_folder_raises(local_store: Store) -> None:
    write_covid_qu_ex_to_store(local_store, keys.db_prefix("b1"), {"train": 1, "test": 1})
    local_store.put("input/db/b1/Train/Tuberculosis/images/t.png", PNG)

    with pytest.raises(DatasetError) as caught:
        discover_dataset(_db(local_store))

    assert "Tuberculosis" in str(caught.value)


def test_discover_dataset_empty_database_raises(local_store: Store) -> None:
    local_store.put("input/db/notes.txt", b"no images yet")

    with pytest.raises(DatasetError):
        discover_dataset(_db(local_store))


def test_discover_dataset_batch_without_splits_is_split_per_class(local_store: Store) -> None:
    for class_folder in ("Normal", "COVID-19", "Non-COVID"):
        for index in range(20):
            local_store.put(f"input/db/unsplit/{class_folder}/images/{index:03d}.png", PNG)

    index = discover_dataset(_db(local_store))

    counts = index.counts()
    for class_name in ("normal", "covid", "no-covid"):
        assert counts["test"][class_name] == 3  # 15 % of 20
        assert counts["val"][class_name] == 3
        assert counts["train"][class_name] == 14
    assert index.carved == {"test": 9, "val": 9, "train": 42}
    assert not any(record.split_given for record in index.records)


def test_assign_missing_splits_same_seed_same_split_other_seed_another() -> None:
    records = _records({f"b/normal/{index:03d}.png": "t" for index in range(40)})

    first, _ = assign_missing_splits(records, seed=0)
    again, _ = assign_missing_splits(list(reversed(records)), seed=0)
    other, _ = assign_missing_splits(records, seed=1)

    def split_of(result: list[ImageRecord]) -> dict[str, str | None]:
        return {record.key: record.split for record in result}

    assert split_of(first) == split_of(again)
    assert split_of(first) != split_of(other)


def test_assign_missing_splits_growing_batch_keeps_almost_every_split() -> None:
    before = _records({f"b/covid/{index:03d}.png": "t" for index in range(100)})
    after = _records({f"b/covid/{index:03d}.png": "t" for index in range(110)})

    old = {record.key: record.split for record in assign_missing_splits(before)[0]}
    new = {record.key: record.split for record in assign_missing_splits(after)[0]}

    moved = [key for key in old if old[key] != new[key]]
    assert len(moved) <= 4  # only images at a quota boundary move


def test_assign_missing_splits_database_without_test_split_carves_it_from_train() -> None:
    records = _records(
        {
            f"b/Train/{folder}/{index:02d}.png": "t"
            for folder in ("Normal", "COVID")
            for index in range(14)
        }
        | {
            f"b/Val/{folder}/{index:02d}.png": "t"
            for folder in ("Normal", "COVID")
            for index in range(2)
        }
    )

    result, carved = assign_missing_splits(records)

    counts = Counter((record.split, record.class_name) for record in result)
    assert counts[("test", "normal")] == counts[("test", "covid")] == 3  # 15 % of the whole
    assert counts[("val", "normal")] == 2  # given splits are kept
    assert carved == {"test": 6}


def test_dataset_fingerprint_changes_with_any_image_added_replaced_or_removed() -> None:
    base = _records({"b/normal/a.png": "1", "b/covid/b.png": "2"})
    replaced = _records({"b/normal/a.png": "1", "b/covid/b.png": "3"})
    added = _records({"b/normal/a.png": "1", "b/covid/b.png": "2", "b/covid/c.png": "4"})
    removed = _records({"b/normal/a.png": "1"})

    fingerprints = {dataset_fingerprint(records) for records in (base, replaced, added, removed)}

    assert len(fingerprints) == 4
    assert dataset_fingerprint(list(reversed(base))) == dataset_fingerprint(base)


def test_discover_dataset_rewritten_image_changes_fingerprint(store: Store) -> None:
    write_covid_qu_ex_to_store(store, keys.db_prefix("b1"), {"train": 1, "test": 1})
    before = discover_dataset(_db(store)).fingerprint
    unchanged = discover_dataset(_db(store)).fingerprint

    store.put("input/db/b1/Train/Normal/images/normal_00001.png", PNG)
    after = discover_dataset(_db(store)).fingerprint

    assert before == unchanged
    assert after != before


def test_index_images_object_infos_keep_their_version_tags() -> None:
    records, ignored = index_images(
        [ObjectInfo("b/Train/Normal/images/a.png", 10, '"abc"'), ObjectInfo("b/x.txt", 1, "e")]
    )

    assert [(record.key, record.etag, record.size) for record in records] == [
        ("b/Train/Normal/images/a.png", '"abc"', 10)
    ]
    assert ignored == 1


def test_index_images_unusable_keys_are_ignored_not_fatal() -> None:
    from storage import ObjectInfo
    from training_job.discovery import index_images

    objects = [
        ObjectInfo(key="b1/train/Normal/a.png", size=1, etag="e1"),
        ObjectInfo(key="b1//train/Normal/b.png", size=1, etag="e2"),
        ObjectInfo(key="b1/../../etc/train/Normal/c.png", size=1, etag="e3"),
    ]
    records, ignored = index_images(objects)
    assert [record.key for record in records] == ["b1/train/Normal/a.png"]
    assert ignored == 2


def test_lesion_masks_pair_each_image_with_its_infection_mask() -> None:
    from training_job.discovery import lesion_masks

    keys_listed = [
        "b1/Train/COVID-19/images/covid_1.png",
        "b1/Train/COVID-19/infection masks/covid_1.png",
        "b1/Train/COVID-19/lung masks/covid_1.png",
        "b1/Train/COVID-19/images/covid_2.png",
        "b1/Train/COVID-19/Infection_Masks/covid_2.png",
        "b1/Train/COVID-19/infection masks/orphan.png",
    ]

    assert lesion_masks(keys_listed) == {
        "b1/Train/COVID-19/images/covid_1.png": "b1/Train/COVID-19/infection masks/covid_1.png",
        "b1/Train/COVID-19/images/covid_2.png": "b1/Train/COVID-19/Infection_Masks/covid_2.png",
    }
