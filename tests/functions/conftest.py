"""Fixtures for the functions: a fake model server, a seeded users file, the real function apps.

Each test gets a fresh store (a temporary folder, or a moto bucket for `backend` "s3"), a users
file with cheap argon2 parameters (hashing is slow by design; the production defaults have a test
of their own), and a per-process runtime built from an explicit environment, installed for the
test and removed after it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from functions.passwords import PasswordHasher
from functions.runtime import Runtime, install_runtime, reset_runtime
from functions.settings import PasswordHashSettings
from functions.users import User, format_users_csv
from storage import Store, keys, open_areas
from tests.conftest import new_bucket
from tests.functions.fake_serving import FakeTFServing

MAIN = str(Path(__file__).resolve().parents[2] / "functions" / "main.py")
SECRET = "test-secret-" + "k" * 40
CHEAP_HASH = PasswordHashSettings(memory_kib=8, time_cost=1, parallelism=1)
PASSWORDS = {"1": "alice-password", "2": "admin-password", "3": "bob-password", "4": "off-password"}


def cheap_env() -> dict[str, str]:
    return {
        "SECRET_KEY": SECRET,
        "PASSWORD_HASH_MEMORY_KIB": str(CHEAP_HASH.memory_kib),
        "PASSWORD_HASH_TIME_COST": str(CHEAP_HASH.time_cost),
        "PASSWORD_HASH_PARALLELISM": str(CHEAP_HASH.parallelism),
        "USERS_CACHE_SECONDS": "0",
        "TF_SERVING_CONNECT_TIMEOUT": "0.5",
        "TF_SERVING_READ_TIMEOUT": "1",
        "TF_SERVING_DEADLINE": "2",
        "LOG_LEVEL": "INFO",
    }


def seed_users(store: Store, extra: list[User] | None = None) -> dict[str, User]:
    hasher = PasswordHasher(CHEAP_HASH)
    users = [
        User("1", "alice@example.com", "user", hasher.hash(PASSWORDS["1"])),
        User("2", "admin@example.com", "admin", hasher.hash(PASSWORDS["2"])),
        User("3", "bob@example.com", "user", hasher.hash(PASSWORDS["3"])),
        User("4", "off@example.com", "user", hasher.hash(PASSWORDS["4"]), disabled=True),
        *(extra or []),
    ]
    store.put(keys.USERS_FILE, format_users_csv(users))
    return {user.id: user for user in users}


@pytest.fixture(scope="session")
def fake_serving() -> Iterator[FakeTFServing]:
    fake = FakeTFServing().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> None:
    """Every test starts with a well-behaved fake that has seen nothing."""
    if "fake_serving" in request.fixturenames:
        fake: FakeTFServing = request.getfixturevalue("fake_serving")
        fake.ok()
        fake.requests.clear()
        fake.version, fake.predicted_index, fake.attempts = 3, 1, 0
        fake.versions_without_overlay = set()
        fake.unassigned_labels = set()
        fake.label_versions, fake.label_predicted = {}, {}
        fake.label_delay, fake.label_status = {}, {}
        fake.refer_threshold = None
        fake.ood_reason, fake.ood_score = None, 0.0


@dataclass
class Stack:
    """One test's deployment: the environment, the runtime, the stores and the apps."""

    env: dict[str, str]
    runtime: Runtime
    root: Store
    auth_store: Store
    users: dict[str, User]
    fake: FakeTFServing

    def client(self, target: str) -> FlaskClient:
        return functions_framework.create_app(target, MAIN).test_client()

    def token(self, user_id: str = "1") -> str:
        return self.runtime.tokens.issue(self.users[user_id]).access_token

    def bearer(self, user_id: str = "1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}

    def reinstall(self, **overrides: str) -> Runtime:
        """A new runtime with changed settings (the stores stay)."""
        self.env.update(overrides)
        self.runtime = install_runtime(Runtime.from_environ(self.env))
        return self.runtime


def _backend_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "local":
        return {"STORAGE_URL": str(tmp_path / "store")}
    s3 = request.getfixturevalue("s3_env")
    bucket = new_bucket(s3["S3_ENDPOINT_URL"])
    return {
        "STORAGE_URL": f"s3://{bucket}/root",
        "S3_ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        "AWS_REGION": "us-east-1",
    }


def make_stack(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    fake: FakeTFServing,
    **overrides: str,
) -> Stack:
    env = {**cheap_env(), **_backend_env(backend, tmp_path, request), "TF_SERVING_URL": fake.url}
    env.update(overrides)
    runtime = install_runtime(Runtime.from_environ(env))
    areas = open_areas(runtime.settings.storage)
    users = seed_users(areas.auth)
    return Stack(env, runtime, areas.root, areas.auth, users, fake)


@pytest.fixture
def stack(
    tmp_path: Path, request: pytest.FixtureRequest, fake_serving: FakeTFServing
) -> Iterator[Stack]:
    """The functions on a local store."""
    yield make_stack("local", tmp_path, request, fake_serving)
    reset_runtime()


@pytest.fixture(params=["local", "s3"])
def any_stack(
    tmp_path: Path, request: pytest.FixtureRequest, fake_serving: FakeTFServing
) -> Iterator[Stack]:
    """The functions on each storage backend (a folder, and a moto bucket)."""
    yield make_stack(request.param, tmp_path, request, fake_serving)
    reset_runtime()


@pytest.fixture
def stack_factory(
    tmp_path: Path, request: pytest.FixtureRequest, fake_serving: FakeTFServing
) -> Iterator[Callable[..., Stack]]:
    """Build a stack with extra settings (and a chosen backend)."""

    def build(backend: str = "local", **overrides: str) -> Stack:
        return make_stack(backend, tmp_path, request, fake_serving, **overrides)

    yield build
    reset_runtime()


def error_of(response: Any) -> str:
    """The machine code of an error answer, after checking its shape is JSON, never HTML."""
    assert response.mimetype == "application/json", response.data[:200]
    body = response.get_json()
    assert isinstance(body, dict)
    assert set(body) >= {"error"}
    return str(body["error"])


def unused_token() -> str:
    return secrets.token_hex(16)
