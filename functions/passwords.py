"""Password hashing: argon2id for every new hash; the original system's bcrypt hashes still verify.

libpass's `CryptContext` (imported as `passlib`) holds both schemes, bcrypt marked deprecated.
Three rules keep login safe: a password longer than `MAX_PASSWORD_BYTES` is refused before any
hashing (no unbounded work); a password bcrypt cannot take (over 72 bytes: bcrypt 5 raises
instead of truncating) simply does not match (ASVS 6.2.8: never truncate); and an unknown user is
checked against a dummy hash with the same parameters, so the answer takes as long as a wrong
password (ASVS 6.3.8).
"""

from __future__ import annotations

import logging
import secrets
import threading

from passlib.context import CryptContext
from passlib.exc import PasswordSizeError, UnknownHashError

from common.logs import log_event
from functions.settings import PasswordHashSettings

__all__ = ["MAX_PASSWORD_BYTES", "PasswordHasher", "password_within_limits"]

logger = logging.getLogger(__name__)

# Long enough for any passphrase (ASVS 6.2.9 asks for at least 64 characters; 1024 bytes hold
# 256 four-byte characters), short enough that hashing it costs nothing extra.
MAX_PASSWORD_BYTES = 1024


def password_within_limits(password: str) -> bool:
    return 0 < len(password.encode("utf-8", "surrogatepass")) <= MAX_PASSWORD_BYTES


class PasswordHasher:
    """Hash and verify passwords with one `CryptContext` built from the settings."""

    def __init__(self, parameters: PasswordHashSettings) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated=["bcrypt"],
            argon2__type="ID",
            argon2__memory_cost=parameters.memory_kib,
            argon2__rounds=parameters.time_cost,
            argon2__parallelism=parameters.parallelism,
        )
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    def hash(self, password: str) -> str:
        """A new argon2id hash (PHC string with its own random salt and the parameters)."""
        if not password_within_limits(password):
            raise ValueError(f"a password must be 1 to {MAX_PASSWORD_BYTES} bytes")
        return self._context.hash(password)

    def verify(self, password: str, stored_hash: str) -> bool:
        """True only if `password` matches; never raises for odd passwords or hashes."""
        if not password_within_limits(password):
            return False
        try:
            return bool(self._context.verify(password, stored_hash))
        except (ValueError, PasswordSizeError):
            # bcrypt 5 raises for passwords over 72 bytes: such a password cannot be the one
            # that was hashed (the original system's hashes came from under 72 bytes).
            return False
        except (UnknownHashError, TypeError):
            log_event(
                logger,
                "password_hash_unknown",
                logging.WARNING,
                "a stored password hash has an unknown format",
            )
            return False

    def needs_update(self, stored_hash: str) -> bool:
        """True for legacy bcrypt hashes and argon2 hashes with other parameters."""
        try:
            return bool(self._context.needs_update(stored_hash))
        except (UnknownHashError, ValueError, TypeError):
            return True

    def verify_dummy(self, password: str) -> bool:
        """Spend the time of one verification for a user that does not exist; always False."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._context.hash(secrets.token_urlsafe(24))
        self.verify(password if password_within_limits(password) else "x", self._dummy_hash)
        return False
