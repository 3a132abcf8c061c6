"""The image cache's index.json: read once per cache object, rewritten only when it changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import Store, keys
from training_job.discovery import discover_dataset
from training_job.image_cache import ImageCache


def _db(store: Store) -> Store:
    return store.child(keys.DB_AREA)


def _put_images(store: Store, names: dict[str, bytes]) -> None:
    for name, data in names.items():
        store.put(f"input/db/b1/Train/Normal/images/{name}", data)


def _check(paths: list[str]) -> list[int]:
    return [index for index, path in enumerate(paths) if Path(path).read_bytes() == b"bad"]


class _CountingCache(ImageCache):
    def __init__(self, cache_dir: Path, store: Store) -> None:
        super().__init__(cache_dir, store)
        self.reads = 0
        self.writes = 0

    def _read_index(self) -> dict[str, dict[str, object]]:
        self.reads += 1
        return super()._read_index()

    def _write_index(self, entries: object) -> None:
        self.writes += 1
        super()._write_index(entries)  # type: ignore[arg-type]


def _run(cache: ImageCache, store: Store) -> list[str]:
    records = discover_dataset(_db(store)).records
    return cache.synchronise(records).unreadable(records, _check)


def test_image_cache_reads_the_index_once_and_writes_it_only_when_it_changed(
    store: Store, tmp_path: Path
) -> None:
    _put_images(store, {"good.png": b"good", "bad.png": b"bad"})

    first = _CountingCache(tmp_path / "cache", _db(store))
    assert _run(first, store) == ["b1/Train/Normal/images/bad.png"]
    assert first.reads == 1
    # S3: the downloads, then the readability; in place: the readability only.
    assert first.writes == (1 if first.in_place else 2)
    index_file = first.folder / "index.json"
    written = index_file.stat().st_mtime_ns, index_file.read_bytes()

    second = _CountingCache(tmp_path / "cache", _db(store))
    assert _run(second, store) == ["b1/Train/Normal/images/bad.png"]
    assert _run(second, store) == ["b1/Train/Normal/images/bad.png"]
    assert (second.reads, second.writes) == (1, 0)
    assert (index_file.stat().st_mtime_ns, index_file.read_bytes()) == written

    _put_images(store, {"bad.png": b"fixed"})
    assert _run(second, store) == []
    assert second.reads == 1
    document = json.loads(index_file.read_text(encoding="utf-8"))
    assert document["objects"]["b1/Train/Normal/images/bad.png"]["readable"] is True


def test_image_cache_clear_forgets_the_index(store: Store, tmp_path: Path) -> None:
    _put_images(store, {"bad.png": b"bad"})
    cache = _CountingCache(tmp_path / "cache", _db(store))
    _run(cache, store)

    cache.clear()
    checked: list[str] = []

    def check(paths: list[str]) -> list[int]:
        checked.extend(paths)
        return _check(paths)

    records = discover_dataset(_db(store)).records
    assert cache.synchronise(records).unreadable(records, check) == [
        "b1/Train/Normal/images/bad.png"
    ]
    assert len(checked) == 1
    assert cache.reads == 2


@pytest.mark.parametrize("content", ["not json", '{"schema": 0, "objects": {}}'])
def test_image_cache_ignores_an_unusable_index(store: Store, tmp_path: Path, content: str) -> None:
    _put_images(store, {"good.png": b"good"})
    cache = ImageCache(tmp_path / "cache", _db(store))
    cache.folder.mkdir(parents=True)
    (cache.folder / "index.json").write_text(content, encoding="utf-8")

    assert _run(cache, store) == []
    document = json.loads((cache.folder / "index.json").read_text(encoding="utf-8"))
    assert document["objects"]["b1/Train/Normal/images/good.png"]["readable"] is True
