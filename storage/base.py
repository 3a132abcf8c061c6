"""The `Store` interface every backend implements, and the storage domain errors.

A store is a flat namespace of keys ("a/b/c.json") holding bytes, each with a version tag (an
S3 ETag, or its local equivalent) so that read-modify-write cycles can detect lost updates.
"""

from __future__ import annotations

import builtins
import json
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "PreconditionFailed",
    "PrefixedStore",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "StoredObject",
    "upload_folder",
    "validate_key",
    "validate_prefix",
]


class StorageError(Exception):
    """Base of every storage failure. Messages never carry credentials."""


class ObjectNotFound(StorageError, KeyError):
    """The key holds no object."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists (create-only) or changed (replace-if-match)."""


class InvalidKey(StorageError, ValueError):
    """A key that is empty, absolute, escapes the root or holds forbidden characters."""


class StorageUnavailable(StorageError):
    """The backend failed after its retries (network, throttling, permissions, outage)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    etag: str

    def json(self) -> Any:
        return json.loads(self.data)


_FORBIDDEN_CHARS = ("\x00", "\\", "\r", "\n")
MAX_KEY_BYTES = 1024


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise InvalidKey.

    Refused: empty keys, absolute keys, `.`/`..`/empty segments (no escaping the root, no
    `a//b`), NUL, backslashes, line breaks, keys ending in "/", and keys over S3's 1024 bytes.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty key")
    if any(ch in key for ch in _FORBIDDEN_CHARS):
        raise InvalidKey("key holds a forbidden character")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey("key longer than 1024 bytes")
    if key.startswith("/") or key.endswith("/"):
        raise InvalidKey("key must be relative and name an object")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey("key has an empty, '.' or '..' segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty (everything) or a safe key-like string (may end in '/')."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/") or "x")
    if prefix.startswith("/"):
        raise InvalidKey("prefix must be relative")
    return prefix


def upload_folder(store: Store, folder: Path, prefix: str) -> int:
    """Upload every file below `folder` to `prefix` + its relative path, in sorted order;
    returns how many files were uploaded."""
    count = 0
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.upload_file(path, prefix + path.relative_to(folder).as_posix())
        count += 1
    return count


class Store(ABC):
    """A bucket-like key/value store of bytes with version tags and conditional writes."""

    # -- the primitives each backend implements ----------------------------------------------

    @abstractmethod
    def get(self, key: str) -> StoredObject:
        """The object's bytes and version tag. Raises ObjectNotFound."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size and version tag without the bytes. Raises ObjectNotFound."""

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Write `data` atomically (readers see the old object or the new one, never a mix).

        `if_none_match=True` creates only if the key is absent; `if_match=etag` replaces only if
        the current version tag still equals `etag`. A failed condition raises
        PreconditionFailed and changes nothing.
        """

    @abstractmethod
    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in ascending key order (UTF-8 byte order),
        beginning after `start_after`; fetched lazily, `page_size` at a time."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    @abstractmethod
    def describe(self) -> str:
        """Where this store points (for logs and the CLI; never credentials)."""

    # -- conveniences built on the primitives ------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        return self.get(key).data

    def put_bytes(self, key: str, data: bytes, **options: Any) -> ObjectInfo:
        return self.put(key, data, **options)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key).data)

    def put_json(self, key: str, value: Any, **options: Any) -> ObjectInfo:
        data = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return self.put(key, data, content_type="application/json", **options)

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def list_keys(self, prefix: str = "", *, start_after: str | None = None) -> builtins.list[str]:
        return [info.key for info in self.list(prefix, start_after=start_after)]

    def list_page(
        self, prefix: str = "", *, start_after: str | None = None, limit: int = 1000
    ) -> tuple[builtins.list[ObjectInfo], str | None]:
        """One page of a listing and the `start_after` of the next page (None at the end)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        items: builtins.list[ObjectInfo] = []
        for info in self.list(prefix, start_after=start_after, page_size=min(limit + 1, 1000)):
            if len(items) == limit:
                return items, items[-1].key
            items.append(info)
        return items, None

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        """Copy one object within the store (backends may do it server-side)."""
        return self.put(destination_key, self.get(source_key).data, **options)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many were deleted."""
        keys = self.list_keys(validate_prefix(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def upload_file(self, path: str | Path, key: str, **options: Any) -> ObjectInfo:
        return self.put(key, Path(path).read_bytes(), **options)

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        """Write the object to a local file atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = self.get(key)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(stored.data)
        partial.replace(path)
        return ObjectInfo(key=key, size=len(stored.data), etag=stored.etag)

    def child(self, prefix: str) -> Store:
        """A view of the keys under `prefix`, with `prefix` stripped."""
        return PrefixedStore(self, prefix)


class PrefixedStore(Store):
    """A store seen through a key prefix: an area of the hierarchy as a store of its own."""

    def __init__(self, inner: Store, prefix: str) -> None:
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
            prefix += "/"
        self._inner = inner
        self._prefix = prefix

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def inner(self) -> Store:
        return self._inner

    def _outer(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _strip(self, info: ObjectInfo) -> ObjectInfo:
        return ObjectInfo(
            key=info.key[len(self._prefix) :],
            size=info.size,
            etag=info.etag,
            last_modified=info.last_modified,
        )

    def get(self, key: str) -> StoredObject:
        stored = self._inner.get(self._outer(key))
        return StoredObject(key=key, data=stored.data, etag=stored.etag)

    def head(self, key: str) -> ObjectInfo:
        return self._strip(self._inner.head(self._outer(key)))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        return self._strip(
            self._inner.put(
                self._outer(key),
                data,
                content_type=content_type,
                if_none_match=if_none_match,
                if_match=if_match,
            )
        )

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        outer_start = self._prefix + start_after if start_after is not None else None
        for info in self._inner.list(
            self._prefix + validate_prefix(prefix), start_after=outer_start, page_size=page_size
        ):
            yield self._strip(info)

    def delete(self, key: str) -> None:
        self._inner.delete(self._outer(key))

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        return self._strip(
            self._inner.copy(self._outer(source_key), self._outer(destination_key), **options)
        )

    def upload_file(self, path: str | Path, key: str, **options: Any) -> ObjectInfo:
        return self._strip(self._inner.upload_file(path, self._outer(key), **options))

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        return self._strip(self._inner.download_file(self._outer(key), path))

    def describe(self) -> str:
        return posixpath.join(self._inner.describe(), self._prefix)
