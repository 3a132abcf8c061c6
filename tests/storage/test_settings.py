"""Storage settings: where the hierarchy lives, S3 options, every bad value reported at once."""

from __future__ import annotations

import pytest

from common.settings import SettingsError
from storage import LocalStore, S3Store, StorageSettings, open_store


def test_storage_settings_defaults_to_local_store() -> None:
    settings = StorageSettings.from_env({})
    assert settings.url == "./store"
    assert not settings.is_s3
    assert settings.s3_max_attempts == 3


def test_storage_settings_reads_every_variable() -> None:
    settings = StorageSettings.from_env(
        {
            "STORAGE_URL": "s3://bucket/prefix",
            "DB_AUTH_STORAGE_PATH": "s3://auth-bucket",
            "DB_STORAGE_PATH": "/data/db",
            "S3_ENDPOINT_URL": "http://minio:9000",
            "AWS_REGION": "eu-west-1",
            "S3_CONNECT_TIMEOUT": "1.5",
            "S3_READ_TIMEOUT": "7",
            "S3_MAX_ATTEMPTS": "5",
        }
    )
    assert settings == StorageSettings(
        url="s3://bucket/prefix",
        db_auth_url="s3://auth-bucket",
        db_url="/data/db",
        s3_endpoint_url="http://minio:9000",
        s3_region="eu-west-1",
        s3_connect_timeout=1.5,
        s3_read_timeout=7.0,
        s3_max_attempts=5,
    )
    assert settings.is_s3


def test_storage_settings_accepts_original_storage_path_name() -> None:
    assert StorageSettings.from_env({"STORAGE_PATH": "/srv/storage"}).url == "/srv/storage"
    both = {"STORAGE_URL": "/new", "STORAGE_PATH": "/old"}
    assert StorageSettings.from_env(both).url == "/new"


def test_storage_settings_reports_every_bad_value_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        StorageSettings.from_env(
            {
                "STORAGE_URL": "gs://bucket",
                "S3_ENDPOINT_URL": "minio:9000",
                "S3_CONNECT_TIMEOUT": "soon",
                "S3_MAX_ATTEMPTS": "0",
                "DB_STORAGE_PATH": "s3://",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 5
    text = str(caught.value)
    for name in ("STORAGE_URL", "S3_ENDPOINT_URL", "S3_CONNECT_TIMEOUT", "S3_MAX_ATTEMPTS"):
        assert name in text


@pytest.mark.parametrize(
    ("url", "kind"),
    [("./store", LocalStore), ("file:///tmp/x", LocalStore), ("s3://b/p", S3Store)],
)
def test_open_store_picks_backend_from_url(url: str, kind: type) -> None:
    assert isinstance(open_store(url), kind)


def test_open_store_refuses_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="storage URL"):
        open_store("gs://bucket")
