"""Behaviour only the S3 backend has: client configuration, pagination past 1000, buckets."""

from __future__ import annotations

import pytest

from storage import S3Options, S3Store, StorageSettings, StorageUnavailable, open_areas, open_store
from tests.conftest import new_bucket


def test_s3_client_uses_standard_retries_and_short_timeouts() -> None:
    store = S3Store(
        "bucket-x",
        options=S3Options(endpoint_url="http://127.0.0.1:9", connect_timeout=1.5, read_timeout=4),
    )
    config = store.client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.connect_timeout == 1.5
    assert config.read_timeout == 4


def test_s3_list_pages_beyond_one_thousand_keys(s3_store: S3Store) -> None:
    client = s3_store.client
    for index in range(1003):
        client.put_object(Bucket=s3_store.bucket, Key=f"root/many/{index:05d}", Body=b".")
    keys = s3_store.list_keys("many/")
    assert len(keys) == 1003
    assert keys[0] == "many/00000"
    assert keys[-1] == "many/01002"


def test_s3_prefix_keeps_stores_apart(s3_env: dict[str, str], s3_bucket: str) -> None:
    options = S3Options(endpoint_url=s3_env["S3_ENDPOINT_URL"], region="us-east-1")
    first = S3Store(s3_bucket, "one", options=options)
    second = S3Store(s3_bucket, "two", options=options)
    first.put_bytes("k", b"1")
    assert second.list_keys() == []
    assert first.describe() == f"s3://{s3_bucket}/one/"


def test_s3_missing_bucket_is_unavailable_not_a_crash(s3_env: dict[str, str]) -> None:
    options = S3Options(endpoint_url=s3_env["S3_ENDPOINT_URL"], region="us-east-1")
    store = S3Store("no-such-bucket-here", options=options)
    with pytest.raises(StorageUnavailable):
        store.put_bytes("k", b"x")


def test_s3_unreachable_endpoint_is_unavailable() -> None:
    store = S3Store(
        "bucket-x",
        options=S3Options(
            endpoint_url="http://127.0.0.1:9", connect_timeout=0.2, read_timeout=0.2, max_attempts=1
        ),
    )
    with pytest.raises(StorageUnavailable):
        store.get("k")


def test_s3_db_area_on_another_bucket(s3_env: dict[str, str], s3_bucket: str) -> None:
    other = new_bucket(s3_env["S3_ENDPOINT_URL"])
    settings = StorageSettings(
        url=f"s3://{s3_bucket}",
        db_url=f"s3://{other}/datasets/v1",
        s3_endpoint_url=s3_env["S3_ENDPOINT_URL"],
        s3_region="us-east-1",
    )
    areas = open_areas(settings)
    areas.db.put_bytes("batch1/train/Normal/a.png", b"png")
    assert open_store(f"s3://{other}", settings).list_keys() == [
        "datasets/v1/batch1/train/Normal/a.png"
    ]
    assert areas.root.list_keys() == []
    areas.auth.put_bytes("authentication.csv", b"x")
    assert areas.root.list_keys() == ["input/db_auth/authentication.csv"]


def test_s3_conditional_copy_is_one_server_side_copy_object_with_its_condition(
    s3_store: S3Store,
) -> None:
    s3_store.put_bytes("src/a", b"x" * 4096)
    operations: list[str] = []
    sent: list[dict[str, str]] = []
    events = s3_store.client.meta.events
    record_call = lambda model, **_: operations.append(model.name)  # noqa: E731
    record_copy = lambda request, **_: sent.append(dict(request.headers))  # noqa: E731
    events.register("before-call.s3", record_call)
    events.register("before-send.s3.CopyObject", record_copy)
    try:
        info = s3_store.copy("src/a", "dst/a", if_none_match=True)
    finally:
        events.unregister("before-call.s3", record_call)
        events.unregister("before-send.s3.CopyObject", record_copy)

    assert operations == ["CopyObject", "HeadObject"]  # no GetObject, no PutObject
    (headers,) = sent
    assert headers["If-None-Match"] in ("*", b"*")
    assert info.size == 4096
    assert s3_store.get_bytes("dst/a") == b"x" * 4096
