"""A pass-through store for tests: wrappers subclass it and override only the operation they
watch or break (fault injection, counting, forcing an interleaving)."""

from __future__ import annotations

from collections.abc import Iterator

from storage import ObjectInfo, Store, StoredObject


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
