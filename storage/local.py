"""A `Store` on a local directory: the default backend, for running on one machine.

Writes go to a temporary file in the destination folder and are renamed into place, so readers
see the old object or the new one, never a mix. Create-only writes use `link(2)`, which fails
atomically when the name exists; replace-if-match writes hold an exclusive `flock` per key, so
they are safe between threads and between processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    Store,
    StoredObject,
    validate_key,
    validate_prefix,
)

__all__ = ["LocalStore"]

# Names starting with this are the store's own bookkeeping (temporary files, locks): never
# listed, and refused as key segments.
_RESERVED = ".xstore-"
_LOCK_DIR = _RESERVED + "locks"


def _etag(stat: os.stat_result) -> str:
    # mtime (set explicitly, strictly increasing per key under the lock), size and inode:
    # cheap to compute for listings, and different for every write.
    return f"{stat.st_mtime_ns:x}-{stat.st_size:x}-{stat.st_ino:x}"


def _info(key: str, stat: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=stat.st_size,
        etag=_etag(stat),
        last_modified=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC),
    )


class LocalStore(Store):
    """Objects as files under `root`; keys map to relative paths."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self._root = Path(root).resolve()
        self._fsync = fsync
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    def describe(self) -> str:
        return str(self._root)

    # -- paths ---------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        validate_key(key)
        if any(segment.startswith(_RESERVED) for segment in key.split("/")):
            raise InvalidKey("key uses a reserved name")
        path = self._root.joinpath(*key.split("/"))
        # Belt and braces: the validated key cannot escape, but a symlink inside the root could.
        resolved = path.resolve()
        if resolved != self._root and self._root not in resolved.parents:
            raise InvalidKey("key escapes the store root")
        return path

    def create(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str) -> StoredObject:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
                stat = os.fstat(handle.fileno())
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object at {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc
        return StoredObject(key=key, data=data, etag=_etag(stat))

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {key}") from None
        if not path.is_file():
            raise ObjectNotFound(f"no object at {key}")
        return _info(key, stat)

    # -- writes --------------------------------------------------------------------------------

    def _write_temporary(self, path: Path, data: bytes, min_mtime_ns: int = 0) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise InvalidKey("a parent of the key is an object") from exc
        except OSError as exc:  # a full disk, a read-only one
            raise StorageError(f"cannot write: {exc.strerror}") from exc
        if path.is_dir():
            raise InvalidKey("the key is a folder of other objects")
        temporary = path.with_name(f"{_RESERVED}tmp-{secrets.token_hex(8)}")
        try:
            with open(temporary, "xb") as handle:
                handle.write(data)
                handle.flush()
                if self._fsync:
                    os.fsync(handle.fileno())
            stamp = max(time.time_ns(), min_mtime_ns + 1)
            os.utime(temporary, ns=(stamp, stamp))
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise StorageError(f"cannot write: {exc.strerror}") from exc
        return temporary

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        del content_type  # a file has none
        if if_none_match and if_match is not None:
            raise ValueError("if_none_match and if_match exclude each other")
        path = self._path(key)
        if if_match is not None:
            with self._key_lock(key):
                try:
                    current = path.stat()
                except (FileNotFoundError, NotADirectoryError):
                    raise PreconditionFailed(f"{key} does not exist") from None
                if _etag(current) != if_match:
                    raise PreconditionFailed(f"{key} changed since it was read")
                temporary = self._write_temporary(path, data, current.st_mtime_ns)
                try:
                    os.replace(temporary, path)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        temporary.unlink()
                    raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
                return _info(key, path.stat())
        temporary = self._write_temporary(path, data)
        try:
            if if_none_match:
                try:
                    os.link(temporary, path)
                except FileExistsError:
                    raise PreconditionFailed(f"{key} already exists") from None
                finally:
                    temporary.unlink()
            else:
                os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if exc.errno == errno.EISDIR:
                raise InvalidKey("the key is a folder of other objects") from exc
            raise StorageError(f"cannot write {key}: {exc.strerror}") from exc
        return _info(key, path.stat())

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """Exclusive per key: a thread lock (flock is per open file, not per thread) + flock."""
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(key, threading.Lock())
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        lock_path = self._root / _LOCK_DIR / f"{digest}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+b")  # noqa: SIM115 - closed below
        except OSError as exc:  # a full disk, a read-only one
            raise StorageError(f"cannot lock {key}: {exc.strerror}") from exc
        with thread_lock, handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror}") from exc

    # -- listing -------------------------------------------------------------------------------

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Walk the tree in S3's key order, pruning folders that lie wholly before `start_after`.

        Each folder is read once; a folder named `d` sorts as `d/` so that `a-b` (0x2d) comes
        before `a/x` (0x2f), as in S3. The cost is the size of the folders on the path to the
        first key plus the keys returned, not the size of the store.
        """
        del page_size  # a directory walk has no pages
        validate_prefix(prefix)
        base, _, _partial = prefix.rpartition("/")
        folder = self._root.joinpath(*base.split("/")) if base else self._root
        yield from self._walk(folder, f"{base}/" if base else "", prefix, start_after or "")

    def _walk(self, folder: Path, folder_key: str, prefix: str, after: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(folder) as scan:
                entries = []
                for entry in scan:
                    if entry.name.startswith(_RESERVED):
                        continue
                    is_dir = entry.is_dir(follow_symlinks=False)
                    entries.append((folder_key + entry.name + ("/" if is_dir else ""), is_dir))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot list: {exc.strerror}") from exc
        entries.sort()
        for sort_key, is_dir in entries:
            if is_dir:
                # Every key below starts with sort_key: skip unless the range can intersect.
                if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                    continue
                if sort_key <= after and not after.startswith(sort_key):
                    continue
                yield from self._walk(
                    folder / sort_key[len(folder_key) : -1], sort_key, prefix, after
                )
            else:
                if not sort_key.startswith(prefix) or sort_key <= after:
                    continue
                try:
                    stat = os.stat(folder / sort_key[len(folder_key) :])
                except FileNotFoundError:
                    continue  # deleted while listing
                yield _info(sort_key, stat)
