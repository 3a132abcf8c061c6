"""Storage settings and the settings plumbing every deployable shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import (
    EnvReader,
    LocalStore,
    S3Store,
    SettingsError,
    StorageSettings,
    open_store,
    read_model_name,
)
from storage.config import load_environment, parse_dotenv


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


def test_env_reader_types_and_records_names() -> None:
    env = EnvReader({"A": "3", "B": "yes", "C": "x", "D": "2.5", "OLD": "v", "E": "  "}, "demo")
    assert env.integer("A", 0) == 3
    assert env.boolean("B", False) is True
    assert env.choice("C", "y", ("x", "y")) == "x"
    assert env.number("D", 0.0) == 2.5
    assert env.string("NEW", "default", "OLD") == "v"
    assert env.string("E", "blank means unset") == "blank means unset"
    env.check()
    assert {"A", "B", "C", "D", "NEW", "OLD", "E"} <= env.names_read


def test_env_reader_bad_boolean_and_bounds_are_problems() -> None:
    env = EnvReader({"FLAG": "maybe", "N": "99", "CH": "z"}, "demo")
    env.boolean("FLAG", False)
    env.integer("N", 1, maximum=10)
    env.choice("CH", "a", ("a", "b"))
    with pytest.raises(SettingsError) as caught:
        env.check()
    assert len(caught.value.problems) == 3


def test_dotenv_parsing_and_precedence(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport STORAGE_URL=./from-dotenv\nSECRET_KEY='quoted # not a comment'\n"
        'MULTI="a\\nb"\nPLAIN=value # trailing comment\nbroken line\n'
    )
    values = parse_dotenv(dotenv.read_text())
    assert values == {
        "STORAGE_URL": "./from-dotenv",
        "SECRET_KEY": "quoted # not a comment",
        "MULTI": "a\nb",
        "PLAIN": "value",
    }
    merged = load_environment({"STORAGE_URL": "/real"}, dotenv)
    assert merged["STORAGE_URL"] == "/real"
    assert merged["PLAIN"] == "value"
    assert load_environment({}, tmp_path / "missing.env") == {}


@pytest.mark.parametrize(
    ("url", "kind"),
    [("./store", LocalStore), ("file:///tmp/x", LocalStore), ("s3://b/p", S3Store)],
)
def test_open_store_picks_backend_from_url(url: str, kind: type) -> None:
    assert isinstance(open_store(url), kind)


def test_open_store_refuses_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="storage URL"):
        open_store("gs://bucket")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "cnn_vit"),
        ({"MODEL_NAME": "other"}, "other"),
        ({"PROD_MODEL_NAME": "legacy"}, "legacy"),
        ({"MODEL_NAME": "new", "PROD_MODEL_NAME": "legacy"}, "new"),
    ],
)
def test_read_model_name_default_name_and_original_alias(
    environ: dict[str, str], expected: str
) -> None:
    env = EnvReader(environ, "x")
    assert read_model_name(env) == expected
    assert env.problems == []


def test_read_model_name_invalid_is_a_problem_of_the_reader() -> None:
    env = EnvReader({"PROD_MODEL_NAME": "../escape"}, "x")
    assert read_model_name(env) == "cnn_vit"
    with pytest.raises(SettingsError) as caught:
        env.check()
    assert "MODEL_NAME" in caught.value.problems[0]
