"""Bring the image database to local files, downloading only objects whose version changed.

TensorFlow's input pipeline reads local files in parallel; S3 objects are first mirrored into a
cache folder (one per database location), keyed by each object's version tag (ETag), so a rerun
downloads only new or replaced images and drops deleted ones. A local-directory store is read
in place. The cache also remembers, per version tag, whether the shared decoder could read the
image, so an unchanged database is not decoded twice just to find corrupt files.

DICOM files (`.dcm`) are converted once per version tag to the PNG the functions would hand the
model for the same upload (`imaging.dicom.convert_dicom`, the one conversion both use), kept
under `converted/`; training reads that PNG. A file the conversion refuses (CT, no pixel data,
truncated...) gets no PNG, so the readability check counts it unreadable like a corrupt PNG.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imaging.dicom import DicomError, convert_dicom
from storage import LocalStore, Store
from storage.base import PrefixedStore
from training_job.discovery import DICOM_SUFFIX, ImageRecord

__all__ = [
    "CacheSummary",
    "ImageCache",
    "LocalImages",
    "local_root",
]

_INDEX_FILE = "index.json"
_FILES_FOLDER = "files"
_CONVERTED_FOLDER = "converted"
# The training job's own cap on a DICOM image (Rows x Columns x frames), checked before decoding.
_DICOM_MAX_PIXELS = 200_000_000
_INDEX_SCHEMA = 1
# Downloads are network-bound; the S3 client's pool holds 32 connections.
_DOWNLOAD_THREADS = 16


def local_root(store: Store) -> Path | None:
    """The directory a store's keys are files in, when it is a local store (or a view of one)."""
    if isinstance(store, LocalStore):
        return store.root
    if isinstance(store, PrefixedStore):
        inner = local_root(store.inner)
        if inner is None:
            return None
        prefix = store.prefix.strip("/")
        return inner.joinpath(*prefix.split("/")) if prefix else inner
    return None


@dataclass(frozen=True)
class CacheSummary:
    """What a synchronisation did (for the job's log and report)."""

    location: str
    in_place: bool
    images: int
    downloaded: int
    reused: int
    removed: int
    bytes_downloaded: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "in_place": self.in_place,
            "images": self.images,
            "downloaded": self.downloaded,
            "reused": self.reused,
            "removed": self.removed,
            "bytes_downloaded": self.bytes_downloaded,
        }


@dataclass
class LocalImages:
    """Local files of the database's images, and the readability each version was found to have."""

    paths: dict[str, Path]  # db key -> local file
    etags: dict[str, str]  # db key -> version tag of the local file
    summary: CacheSummary
    _cache: ImageCache = field(repr=False)

    def path(self, key: str) -> Path:
        return self.paths[key]

    def unreadable(
        self, records: Sequence[ImageRecord], check: Callable[[list[str]], list[int]]
    ) -> list[str]:
        """Keys of `records` the decoder rejects. `check(paths)` returns the indices of the
        unreadable paths; only versions not checked before are passed to it."""
        return self._cache.unreadable(self, records, check)


def _slug(text: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}" if readable else digest


class ImageCache:
    """A cache folder for the images of one database location (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, store: Store) -> None:
        self.store = store
        self.folder = Path(cache_dir) / "db" / _slug(store.describe())
        self._in_place_root = local_root(store)
        # The index, read from disk once, then kept here; `_index_changed` says it differs
        # from the file, which is rewritten only then.
        self._index: dict[str, dict[str, Any]] | None = None
        self._index_changed = False

    @property
    def in_place(self) -> bool:
        return self._in_place_root is not None

    # -- the index: key -> {"etag", "size", "readable"} --------------------------------------------

    def _read_index(self) -> dict[str, dict[str, Any]]:
        try:
            document = json.loads((self.folder / _INDEX_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(document, dict) or document.get("schema") != _INDEX_SCHEMA:
            return {}
        entries = document.get("objects")
        return entries if isinstance(entries, dict) else {}

    def _write_index(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        document = {"schema": _INDEX_SCHEMA, "source": self.store.describe(), "objects": entries}
        partial = self.folder / f".{_INDEX_FILE}.partial"
        partial.write_text(json.dumps(document, sort_keys=True), encoding="utf-8")
        os.replace(partial, self.folder / _INDEX_FILE)

    def _entries(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            self._index = self._read_index()
        return self._index

    def _save_index(self) -> None:
        if self._index is not None and self._index_changed:
            self._write_index(self._index)
            self._index_changed = False

    def _file(self, key: str) -> Path:
        return self.folder / _FILES_FOLDER / Path(*key.split("/"))

    # -- synchronisation -------------------------------------------------------------------------

    def synchronise(self, records: Iterable[ImageRecord]) -> LocalImages:
        """Local files for `records`: in place for a local store, else the cache's copies."""
        wanted = {record.key: record for record in records}
        index = self._entries()
        if self._in_place_root is not None:
            root = self._in_place_root
            paths = {key: root.joinpath(*key.split("/")) for key in wanted}
            etags = {key: record.etag for key, record in wanted.items()}
            kept = {key: entry for key, entry in index.items() if key in wanted}
            if kept != index:
                self._index, self._index_changed = kept, True
                self._save_index()
            summary = CacheSummary(
                location=str(root),
                in_place=True,
                images=len(wanted),
                downloaded=0,
                reused=len(wanted),
                removed=0,
                bytes_downloaded=0,
            )
            return LocalImages(self._converted(paths, etags), etags, summary, self)

        stale = [
            key
            for key, record in wanted.items()
            if index.get(key, {}).get("etag") != record.etag or not self._file(key).is_file()
        ]
        removed = [key for key in index if key not in wanted]
        for key in removed:
            with contextlib.suppress(FileNotFoundError):
                self._file(key).unlink()
            del index[key]
            self._index_changed = True

        def download(key: str) -> tuple[str, str, int]:
            # Atomic (a temporary file renamed into place); S3 streams it in one GET.
            info = self.store.download_file(key, self._file(key))
            return key, info.etag, info.size

        downloaded_bytes = 0
        try:
            with ThreadPoolExecutor(max_workers=_DOWNLOAD_THREADS) as pool:
                for key, etag, size in pool.map(download, stale):
                    # The tag of what was fetched: if the object changed since the listing,
                    # the next run sees the difference and fetches it again.
                    entry = {"etag": etag, "size": size, "readable": None}
                    if index.get(key) != entry:
                        index[key] = entry
                        self._index_changed = True
                    downloaded_bytes += size
        finally:
            # Whatever arrived stays usable by the next run, even if this one fails midway.
            self._save_index()
        self._prune_empty_folders()
        etags = {key: str(index[key]["etag"]) for key in wanted}
        paths = self._converted({key: self._file(key) for key in wanted}, etags)
        summary = CacheSummary(
            location=str(self.folder),
            in_place=False,
            images=len(wanted),
            downloaded=len(stale),
            reused=len(wanted) - len(stale),
            removed=len(removed),
            bytes_downloaded=downloaded_bytes,
        )
        return LocalImages(paths, etags, summary, self)

    # -- DICOM ----------------------------------------------------------------------------------

    def _converted(self, paths: dict[str, Path], etags: Mapping[str, str]) -> dict[str, Path]:
        """`paths` with each DICOM file replaced by its PNG (converted once per version tag);
        converted files of versions no longer wanted are removed."""
        dicom = sorted(key for key in paths if key.lower().endswith(DICOM_SUFFIX))
        folder = self.folder / _CONVERTED_FOLDER
        wanted = {key: self._converted_file(key, etags[key]) for key in dicom}
        if folder.is_dir():
            keep = set(wanted.values())
            for old in folder.rglob("*.png"):
                if old not in keep:
                    old.unlink(missing_ok=True)
        if not dicom:
            return paths

        def convert(key: str) -> None:
            target = wanted[key]
            if target.is_file():
                return
            try:
                png = convert_dicom(paths[key].read_bytes(), max_pixels=_DICOM_MAX_PIXELS).png
            except (DicomError, OSError):
                return  # no PNG: the readability check finds the image unreadable
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(png)
            os.replace(partial, target)

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(convert, dicom))
        return {**paths, **wanted}

    def _converted_file(self, key: str, etag: str) -> Path:
        tag = hashlib.sha256(etag.encode("utf-8")).hexdigest()[:16]
        name = Path(*key.split("/"))
        return self.folder / _CONVERTED_FOLDER / name.with_name(f"{name.name}.{tag}.png")

    def _prune_empty_folders(self) -> None:
        files = self.folder / _FILES_FOLDER
        if not files.is_dir():
            return
        for folder in sorted((p for p in files.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty

    # -- readability ----------------------------------------------------------------------------

    def unreadable(
        self,
        local: LocalImages,
        records: Sequence[ImageRecord],
        check: Callable[[list[str]], list[int]],
    ) -> list[str]:
        index = self._entries()
        unknown: list[str] = []
        for record in records:
            entry = index.get(record.key)
            if entry is None or entry.get("etag") != local.etags[record.key]:
                entry = {"etag": local.etags[record.key], "size": record.size, "readable": None}
                index[record.key] = entry
                self._index_changed = True
            if entry.get("readable") is None:
                unknown.append(record.key)
        if unknown:
            bad = set(check([str(local.paths[key]) for key in unknown]))
            for position, key in enumerate(unknown):
                index[key]["readable"] = position not in bad
            self._index_changed = True
            self._save_index()
        return sorted(record.key for record in records if index[record.key]["readable"] is False)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._index, self._index_changed = None, False
