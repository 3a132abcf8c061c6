"""FunctionSettings: defaults, the original system's names, and every problem reported at once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common.settings import SettingsError
from functions.settings import FunctionSettings

KEY = "k" * 32


def test_settings_defaults_match_the_documented_values() -> None:
    settings = FunctionSettings.from_env({"SECRET_KEY": KEY})
    assert settings.environment == "production"
    assert settings.algorithm == "HS256"
    assert settings.access_token_expire_minutes == 60
    assert settings.jwt_leeway_seconds == 30
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.max_pixels == 50_000_000
    assert settings.history_page_max == 100
    assert settings.api_port == 8080
    serving = settings.serving
    assert serving.url == "http://127.0.0.1:8501"
    assert (serving.model_name, serving.model_label, serving.model_version) == (
        "cnn_vit",
        "stable",
        None,
    )
    assert (serving.connect_timeout, serving.read_timeout) == (2.0, 10.0)
    assert (serving.max_attempts, serving.deadline) == (3, 15.0)
    assert settings.storage.url == "./store"
    assert (settings.users_cache_seconds, settings.users_stale_seconds) == (5.0, 60.0)


def test_settings_users_stale_seconds_is_read_and_bounded() -> None:
    settings = FunctionSettings.from_env({"SECRET_KEY": KEY, "USERS_STALE_SECONDS": "0"})
    assert settings.users_stale_seconds == 0.0
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({"SECRET_KEY": KEY, "USERS_STALE_SECONDS": "-1"})
    assert "USERS_STALE_SECONDS" in caught.value.problems[0]


def test_settings_original_names_are_accepted() -> None:
    settings = FunctionSettings.from_env(
        {
            "SECRET_KEY": KEY,
            "STORAGE_PATH": "/srv/store",
            "DB_AUTH_STORAGE_PATH": "/srv/auth",
            "PROD_MODEL_NAME": "other_model",
            "ACESS_TOKEN_EXPIRE_MINUTE": "15",
            "ALGORITHM": "HS256",
            "API_PORT": "9000",
            "API_USER_EMAIL": "admin@example.com",
            "API_USER_PASSWORD": "pw",
        }
    )
    assert settings.storage.url == "/srv/store"
    assert settings.storage.db_auth_url == "/srv/auth"
    assert settings.serving.model_name == "other_model"
    assert settings.access_token_expire_minutes == 15
    assert settings.api_port == 9000
    assert settings.api_user_email == "admin@example.com"


def test_settings_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env(
            {
                "SECRET_KEY": "tiny-secret",
                "ALGORITHM": "RS256",
                "ACCESS_TOKEN_EXPIRE_MINUTES": "1441",
                "MAX_UPLOAD_BYTES": "lots",
                "MAX_PIXELS": "500000000",
                "TF_SERVING_URL": "grpc://model:8500",
                "MODEL_VERSION": "latest",
                "STORAGE_URL": "gs://bucket",
                "API_USER_EMAIL": "only@example.com",
            }
        )
    text = "\n".join(caught.value.problems)
    for name in (
        "SECRET_KEY",
        "ALGORITHM",
        "ACCESS_TOKEN_EXPIRE_MINUTES",
        "MAX_UPLOAD_BYTES",
        "MAX_PIXELS",
        "TF_SERVING_URL",
        "MODEL_VERSION",
        "STORAGE_URL",
        "API_USER_PASSWORD",
    ):
        assert name in text
    assert "tiny-secret" not in text  # the secret's value is never echoed


def test_settings_missing_secret_outside_local_is_an_error() -> None:
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({})
    assert any("SECRET_KEY" in problem for problem in caught.value.problems)


def test_settings_missing_secret_in_local_generates_a_strong_one() -> None:
    first = FunctionSettings.from_env({"ENVIRONMENT": "local"})
    second = FunctionSettings.from_env({"ENVIRONMENT": "local"})
    assert first.secret_key_generated
    assert len(first.secret_key.encode()) >= 32
    assert first.secret_key != second.secret_key
    assert first.secret_key not in repr(first)


def test_settings_empty_model_label_means_latest_version() -> None:
    latest = FunctionSettings.from_env({"SECRET_KEY": KEY, "MODEL_LABEL": ""})
    pinned = FunctionSettings.from_env({"SECRET_KEY": KEY, "MODEL_VERSION": "7"})
    canary = FunctionSettings.from_env({"SECRET_KEY": KEY, "MODEL_LABEL": "canary"})
    assert (latest.serving.model_label, latest.serving.model_version) == (None, None)
    assert (pinned.serving.model_label, pinned.serving.model_version) == (None, 7)
    assert canary.serving.model_label == "canary"


@pytest.mark.parametrize("text", ["0", "-1", "v2", "\u00b2", "\u0661"])
def test_settings_model_version_not_a_plain_positive_integer_is_a_settings_problem(
    text: str,
) -> None:
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({"SECRET_KEY": KEY, "MODEL_VERSION": text})
    assert any("MODEL_VERSION" in problem for problem in caught.value.problems)


def test_settings_label_and_version_together_are_refused() -> None:
    with pytest.raises(SettingsError):
        FunctionSettings.from_env(
            {"SECRET_KEY": KEY, "MODEL_LABEL": "stable", "MODEL_VERSION": "2"}
        )


def test_settings_login_throttle_defaults_and_overrides() -> None:
    defaults = FunctionSettings.from_env({"SECRET_KEY": KEY}).login_throttle
    assert (defaults.max_failures_per_user, defaults.window_seconds) == (10, 900)
    assert (defaults.max_failures_per_client, defaults.trusted_proxy_hops) == (100, 0)
    changed = FunctionSettings.from_env(
        {
            "SECRET_KEY": KEY,
            "LOGIN_MAX_FAILURES_PER_USER": "5",
            "LOGIN_MAX_FAILURES_PER_CLIENT": "50",
            "LOGIN_WINDOW_SECONDS": "60",
            "TRUSTED_PROXY_HOPS": "1",
        }
    ).login_throttle
    assert (changed.max_failures_per_user, changed.max_failures_per_client) == (5, 50)
    assert (changed.window_seconds, changed.trusted_proxy_hops) == (60, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOGIN_MAX_FAILURES_PER_USER", "0"),
        ("LOGIN_MAX_FAILURES_PER_CLIENT", "-1"),
        ("LOGIN_WINDOW_SECONDS", "0"),
        ("LOGIN_WINDOW_SECONDS", "forever"),
        ("TRUSTED_PROXY_HOPS", "11"),
    ],
)
def test_settings_login_throttle_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({"SECRET_KEY": KEY, name: value})
    assert any(name in problem for problem in caught.value.problems)


class _Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(getattr(record, "event", ""))


def test_settings_original_env_template_starts_with_its_two_hour_tokens(tmp_path: Path) -> None:
    from common.settings import load_environment

    dotenv = tmp_path / ".env"
    dotenv.write_text(
        'SECRET_KEY = "' + "k" * 40 + '"\n'
        'ALGORITHM = "HS256"\n'
        "ACESS_TOKEN_EXPIRE_MINUTE = 120\n"
        "API_PORT = 8000\n"
        f'STORAGE_PATH = "{tmp_path}/storage/"\n'
        'PROD_MODEL_NAME = "mlops_cnn_vit_model_weights"\n'
        'DB_AUTH_STORAGE_PATH = "${STORAGE_PATH}/input/db_auth"\n'
        'API_USER_EMAIL = "admin"\n'
        'API_USER_PASSWORD = "a-long-enough-password"\n'
    )
    events = _Events()
    logging.getLogger("functions.settings").addHandler(events)
    try:
        settings = FunctionSettings.from_env(load_environment({}, dotenv))
    finally:
        logging.getLogger("functions.settings").removeHandler(events)

    assert settings.access_token_expire_minutes == 120
    assert settings.api_port == 8000
    assert settings.serving.model_name == "mlops_cnn_vit_model_weights"
    assert settings.storage.db_auth_url == f"{tmp_path}/storage//input/db_auth"
    assert "token_lifetime_long" in events.events


def test_settings_weak_secret_key_says_how_to_make_a_good_one() -> None:
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({"SECRET_KEY": "xxxxxx"})
    (problem,) = [text for text in caught.value.problems if "SECRET_KEY" in text]
    assert "secrets.token_urlsafe" in problem


@pytest.mark.parametrize("environment", ["production", "local"])
@pytest.mark.parametrize("key", ["k" * 16, "k" * 31, "é" * 15])  # "é" is two UTF-8 bytes
def test_settings_short_secret_key_is_refused_in_every_environment(
    environment: str, key: str
) -> None:
    # ENVIRONMENT=local relaxes only the missing key: a short one signs forgeable tokens
    # wherever it runs, so it stops the start there too.
    with pytest.raises(SettingsError) as caught:
        FunctionSettings.from_env({"ENVIRONMENT": environment, "SECRET_KEY": key})
    (problem,) = [text for text in caught.value.problems if "SECRET_KEY" in text]
    assert "32 bytes" in problem
    assert "secrets.token_urlsafe" in problem
    assert key not in problem  # the value is never echoed


@pytest.mark.parametrize("environment", ["production", "local"])
@pytest.mark.parametrize("key", ["k" * 32, "é" * 16])
def test_settings_secret_key_of_32_bytes_is_accepted_in_every_environment(
    environment: str, key: str
) -> None:
    settings = FunctionSettings.from_env({"ENVIRONMENT": environment, "SECRET_KEY": key})
    assert settings.secret_key == key
    assert not settings.secret_key_generated


def test_settings_make_run_environment_has_a_key_the_functions_accept(tmp_path: Path) -> None:
    # `make run` sets ENVIRONMENT=local and, unless the caller set SECRET_KEY, generates a key
    # once and keeps it in .run/secret_key: refusing short keys in local mode must not stop it.
    from devstack.run import StackOptions, prepare_environment

    env = prepare_environment(StackOptions(root=tmp_path), {}, None)
    settings = FunctionSettings.from_env(env)
    assert settings.environment == "local"
    assert not settings.secret_key_generated
    assert len(settings.secret_key.encode()) >= 32
