"""The storage settings: where the storage hierarchy lives, and how to reach an S3 bucket.

Read into a deployable's `common.settings.EnvReader`, so a deployable reports every bad value
of its own settings and of these together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.settings import EnvReader

__all__ = ["StorageSettings"]


def _is_storage_url(value: str) -> bool:
    return value.startswith(("s3://", "file://", "/", "./", "../")) or "://" not in value


@dataclass(frozen=True)
class StorageSettings:
    """Where the storage hierarchy lives, and how to reach an S3-compatible bucket.

    `url` is a directory, `file:///abs/dir` or `s3://bucket[/prefix]`. `db_auth_url` and
    `db_url` move the users area and the image database elsewhere (even another bucket).
    """

    url: str = "./store"
    db_auth_url: str | None = None
    db_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_connect_timeout: float = 2.0
    s3_read_timeout: float = 10.0
    s3_max_attempts: int = 3

    @classmethod
    def read(cls, env: EnvReader) -> StorageSettings:
        """Read into an existing reader (so the deployable reports all problems together)."""
        url = env.string("STORAGE_URL", "./store", "STORAGE_PATH")
        settings = cls(
            url=url,
            db_auth_url=env.optional("DB_AUTH_STORAGE_PATH", "DB_AUTH_STORAGE_URL"),
            db_url=env.optional("DB_STORAGE_PATH", "DB_STORAGE_URL"),
            s3_endpoint_url=env.optional("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"),
            s3_region=env.optional("AWS_REGION", "AWS_DEFAULT_REGION"),
            s3_connect_timeout=env.number("S3_CONNECT_TIMEOUT", 2.0, minimum=0.1, maximum=60),
            s3_read_timeout=env.number("S3_READ_TIMEOUT", 10.0, minimum=0.1, maximum=300),
            s3_max_attempts=env.integer("S3_MAX_ATTEMPTS", 3, minimum=1, maximum=10),
        )
        for name, value in (
            ("STORAGE_URL", settings.url),
            ("DB_AUTH_STORAGE_PATH", settings.db_auth_url),
            ("DB_STORAGE_PATH", settings.db_url),
        ):
            if value is not None and not _is_storage_url(value):
                env.problem(f"{name}={value!r} is not a directory, file:// or s3:// URL")
            if value is not None and value.startswith("s3://") and len(value) <= len("s3://"):
                env.problem(f"{name}={value!r} names no bucket")
        if settings.s3_endpoint_url and not settings.s3_endpoint_url.startswith(
            ("http://", "https://")
        ):
            env.problem(f"S3_ENDPOINT_URL={settings.s3_endpoint_url!r} is not an http(s) URL")
        return settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StorageSettings:
        env = EnvReader(environ, "storage")
        settings = cls.read(env)
        env.check()
        return settings

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")
