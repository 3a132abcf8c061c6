"""Store wrappers that inject faults or count reads at the storage seam (no patching)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from storage import ObjectInfo, Store, StoredObject
from tests.stores import DelegatingStore


class FaultyStore(DelegatingStore):
    """Delegates to `inner`; raises `error()` for operations whose key matches `fails`."""

    def __init__(
        self,
        inner: Store,
        *,
        fails: Callable[[str, str], bool],
        error: Callable[[], Exception],
    ) -> None:
        super().__init__(inner)
        self._fails = fails
        self._error = error
        self.gets: list[str] = []
        self.listings: list[tuple[str, str | None]] = []

    def _check(self, operation: str, key: str) -> None:
        if self._fails(operation, key):
            raise self._error()

    def get(self, key: str) -> StoredObject:
        self._check("get", key)
        self.gets.append(key)
        return super().get(key)

    def head(self, key: str) -> ObjectInfo:
        self._check("head", key)
        return super().head(key)

    def put(self, key: str, data: bytes, **options: Any) -> ObjectInfo:
        self._check("put", key)
        return super().put(key, data, **options)

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        self._check("list", prefix)
        self.listings.append((prefix, start_after))
        return super().list(prefix, start_after=start_after, page_size=page_size)

    def delete(self, key: str) -> None:
        self._check("delete", key)
        super().delete(key)


def never(operation: str, key: str) -> bool:
    del operation, key
    return False
