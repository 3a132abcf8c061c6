"""Access tokens: HS256 JWTs with sub, role, iat, exp, iss, aud and jti, checked on every use.

RFC 8725 in practice: the algorithm is pinned (never read from the token), every claim is
required (`options={"require": [...]}`, since PyJWT only checks claims that are present), issuer
and audience are fixed strings, and the header type is `at+jwt` (RFC 9068) so no other kind of
JWT signed with the same key passes as an access token.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from functions.settings import FunctionSettings
from functions.users.table import ROLES, User


def _import_jwt_without_cryptography() -> None:
    """Import PyJWT without its asymmetric algorithms: HS256 is the only algorithm accepted
    (`_ALGORITHM`, pinned), and PyJWT otherwise imports `cryptography` up front, about half of
    its import time and a cold start's largest avoidable import. PyJWT treats a missing
    `cryptography` as "HMAC only" (`jwt.algorithms.has_crypto`). Skipped when `cryptography`
    is already loaded (nothing to save) or jwt already imported."""
    if "jwt" in sys.modules or "cryptography" in sys.modules:
        return
    sys.modules["cryptography"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        import jwt  # noqa: F401
    finally:
        if sys.modules.get("cryptography", 0) is None:
            del sys.modules["cryptography"]


_import_jwt_without_cryptography()

import jwt  # noqa: E402

__all__ = ["ACCESS_TOKEN_TYPE", "AccessClaims", "InvalidAccessToken", "IssuedToken", "TokenService"]

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
_ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["sub", "role", "iat", "exp", "iss", "aud", "jti"]


class InvalidAccessToken(Exception):
    """The token cannot be used; `reason` is a short, caller-safe description."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    token_id: str


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    role: str
    issued_at: int
    expires_at: int
    token_id: str


class TokenService:
    def __init__(self, settings: FunctionSettings, clock: Callable[[], float] = time.time) -> None:
        self._key = settings.secret_key.encode("utf-8")
        self._lifetime = settings.access_token_expire_minutes * 60
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._clock = clock
        self._decoder = jwt.PyJWT()

    def issue(self, user: User) -> IssuedToken:
        now = int(self._clock())
        token_id = secrets.token_hex(16)
        claims = {
            "sub": user.id,
            "role": user.role,
            "iat": now,
            "exp": now + self._lifetime,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": token_id,
        }
        token = jwt.encode(
            claims, self._key, algorithm=_ALGORITHM, headers={"typ": ACCESS_TOKEN_TYPE}
        )
        return IssuedToken(access_token=token, expires_in=self._lifetime, token_id=token_id)

    def verify(self, token: str) -> AccessClaims:
        """The token's claims, or InvalidAccessToken saying (safely) what is wrong."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidAccessToken("the token is malformed") from None
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidAccessToken("the token is not an access token")
        try:
            claims = self._decoder.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAccessToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidAccessToken("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidAccessToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidAccessToken("the token has another issuer") from None
        except jwt.MissingRequiredClaimError:
            raise InvalidAccessToken("the token lacks a required claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidAccessToken("the token algorithm is not accepted") from None
        except jwt.InvalidSignatureError:
            raise InvalidAccessToken("the token signature is invalid") from None
        except jwt.PyJWTError:
            raise InvalidAccessToken("the token is invalid") from None
        return _checked_claims(claims)


def _checked_claims(claims: dict[str, object]) -> AccessClaims:
    subject, role, token_id = claims.get("sub"), claims.get("role"), claims.get("jti")
    issued_at, expires_at = claims.get("iat"), claims.get("exp")
    if not isinstance(subject, str) or not subject:
        raise InvalidAccessToken("the token subject is invalid")
    if role not in ROLES or not isinstance(role, str):
        raise InvalidAccessToken("the token role is invalid")
    if not isinstance(token_id, str) or not token_id:
        raise InvalidAccessToken("the token id is invalid")
    if not isinstance(issued_at, int) or not isinstance(expires_at, int):
        raise InvalidAccessToken("the token times are invalid")
    return AccessClaims(subject, role, issued_at, expires_at, token_id)
