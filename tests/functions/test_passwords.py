"""Password hashing: argon2id for new hashes, legacy bcrypt verifies, odd passwords never raise."""

from __future__ import annotations

import bcrypt
import pytest

from functions.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from functions.settings import PasswordHashSettings
from tests.functions.conftest import CHEAP_HASH


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(CHEAP_HASH)


def test_hasher_production_defaults_produce_argon2id_with_owasp_parameters() -> None:
    defaults = PasswordHashSettings()
    hashed = PasswordHasher(defaults).hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$")
    assert "m=19456,t=2,p=1" in hashed  # OWASP's first recommended argon2id configuration
    assert PasswordHasher(defaults).verify("correct horse battery staple", hashed)


def test_hasher_new_hashes_use_unique_salts(hasher: PasswordHasher) -> None:
    first, second = hasher.hash("same"), hasher.hash("same")
    assert first != second
    assert hasher.verify("same", first)
    assert hasher.verify("same", second)
    assert not hasher.verify("other", first)


def test_hasher_legacy_bcrypt_hash_verifies_and_needs_update(hasher: PasswordHasher) -> None:
    legacy = bcrypt.hashpw(b"old-password", bcrypt.gensalt(rounds=4)).decode()
    assert legacy.startswith("$2b$04$")
    assert hasher.verify("old-password", legacy)
    assert not hasher.verify("wrong", legacy)
    assert hasher.needs_update(legacy)
    assert not hasher.needs_update(hasher.hash("x"))


@pytest.mark.parametrize("password", ["x" * 73, "é" * 64, "p" * MAX_PASSWORD_BYTES])
def test_hasher_password_over_bcrypt_limit_does_not_match_and_never_raises(
    hasher: PasswordHasher, password: str
) -> None:
    legacy = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=4)).decode()
    assert hasher.verify(password, legacy) is False


def test_hasher_long_password_hashes_with_argon2_without_truncation(hasher: PasswordHasher) -> None:
    password = "é" * 300  # 600 bytes: far over bcrypt's 72
    hashed = hasher.hash(password)
    assert hasher.verify(password, hashed)
    assert not hasher.verify(password[:-1], hashed)


@pytest.mark.parametrize("password", ["", "x" * (MAX_PASSWORD_BYTES + 1)])
def test_hasher_password_outside_limits_is_refused(hasher: PasswordHasher, password: str) -> None:
    with pytest.raises(ValueError):
        hasher.hash(password)
    assert hasher.verify(password, hasher.hash("x")) is False


def test_hasher_unknown_hash_format_does_not_match(hasher: PasswordHasher) -> None:
    assert hasher.verify("anything", "not-a-hash") is False
    assert hasher.verify_dummy("anything") is False
