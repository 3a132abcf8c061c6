"""The storage layer: the storage hierarchy's keys, one `Store` interface, two backends.

Only boto3 is imported from outside the standard library, and only when an S3 store is used.
"""

from storage import keys
from storage.areas import StorageAreas, open_areas, open_store
from storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
    Store,
    StoredObject,
    upload_folder,
)
from storage.config import StorageSettings
from storage.local import LocalStore
from storage.s3 import S3Options, S3Store
from storage.update import UpdateConflict, update_object

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "PreconditionFailed",
    "S3Options",
    "S3Store",
    "StorageAreas",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "Store",
    "StoredObject",
    "UpdateConflict",
    "keys",
    "open_areas",
    "open_store",
    "update_object",
    "upload_folder",
]
