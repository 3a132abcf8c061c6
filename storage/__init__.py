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
from storage.config import (
    DEFAULT_MODEL_NAME,
    EnvReader,
    SettingsError,
    StorageSettings,
    load_environment,
    read_model_name,
)
from storage.local import LocalStore
from storage.s3 import S3Options, S3Store
from storage.update import UpdateConflict, update_object

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EnvReader",
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "PreconditionFailed",
    "S3Options",
    "S3Store",
    "SettingsError",
    "StorageAreas",
    "StorageError",
    "StorageSettings",
    "StorageUnavailable",
    "Store",
    "StoredObject",
    "UpdateConflict",
    "keys",
    "load_environment",
    "open_areas",
    "open_store",
    "read_model_name",
    "update_object",
    "upload_folder",
]
