"""Pass-through stores for tests: wrappers subclass `DelegatingStore` and override only the
operation they watch or break (fault injection, counting, forcing an interleaving);
`InterceptingStore` records writes and lets a test inject a competing write at a fixed point."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from storage import ObjectInfo, PreconditionFailed, Store, StoredObject


class DelegatingStore(Store):
    """Forwards the primitives (get, head, put, list, delete, describe) to `inner`.

    The conveniences (copy, upload_file, download_file, exists, ...) stay Store's own, built
    on these primitives, so they pass through a subclass's overrides too.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def get(self, key: str) -> StoredObject:
        return self.inner.get(key)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        return self.inner.put(
            key, data, content_type=content_type, if_none_match=if_none_match, if_match=if_match
        )

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after, page_size=page_size)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def describe(self) -> str:
        return self.inner.describe()


class InterceptingStore(DelegatingStore):
    """Delegates to `inner`, recording puts and copies (by destination); `before_put(key,
    options)` runs before each put or copy, so a test fixes exactly when a competitor writes
    (between another writer's read and write). Copies go to `inner.copy` (server-side on S3)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.before_put: Callable[[str, dict[str, Any]], None] | None = None
        self.puts: list[str] = []
        self.put_bytes_total = 0
        self.copies: list[str] = []
        self.failed_puts: list[str] = []

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        if self.before_put is not None:
            self.before_put(key, {"if_none_match": if_none_match, "if_match": if_match})
        try:
            info = super().put(
                key, data, content_type=content_type, if_none_match=if_none_match, if_match=if_match
            )
        except PreconditionFailed:
            self.failed_puts.append(key)
            raise
        self.puts.append(key)
        self.put_bytes_total += len(data)
        return info

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        if self.before_put is not None:
            self.before_put(destination_key, dict(options))
        try:
            info = self.inner.copy(source_key, destination_key, **options)
        except PreconditionFailed:
            self.failed_puts.append(destination_key)
            raise
        self.copies.append(destination_key)
        return info

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        return self.inner.download_file(key, path)

    def describe(self) -> str:
        return f"intercepted {self.inner.describe()}"
