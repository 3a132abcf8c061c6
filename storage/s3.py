"""A `Store` on an S3-compatible bucket (AWS S3, MinIO, GCS interoperability, moto).

boto3 in `standard` retry mode with short connect/read timeouts, so a slow bucket cannot pin a
function until its own deadline; real conditional writes (`IfNoneMatch="*"`, `IfMatch=<etag>`);
listings paginated lazily beyond 1000 keys. SDK errors are re-raised as storage domain errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from storage.base import (
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    StorageUnavailable,
    Store,
    StoredObject,
    validate_key,
    validate_prefix,
)

__all__ = ["S3Options", "S3Store", "make_s3_client"]

_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Options:
    """Connection options for the S3 client (from the settings; never read from os.environ)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        max_pool_connections: int = 32,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.max_pool_connections = max_pool_connections
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token

    def __repr__(self) -> str:  # never print credentials
        return (
            f"S3Options(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"connect_timeout={self.connect_timeout}, read_timeout={self.read_timeout}, "
            f"max_attempts={self.max_attempts})"
        )


def make_s3_client(options: S3Options) -> Any:
    """A boto3 S3 client: standard retries, short timeouts, path-style for custom endpoints."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=options.max_pool_connections,
        s3={"addressing_style": "path"} if options.endpoint_url else {},
    )
    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id,
        aws_secret_access_key=options.secret_access_key,
        aws_session_token=options.session_token,
        region_name=options.region,
    )
    return session.client("s3", endpoint_url=options.endpoint_url, config=config)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code or status


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class S3Store(Store):
    """Objects in `bucket`, under an optional key `prefix`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        options: S3Options | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("bucket name is required")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
            prefix += "/"
        self._bucket = bucket
        self._prefix = prefix
        self._options = options or S3Options()
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> Any:
        """Created on first use (never at import or construction), then shared by threads."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_s3_client(self._options)
        return self._client

    def describe(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def _key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def _translate(self, exc: Exception, key: str, action: str) -> StorageError:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = _error_code(exc)
            if code in _NOT_FOUND_CODES:
                return ObjectNotFound(f"no object at {key}")
            if code in _CONFLICT_CODES:
                return PreconditionFailed(f"{action} {key}: condition not met ({code})")
            if code in {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId"}:
                return StorageUnavailable(f"{action} {key}: {code}")
            if _status(exc) >= 500 or code in {"SlowDown", "ServiceUnavailable"}:
                return StorageUnavailable(f"{action} {key}: {code}")
            return StorageError(f"{action} {key}: {code}")
        if isinstance(exc, BotoCoreError):
            return StorageUnavailable(f"{action} {key}: {type(exc).__name__}")
        return StorageError(f"{action} {key}: {type(exc).__name__}")

    # -- primitives ----------------------------------------------------------------------------

    def get(self, key: str) -> StoredObject:
        object_key = self._key(key)
        try:
            response = self.client.get_object(Bucket=self._bucket, Key=object_key)
            data = response["Body"].read()
        except Exception as exc:
            raise self._translate(exc, key, "get") from exc
        return StoredObject(key=key, data=data, etag=response["ETag"])

    def head(self, key: str) -> ObjectInfo:
        object_key = self._key(key)
        try:
            response = self.client.head_object(Bucket=self._bucket, Key=object_key)
        except Exception as exc:
            raise self._translate(exc, key, "head") from exc
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=response["ETag"],
            last_modified=response.get("LastModified"),
        )

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        if if_none_match and if_match is not None:
            raise ValueError("if_none_match and if_match exclude each other")
        arguments: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key), "Body": data}
        if content_type:
            arguments["ContentType"] = content_type
        if if_none_match:
            arguments["IfNoneMatch"] = "*"
        if if_match is not None:
            arguments["IfMatch"] = if_match
        try:
            response = self.client.put_object(**arguments)
        except Exception as exc:
            error = self._translate(exc, key, "put")
            if if_match is not None and isinstance(error, ObjectNotFound):
                # If-Match on a missing key: the object the caller read is gone.
                error = PreconditionFailed(f"put {key}: it no longer exists")
            raise error from exc
        return ObjectInfo(key=key, size=len(data), etag=response["ETag"])

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        arguments: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": self._prefix + prefix,
            "MaxKeys": max(1, min(page_size, 1000)),
        }
        if start_after:
            arguments["StartAfter"] = self._prefix + start_after
        strip = len(self._prefix)
        while True:
            try:
                response = self.client.list_objects_v2(**arguments)
            except Exception as exc:
                raise self._translate(exc, prefix, "list") from exc
            for item in response.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"][strip:],
                    size=int(item["Size"]),
                    etag=item["ETag"],
                    last_modified=item.get("LastModified"),
                )
            if not response.get("IsTruncated"):
                return
            arguments.pop("StartAfter", None)
            arguments["ContinuationToken"] = response["NextContinuationToken"]

    def delete(self, key: str) -> None:
        object_key = self._key(key)
        try:
            self.client.delete_object(Bucket=self._bucket, Key=object_key)
        except Exception as exc:
            error = self._translate(exc, key, "delete")
            if isinstance(error, ObjectNotFound):
                return
            raise error from exc

    def copy(self, source_key: str, destination_key: str, **options: Any) -> ObjectInfo:
        """CopyObject: the bytes never pass through this process (objects up to 5 GB).

        `if_none_match=True` / `if_match=etag` are sent as CopyObject's destination
        conditions (`If-None-Match: *`, `If-Match`), which AWS S3 enforces (412); a backend
        that ignores them (moto does) copies unconditionally, so callers that must not
        overwrite claim the destination with a conditional put first.
        """
        if_none_match = bool(options.pop("if_none_match", False))
        if_match = options.pop("if_match", None)
        options.pop("content_type", None)  # a copy keeps the source's content type
        if options:
            raise TypeError(f"unexpected copy options: {', '.join(sorted(options))}")
        if if_none_match and if_match is not None:
            raise ValueError("if_none_match and if_match exclude each other")
        arguments: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": self._key(destination_key),
            "CopySource": {"Bucket": self._bucket, "Key": self._key(source_key)},
        }
        if if_none_match:
            arguments["IfNoneMatch"] = "*"
        if if_match is not None:
            arguments["IfMatch"] = if_match
        try:
            self.client.copy_object(**arguments)
        except Exception as exc:
            error = self._translate(exc, source_key, "copy")
            # If-Match on a missing destination (as `put`); a missing source stays missing.
            if (
                if_match is not None
                and isinstance(error, ObjectNotFound)
                and self.exists(source_key)
            ):
                error = PreconditionFailed(f"copy to {destination_key}: it no longer exists")
            raise error from exc
        return self.head(destination_key)

    def upload_file(self, path: Any, key: str, **options: Any) -> ObjectInfo:
        if options:
            return super().upload_file(path, key, **options)
        object_key = self._key(key)
        try:
            self.client.upload_file(str(path), self._bucket, object_key)
        except Exception as exc:
            raise self._translate(exc, key, "upload") from exc
        return self.head(key)

    def download_file(self, key: str, path: Any) -> ObjectInfo:
        """Stream one GET into a temporary file beside `path`, then rename it into place."""
        import contextlib
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        object_key = self._key(key)
        try:
            response = self.client.get_object(Bucket=self._bucket, Key=object_key)
            with open(partial, "wb") as handle:
                for chunk in response["Body"].iter_chunks(chunk_size=1 << 20):
                    handle.write(chunk)
        except Exception as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            if isinstance(exc, OSError):
                raise StorageError(f"download {key}: {exc.strerror}") from exc
            raise self._translate(exc, key, "download") from exc
        partial.replace(path)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=response["ETag"],
            last_modified=response.get("LastModified"),
        )

    # -- bucket management (the CLI) -----------------------------------------------------------

    def bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self._bucket)
        except Exception as exc:
            if _status(exc) == 404 or _error_code(exc) in {"NoSuchBucket", "404"}:
                return False
            raise self._translate(exc, "", "head bucket") from exc
        return True

    def create_bucket(self) -> bool:
        """Create the bucket if it is missing; returns whether it was created."""
        if self.bucket_exists():
            return False
        arguments: dict[str, Any] = {"Bucket": self._bucket}
        region = self.client.meta.region_name
        if region and region != "us-east-1":
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**arguments)
        except Exception as exc:
            if _error_code(exc) in {"BucketAlreadyOwnedByYou"}:
                return False
            raise self._translate(exc, "", "create bucket") from exc
        return True
