"""The local image cache: S3 objects downloaded once per version tag, local stores read in place,
readability checked once per version."""

from __future__ import annotations

from pathlib import Path

from storage import LocalStore, ObjectInfo, S3Store, Store, StoredObject, keys
from tests.stores import DelegatingStore
from training_job.discovery import discover_dataset
from training_job.image_cache import ImageCache, local_root


def _db(store: Store) -> Store:
    return store.child(keys.DB_AREA)


def _put_images(store: Store, names: dict[str, bytes]) -> None:
    for name, data in names.items():
        store.put(f"input/db/b1/Train/Normal/images/{name}", data)


def test_image_cache_s3_rerun_downloads_only_what_changed(
    s3_store: S3Store, tmp_path: Path
) -> None:
    _put_images(s3_store, {f"{index}.png": f"image {index}".encode() for index in range(5)})
    cache = ImageCache(tmp_path / "cache", _db(s3_store))

    first = cache.synchronise(discover_dataset(_db(s3_store)).records)
    second = cache.synchronise(discover_dataset(_db(s3_store)).records)
    _put_images(s3_store, {"1.png": b"image 1, replaced", "9.png": b"image 9"})
    s3_store.delete("input/db/b1/Train/Normal/images/2.png")
    third = cache.synchronise(discover_dataset(_db(s3_store)).records)

    assert (first.summary.downloaded, first.summary.reused) == (5, 0)
    assert (second.summary.downloaded, second.summary.reused) == (0, 5)
    assert (third.summary.downloaded, third.summary.reused, third.summary.removed) == (2, 3, 1)
    assert not first.summary.in_place
    key = "b1/Train/Normal/images/1.png"
    assert third.path(key).read_bytes() == b"image 1, replaced"
    assert third.path(key).is_relative_to(tmp_path / "cache")
    assert not first.path("b1/Train/Normal/images/2.png").exists()
    assert sorted(third.paths) == sorted(
        f"b1/Train/Normal/images/{index}.png" for index in (0, 1, 3, 4, 9)
    )


class _DownloadOnlyStore(DelegatingStore):
    """Images may only be fetched with `download_file` (a stream to disk on S3), never `get`
    (the whole object in memory)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.downloads: list[str] = []

    def get(self, key: str) -> StoredObject:
        raise AssertionError(f"get({key!r}): images are to be streamed to disk")

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        self.downloads.append(key)
        return self.inner.download_file(key, path)


def test_image_cache_downloads_with_the_store_s_download_file(
    s3_store: S3Store, tmp_path: Path
) -> None:
    _put_images(s3_store, {"a.png": b"image a", "b.png": b"image b"})
    db = _DownloadOnlyStore(_db(s3_store))

    local = ImageCache(tmp_path / "cache", db).synchronise(discover_dataset(db).records)

    assert sorted(db.downloads) == ["b1/Train/Normal/images/a.png", "b1/Train/Normal/images/b.png"]
    assert local.summary.downloaded == 2
    assert local.summary.bytes_downloaded == len(b"image a") + len(b"image b")
    assert local.path("b1/Train/Normal/images/a.png").read_bytes() == b"image a"


def test_image_cache_local_store_read_in_place(local_store: LocalStore, tmp_path: Path) -> None:
    _put_images(local_store, {"a.png": b"a", "b.png": b"b"})
    cache = ImageCache(tmp_path / "cache", _db(local_store))

    local = cache.synchronise(discover_dataset(_db(local_store)).records)

    assert local.summary.in_place
    assert local.summary.downloaded == 0
    path = local.path("b1/Train/Normal/images/a.png")
    assert path == local_store.root / "input/db/b1/Train/Normal/images/a.png"
    assert local_root(_db(local_store)) == local_store.root / "input" / "db"


def test_image_cache_unreadable_checked_once_per_version(store: Store, tmp_path: Path) -> None:
    _put_images(store, {"good.png": b"good", "bad.png": b"bad"})
    cache = ImageCache(tmp_path / "cache", _db(store))
    checked: list[list[str]] = []

    def check(paths: list[str]) -> list[int]:
        checked.append([Path(path).name for path in paths])
        return [index for index, path in enumerate(paths) if Path(path).read_bytes() == b"bad"]

    def unreadable() -> list[str]:
        records = discover_dataset(_db(store)).records
        return cache.synchronise(records).unreadable(records, check)

    first = unreadable()
    second = unreadable()
    _put_images(store, {"bad.png": b"fixed"})
    third = unreadable()

    assert first == second == ["b1/Train/Normal/images/bad.png"]
    assert third == []
    assert checked == [["bad.png", "good.png"], ["bad.png"]]
