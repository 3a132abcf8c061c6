"""The original system's API, exactly as its clients see it (reference: original_system.md).

Routes `/`, `/token`, `/user/me`, `/x-ray`, `/grad_cam` and `/user/results` answer with the
original's status codes, FastAPI's error shape (`{"detail": ...}`, 422 validation errors) and
its field names and value types, over the same cores as the new routes (the same users, tokens,
throttle, model client and history). Two differences are deliberate and documented: every class's
probability is under its true name (the original put output 0 under `covid`...), and today's
security stays (strict tokens, the login throttle, disabled users refused at login).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import flask

from functions.auth import AccountDisabledGrant, AccountDisabledToken, PasswordGrant
from functions.errors import (
    ApiError,
    BearerChallenge,
    MethodNotAllowed,
    NotFound,
    OAuthError,
)
from functions.history import parse_time

__all__ = [
    "AVAILABLE",
    "FORM_TYPES",
    "LEGACY_CLASSES",
    "LegacyValidationError",
    "form_fields",
    "legacy_error",
    "legacy_grant",
    "legacy_prediction",
    "legacy_profile",
    "legacy_results_body",
    "legacy_time",
]

# `GET /`: the original answered this JSON string.
AVAILABLE = "The API is available."
# The keys of an `/x-ray` answer and of a `/user/results` entry, in the original's order.
LEGACY_CLASSES: tuple[str, ...] = ("covid", "no-covid", "normal")
_RESULTS_TIME = "%Y-%m-%d %H:%M:%S.%f"
# The form encodings FastAPI's OAuth2PasswordRequestForm reads.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_BEARER = {"WWW-Authenticate": "Bearer"}


class LegacyValidationError(ApiError):
    """FastAPI's 422: `{"detail": [{"type", "loc", "msg", "input"}]}` for one field."""

    status = 422
    code = "validation_error"

    def __init__(self, location: str, field: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.entry = {"type": kind, "loc": [location, field], "msg": message, "input": None}


def legacy_error(error: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The original's answer to a failure: (status, body, headers)."""
    if isinstance(error, LegacyValidationError):
        return 422, {"detail": [error.entry]}, {}
    if isinstance(error, AccountDisabledGrant | AccountDisabledToken):
        return 400, {"detail": "Inactive user"}, {}
    if isinstance(error, OAuthError) and error.code == "invalid_grant":
        return 401, {"detail": "Incorrect username or password"}, dict(_BEARER)
    if isinstance(error, BearerChallenge):
        if error.code == "authentication_required":
            return 401, {"detail": "Not authenticated"}, dict(_BEARER)
        return 401, {"detail": "Could not validate credentials"}, dict(_BEARER)
    headers = {
        name: value
        for name, value in error.headers.items()
        if name in ("Retry-After", "Allow", "Pragma")
    }
    if isinstance(error, NotFound) and error.message == "no such path":
        return 404, {"detail": "Not Found"}, headers
    if isinstance(error, MethodNotAllowed):
        return 405, {"detail": "Method Not Allowed"}, headers
    return error.status, {"detail": error.message}, headers


def legacy_grant(form: Mapping[str, str]) -> PasswordGrant:
    """FastAPI's `OAuth2PasswordRequestForm`: username and password required; `grant_type`
    absent or empty, or `password` (anything else is a 422, as the form's pattern says)."""
    grant_type = form.get("grant_type") or None
    if grant_type is not None and grant_type != "password":
        raise LegacyValidationError(
            "body",
            "grant_type",
            "string_pattern_mismatch",
            "String should match pattern '^password$'",
        )
    for name in ("username", "password"):
        if name not in form:
            raise LegacyValidationError("body", name, "missing", "Field required")
    return PasswordGrant(username=form["username"], password=form["password"])


def legacy_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """`/user/me`: id (an integer, as the original's users file has them), email, role,
    disabled."""
    user_id = profile["id"]
    return {
        "id": int(user_id) if str(user_id).isascii() and str(user_id).isdigit() else user_id,
        "email": profile["email"],
        "role": profile["role"],
        "disabled": bool(profile["disabled"]),
    }


def _probability_text(value: float) -> str:
    # The original answered `str(numpy.float32)`: the shortest text of the float32 value.
    import numpy as np

    return str(np.float32(value))


def legacy_prediction(record: Mapping[str, Any]) -> dict[str, str]:
    """`/x-ray`: each class's probability as text, under its true name."""
    probabilities = record["probabilities"]
    return {name: _probability_text(float(probabilities[name])) for name in LEGACY_CLASSES}


def legacy_time(value: str | None, name: str) -> datetime | None:
    """A `start_time`/`stop_time` query value (naive is UTC); 422 when it is not a time."""
    if value is None or value == "":
        return None
    try:
        return parse_time(value, name)
    except ApiError:
        raise LegacyValidationError(
            "query", name, "datetime_from_date_parsing", "Input should be a valid datetime"
        ) from None


def _results_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    moment = datetime.fromisoformat(str(record["created_at"]).replace("Z", "+00:00"))
    entry: dict[str, Any] = {"datetime": moment.astimezone(UTC).strftime(_RESULTS_TIME)}
    probabilities = record.get("probabilities") or {}
    for name in LEGACY_CLASSES:
        entry[name] = float(probabilities.get(name, 0.0))
    return entry


def legacy_results_body(records: list[dict[str, Any]] | None) -> Any:
    """`/user/results`: the JSON text of the list (the original serialised it twice), oldest
    first; a plain `[]` when there is no history at all, as the original without its file."""
    if records is None:
        return []
    return json.dumps([_results_entry(record) for record in records], separators=(",", ":"))


def form_fields(request: flask.Request) -> dict[str, str]:
    """The first value of each field of a URL-encoded or multipart form."""
    return {name: request.form.get(name, "") for name in request.form}
