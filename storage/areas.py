"""Open stores from URLs, and the storage areas a deployable works with.

`STORAGE_URL` names the root of the hierarchy; `DB_AUTH_STORAGE_PATH` and `DB_STORAGE_PATH`
(the original system's per-area overrides) may move the users area and the image database to
another folder or bucket. Every area is handed out as a `Store` rooted at that area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from storage import keys
from storage.base import Store
from storage.config import StorageSettings
from storage.local import LocalStore
from storage.s3 import S3Options, S3Store

__all__ = ["StorageAreas", "open_areas", "open_store", "s3_options"]


def s3_options(settings: StorageSettings) -> S3Options:
    return S3Options(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
        max_attempts=settings.s3_max_attempts,
    )


def open_store(url: str, settings: StorageSettings | None = None) -> Store:
    """A store for a directory, `file:///dir` or `s3://bucket[/prefix]` URL."""
    settings = settings or StorageSettings()
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError("s3:// URL names no bucket")
        return S3Store(parsed.netloc, parsed.path.lstrip("/"), options=s3_options(settings))
    if url.startswith("file://"):
        parsed = urlparse(url)
        return LocalStore(Path(unquote(parsed.netloc + parsed.path)))
    if "://" in url:
        raise ValueError("storage URL must be a directory, file:// or s3:// URL")
    return LocalStore(Path(url))


@dataclass(frozen=True)
class StorageAreas:
    """The root of the hierarchy plus the two areas the original system let you move."""

    root: Store
    auth: Store  # holds keys.USERS_FILE
    db: Store  # holds the image database batches

    def describe(self) -> dict[str, str]:
        return {
            "root": self.root.describe(),
            "auth": self.auth.describe(),
            "db": self.db.describe(),
        }


def open_areas(settings: StorageSettings) -> StorageAreas:
    root = open_store(settings.url, settings)
    auth = (
        open_store(settings.db_auth_url, settings)
        if settings.db_auth_url
        else root.child(keys.AUTH_AREA)
    )
    db = open_store(settings.db_url, settings) if settings.db_url else root.child(keys.DB_AREA)
    return StorageAreas(root=root, auth=auth, db=db)
