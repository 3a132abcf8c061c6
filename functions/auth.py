"""Authentication core: the OAuth2 password grant (RFC 6749 §4.3) and bearer checks (RFC 6750).

No Flask here: the handlers pass the form fields and the `Authorization` header values in, and
get a token or a `Principal` back, or one of the errors of `functions.errors` in the shapes the
two RFCs prescribe. The password grant is kept for first-party clients only (RFC 9700 §2.4 says
not to offer it to third parties): it is what the original system's clients speak.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.logs import log_event
from functions import metrics
from functions.errors import BearerChallenge, OAuthError
from functions.passwords import LoginCost, PasswordHasher, password_within_limits
from functions.throttle import LoginThrottle
from functions.tokens import AccessClaims, InvalidAccessToken, IssuedToken, TokenService
from functions.users import User, UserDirectory, UserTable

__all__ = [
    "MAX_USERNAME_CHARS",
    "AccountDisabledGrant",
    "AccountDisabledToken",
    "Authenticator",
    "PasswordGrant",
    "Principal",
    "bearer_token",
    "parse_password_grant",
]

MAX_USERNAME_CHARS = 254
_MAX_TOKEN_CHARS = 4096
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_BAD_CREDENTIALS = "invalid username or password"

logger = logging.getLogger(__name__)


class AccountDisabledGrant(OAuthError):
    """The right password of a disabled account (said only to someone who knows it)."""

    def __init__(self) -> None:
        super().__init__("invalid_grant", "the account is disabled")


class AccountDisabledToken(BearerChallenge):
    """A valid token of an account disabled since it was issued."""

    def __init__(self) -> None:
        super().__init__("invalid_token", "the account is disabled")


@dataclass(frozen=True)
class PasswordGrant:
    username: str
    password: str


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as the users file says now (not only as the token said)."""

    user: User
    claims: AccessClaims

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


def parse_password_grant(fields: Mapping[str, Sequence[str]]) -> PasswordGrant:
    """Check a token request's form fields (RFC 6749 §3.2, §4.3.2) and return the grant.

    Empty values count as absent, repeated parameters are refused, unknown ones ignored.
    """
    for name in ("grant_type", "username", "password", "scope"):
        if len(fields.get(name, ())) > 1:
            raise OAuthError("invalid_request", f"the parameter {name} is repeated")

    def single(name: str) -> str | None:
        values = fields.get(name, ())
        return values[0] if values and values[0] != "" else None

    grant_type = single("grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != "password":
        raise OAuthError("unsupported_grant_type", "only the password grant is supported")
    username, password = single("username"), single("password")
    if username is None or password is None:
        raise OAuthError("invalid_request", "username and password are required")
    return PasswordGrant(username=username, password=password)


def bearer_token(authorization: Sequence[str]) -> str:
    """The bearer token of a request's `Authorization` header values, or the RFC 6750 error."""
    if not authorization:
        raise BearerChallenge(None, "authentication is required")
    if len(authorization) > 1:
        raise BearerChallenge("invalid_request", "send one Authorization header")
    scheme, _, token = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        # Another scheme is no bearer credential at all: a bare challenge (RFC 6750 §3.1).
        raise BearerChallenge(None, "a bearer token is required")
    token = token.strip()
    if "," in token:
        # Two Authorization headers arrive joined by ", " (WSGI has one value per name).
        raise BearerChallenge("invalid_request", "send one Authorization header")
    if not token or len(token) > _MAX_TOKEN_CHARS or not _B64TOKEN.match(token):
        raise BearerChallenge("invalid_token", "the token is malformed")
    return token


def _count_failure(error: OAuthError) -> None:
    """`xray_login_failures_total{reason}`: bad credentials, a disabled account, or another
    refusal of the grant (its RFC 6749 code)."""
    if isinstance(error, AccountDisabledGrant):
        reason = "account_disabled"
    elif error.code == "invalid_grant":
        reason = "bad_credentials"
    else:
        reason = error.code
    metrics.login_failure(reason)


class Authenticator:
    def __init__(
        self,
        users: UserDirectory,
        hasher: PasswordHasher,
        tokens: TokenService,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._throttle = throttle
        # The login cost of the users table last seen: recomputed only when the directory
        # hands out another table (it does so only when the file's version tag changed).
        self._cost: tuple[UserTable, LoginCost] | None = None
        self._cost_lock = threading.Lock()

    def login(self, grant: PasswordGrant, client: str = "") -> tuple[IssuedToken, User]:
        """A token for valid credentials; `invalid_grant` for anything else, alike for all.

        With a throttle, the attempt is counted against its username and client address
        before the password is checked (429 `LoginThrottled` past either limit, for existing
        and unknown usernames alike).
        """
        if self._throttle is None:
            try:
                return self._check_credentials(grant)
            except OAuthError as exc:
                _count_failure(exc)
                raise
        attempt = self._throttle.begin(grant.username, client)
        try:
            issued = self._check_credentials(grant)
        except OAuthError as exc:
            _count_failure(exc)
            attempt.failed()
            raise
        except BaseException:
            attempt.abandon()
            raise
        attempt.succeeded()
        return issued

    def _check_credentials(self, grant: PasswordGrant) -> tuple[IssuedToken, User]:
        if len(grant.username) > MAX_USERNAME_CHARS or not password_within_limits(grant.password):
            # Not user-dependent, so answering without hashing reveals nothing about accounts.
            raise OAuthError("invalid_grant", _BAD_CREDENTIALS)
        table = self._users.table()
        cost = self._login_cost(table)
        user = table.by_email(grant.username)
        if user is None:
            # One dummy of each cost class in the file: what any user's check costs.
            self._hasher.verify_dummy(grant.password, cost)
            raise OAuthError("invalid_grant", _BAD_CREDENTIALS)
        if not self._hasher.verify(grant.password, user.hashed_password, like=cost):
            raise OAuthError("invalid_grant", _BAD_CREDENTIALS)
        if user.disabled:
            # Said only to someone who knows the password.
            raise AccountDisabledGrant()
        if self._hasher.needs_update(user.hashed_password):
            self._rehash(user, grant.password)
        return self._tokens.issue(user), user

    def _login_cost(self, table: UserTable) -> LoginCost:
        """The cost classes of `table`'s hashes, computed once per table the directory hands out."""
        cached = self._cost
        if cached is not None and cached[0] is table:
            return cached[1]
        with self._cost_lock:
            cached = self._cost
            if cached is not None and cached[0] is table:
                return cached[1]
            cost = self._hasher.login_cost(user.hashed_password for user in table.users)
            self._cost = (table, cost)
        if cached is None or cached[1] != cost:
            log_event(
                logger,
                "login_cost_changed",
                message=f"every credential check now verifies {cost.describe()}",
                classes=[item.describe() for item in cost.classes],
            )
        return cost

    def _rehash(self, user: User, password: str) -> None:
        """Replace a legacy (or outdated) hash by argon2id after a login proved the password.

        One conditional write; if the users file changed meanwhile, the change wins and the
        rehash waits for the next login. Never fails the login.
        """
        previous = self._hasher.cost_of(user.hashed_password)
        was = previous.describe() if previous is not None else "unknown"
        new_hash = self._hasher.hash(password)
        skipped = self._users.replace_password_hash(user.id, user.hashed_password, new_hash)
        if skipped is None:
            log_event(
                logger,
                "password_rehashed",
                message=f"user {user.id}: password hash upgraded from {was} on login",
                user_id=user.id,
                previous=was,
            )
        else:
            log_event(
                logger,
                "password_rehash_skipped",
                logging.WARNING if skipped == "storage_error" else logging.INFO,
                f"user {user.id}: password hash left as {was} ({skipped}); "
                "the next login tries again",
                user_id=user.id,
                previous=was,
                reason=skipped,
            )

    def authenticate(self, authorization: Sequence[str], token_in_query: bool) -> Principal:
        """The caller of a bearer-protected route, checked against the users file."""
        if token_in_query:
            # RFC 6750 §2.3 / §5.3: tokens in URLs leak into logs and Referer headers.
            raise BearerChallenge(
                "invalid_request", "send the token in the Authorization header, not the URL"
            )
        token = bearer_token(authorization)
        try:
            claims = self._tokens.verify(token)
        except InvalidAccessToken as exc:
            raise BearerChallenge("invalid_token", exc.reason) from None
        user = self._users.get(claims.user_id)
        if user is None:
            raise BearerChallenge("invalid_token", "the token's user no longer exists")
        if user.disabled:
            raise AccountDisabledToken()
        return Principal(user=user, claims=claims)

    def require_admin_or_self(self, principal: Principal, user_id: str) -> None:
        if user_id != principal.user_id and not principal.is_admin:
            raise BearerChallenge("insufficient_scope", "only admins may read other users")
