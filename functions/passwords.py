"""Password hashing: argon2id for every new hash; the original system's bcrypt hashes still verify.

libpass's `CryptContext` (imported as `passlib`) holds both schemes, bcrypt marked deprecated.
Four rules keep login safe: a password longer than `MAX_PASSWORD_BYTES` is refused before any
hashing (no unbounded work); a password bcrypt cannot take (over 72 bytes: bcrypt 5 raises
instead of truncating) simply does not match (ASVS 6.2.8: never truncate); every check of one
users file costs the same, whoever the user (ASVS 6.3.8: no enumeration by timing); and a hash
that `needs_update` is replaced by argon2id on the next successful login (the caller writes it).

Equal cost: a users file may hold hashes of several costs at once (the original's `$2b$12$`
bcrypt, about 330 ms here, beside argon2id at about 30 ms). `LoginCost` lists each cost class
present (scheme and parameters, never the salt); a check verifies the user's own hash plus one
dummy hash of every *other* class, and an unknown user verifies a dummy of every class, so every
answer costs the sum of the classes. While legacy hashes remain, argon2id users pay the bcrypt
time too; the bcrypt class leaves the sum once its last hash is rehashed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from passlib.exc import PasswordSizeError, UnknownHashError

from common.logs import log_event
from functions.settings import PasswordHashSettings

if TYPE_CHECKING:
    from passlib.context import CryptContext

__all__ = [
    "MAX_PASSWORD_BYTES",
    "HashCost",
    "LoginCost",
    "PasswordHasher",
    "password_within_limits",
]

logger = logging.getLogger(__name__)

# Long enough for any passphrase (ASVS 6.2.9 asks for at least 64 characters; 1024 bytes hold
# 256 four-byte characters), short enough that hashing it costs nothing extra.
MAX_PASSWORD_BYTES = 1024


def password_within_limits(password: str) -> bool:
    return 0 < len(password.encode("utf-8", "surrogatepass")) <= MAX_PASSWORD_BYTES


@dataclass(frozen=True, order=True)
class HashCost:
    """What one verification against a hash costs: its scheme and work parameters, no salt.

    bcrypt: `rounds` (the cost factor, 2**rounds iterations). argon2: `variant` (id, i, d),
    `memory_kib`, `rounds` (time cost) and `parallelism`.
    """

    scheme: str
    rounds: int
    memory_kib: int = 0
    parallelism: int = 0
    variant: str = ""

    def describe(self) -> str:
        if self.scheme == "bcrypt":
            return f"bcrypt cost {self.rounds}"
        return f"argon2{self.variant} m={self.memory_kib},t={self.rounds},p={self.parallelism}"


@dataclass(frozen=True)
class LoginCost:
    """The cost classes of one users file: every credential check verifies one hash of each."""

    classes: tuple[HashCost, ...]

    def describe(self) -> str:
        return " + ".join(cost.describe() for cost in self.classes)


class PasswordHasher:
    """Hash and verify passwords with one `CryptContext` built from the settings."""

    def __init__(self, parameters: PasswordHashSettings) -> None:
        self._parameters = parameters
        self._context_value: CryptContext | None = None
        self._context_lock = threading.Lock()
        self._own_cost = HashCost(
            "argon2",
            rounds=parameters.time_cost,
            memory_kib=parameters.memory_kib,
            parallelism=parameters.parallelism,
            variant="id",
        )
        # One dummy hash per cost class seen, made once per process (hashing one costs what
        # verifying one does).
        self._dummies: dict[HashCost, str | None] = {}
        self._dummy_lock = threading.Lock()

    @property
    def _context(self) -> CryptContext:
        # Built on first use: passlib's CryptContext (and the argon2 handler) cost tens of
        # milliseconds to import, which a bearer-token request never needs (cold start).
        context = self._context_value
        if context is None:
            with self._context_lock:
                if self._context_value is None:
                    from passlib.context import CryptContext

                    parameters = self._parameters
                    self._context_value = CryptContext(
                        schemes=["argon2", "bcrypt"],
                        deprecated=["bcrypt"],
                        argon2__type="ID",
                        argon2__memory_cost=parameters.memory_kib,
                        argon2__rounds=parameters.time_cost,
                        argon2__parallelism=parameters.parallelism,
                    )
                context = self._context_value
        return context

    def hash(self, password: str) -> str:
        """A new argon2id hash (PHC string with its own random salt and the parameters)."""
        if not password_within_limits(password):
            raise ValueError(f"a password must be 1 to {MAX_PASSWORD_BYTES} bytes")
        return self._context.hash(password)

    def verify(self, password: str, stored_hash: str, like: LoginCost | None = None) -> bool:
        """True only if `password` matches; never raises for odd passwords or hashes.

        With `like` (the users file's `LoginCost`), also verifies a dummy of every other cost
        class of that file, so the check costs what any other user's check costs.
        """
        matched = self._verify(password, stored_hash)
        if like is not None:
            self._verify_dummies(password, like, skip=self.cost_of(stored_hash))
        return matched

    def _verify(self, password: str, stored_hash: str) -> bool:
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

    def cost_of(self, stored_hash: str) -> HashCost | None:
        """The cost class of a well-formed hash of a known scheme; None for anything else."""
        try:
            scheme = self._context.identify(stored_hash)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # odd bcrypt padding bits: still verifiable
                parsed = self._context.handler(scheme).from_string(stored_hash)
        except (UnknownHashError, ValueError, TypeError):
            return None
        if scheme == "bcrypt":
            return HashCost("bcrypt", rounds=int(parsed.rounds))
        variant = parsed.type
        return HashCost(
            "argon2",
            rounds=int(parsed.rounds),
            memory_kib=int(parsed.memory_cost),
            parallelism=int(parsed.parallelism),
            variant=variant.decode() if isinstance(variant, bytes) else str(variant),
        )

    def login_cost(self, stored_hashes: Iterable[str]) -> LoginCost:
        """The cost classes present among `stored_hashes` (this hasher's own if there are none).

        One pass over the hashes (parsing, no hashing); the dummy of a class not seen before is
        made here, once per process. Callers cache the result per version of the users file.
        """
        found = {cost for cost in map(self.cost_of, stored_hashes) if cost is not None}
        classes = tuple(sorted(found)) or (self._own_cost,)
        for cost in classes:
            self._dummy_for(cost)
        return LoginCost(classes)

    def verify_dummy(self, password: str, like: LoginCost | None = None) -> bool:
        """Spend the time of one check for a user that does not exist; always False.

        With `like`, one verification of each cost class of that users file (what a known
        user's check costs); without, one of this hasher's own parameters.
        """
        self._verify_dummies(password, like or LoginCost((self._own_cost,)), skip=None)
        return False

    def _verify_dummies(self, password: str, like: LoginCost, skip: HashCost | None) -> None:
        candidate = password if password_within_limits(password) else "x"
        for cost in like.classes:
            if cost == skip:
                continue
            dummy = self._dummy_for(cost)
            if dummy is not None:
                self._verify(candidate, dummy)

    def _dummy_for(self, cost: HashCost) -> str | None:
        with self._dummy_lock:
            if cost not in self._dummies:
                self._dummies[cost] = self._make_dummy(cost)
            return self._dummies[cost]

    def _make_dummy(self, cost: HashCost) -> str | None:
        secret = secrets.token_urlsafe(24)
        try:
            if cost.scheme == "bcrypt":
                handler = self._context.handler("bcrypt").using(rounds=cost.rounds)
            else:
                handler = self._context.handler("argon2").using(
                    type=cost.variant.upper(),
                    memory_cost=cost.memory_kib,
                    rounds=cost.rounds,
                    parallelism=cost.parallelism,
                )
            return str(handler.hash(secret))
        except (ValueError, TypeError, KeyError):
            log_event(
                logger,
                "password_dummy_unavailable",
                logging.WARNING,
                f"cannot make a dummy hash like {cost.describe()}: unknown users of this "
                "users file answer faster than its users of that kind",
                cost=cost.describe(),
            )
            return None
