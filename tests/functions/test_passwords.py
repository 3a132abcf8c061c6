"""Password hashing: argon2id for new hashes, legacy bcrypt verifies, odd passwords never raise."""

from __future__ import annotations

import bcrypt
import pytest

from functions.passwords import MAX_PASSWORD_BYTES, HashCost, LoginCost, PasswordHasher
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


# -- every check of one users file costs the same ------------------------------------------

_CHEAP_ARGON2 = HashCost("argon2", rounds=1, memory_kib=8, parallelism=1, variant="id")
_MALFORMED_BCRYPT = "$2b$12$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"  # 53, not 60


class RecordingHasher(PasswordHasher):
    """Records the cost class of every hash actually verified (real or dummy)."""

    def __init__(self) -> None:
        super().__init__(CHEAP_HASH)
        self.verified: list[HashCost | None] = []

    def _verify(self, password: str, stored_hash: str) -> bool:
        self.verified.append(self.cost_of(stored_hash))
        return super()._verify(password, stored_hash)


def _bcrypt(password: bytes, rounds: int) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=rounds)).decode()


def test_hasher_cost_of_names_scheme_and_parameters_never_the_salt(hasher: PasswordHasher) -> None:
    assert hasher.cost_of(_bcrypt(b"x", 5)) == HashCost("bcrypt", rounds=5)
    assert hasher.cost_of(hasher.hash("x")) == _CHEAP_ARGON2
    assert hasher.cost_of(hasher.hash("x")) == hasher.cost_of(hasher.hash("y"))
    assert hasher.cost_of(_MALFORMED_BCRYPT) is None
    assert hasher.cost_of("not-a-hash") is None
    assert hasher.cost_of("$1$saltsalt$hashhashhashhashhashha") is None  # md5-crypt: not ours


def test_hasher_login_cost_lists_each_class_present_once(hasher: PasswordHasher) -> None:
    cost = hasher.login_cost(
        [_bcrypt(b"a", 4), _bcrypt(b"b", 5), _bcrypt(b"c", 5), hasher.hash("d"), "junk"]
    )
    assert set(cost.classes) == {HashCost("bcrypt", 4), HashCost("bcrypt", 5), _CHEAP_ARGON2}
    assert len(cost.classes) == 3
    # No users: this hasher's own parameters, as before.
    assert hasher.login_cost([]) == LoginCost((_CHEAP_ARGON2,))


def test_hasher_unknown_user_verifies_one_dummy_of_every_class_present() -> None:
    hasher = RecordingHasher()
    population = [_bcrypt(b"old", 6), _bcrypt(b"older", 5), hasher.hash("new")]
    cost = hasher.login_cost(population)
    assert hasher.verify_dummy("guess", cost) is False
    # The slowest legacy class is there with its own cost factor (so are the others).
    assert sorted(hasher.verified, key=repr) == sorted(
        [HashCost("bcrypt", 6), HashCost("bcrypt", 5), _CHEAP_ARGON2], key=repr
    )


@pytest.mark.parametrize("which", ["bcrypt", "argon2id", "malformed"])
def test_hasher_known_user_verifies_own_hash_plus_every_other_class(which: str) -> None:
    hasher = RecordingHasher()
    legacy, modern = _bcrypt(b"old", 5), hasher.hash("new")
    stored = {"bcrypt": legacy, "argon2id": modern, "malformed": _MALFORMED_BCRYPT}[which]
    cost = hasher.login_cost([legacy, modern, _MALFORMED_BCRYPT])
    assert hasher.verify("guess", stored, like=cost) is False
    expected = {
        # own hash first, then the other class's dummy: one of each class in all
        "bcrypt": [HashCost("bcrypt", 5), _CHEAP_ARGON2],
        "argon2id": [_CHEAP_ARGON2, HashCost("bcrypt", 5)],
        # a hash that cannot verify counts as no class: every class's dummy after it
        "malformed": [None, *cost.classes],
    }[which]
    assert hasher.verified == expected


def test_hasher_verify_with_like_still_answers_by_the_real_hash() -> None:
    hasher = RecordingHasher()
    legacy = _bcrypt(b"old-password", 4)
    cost = hasher.login_cost([legacy, hasher.hash("new")])
    assert hasher.verify("old-password", legacy, like=cost) is True
    assert hasher.verify("wrong", legacy, like=cost) is False
    # A password bcrypt cannot take fails fast on every bcrypt hash, the dummy included.
    assert hasher.verify("p" * 100, legacy, like=cost) is False
