"""Schemathesis against the gateway's OpenAPI document: the real functions (in process, through
the real gateway WSGI app), a local store, a healthy fake model server, a token fetched by a
dynamic auth hook. Bounded (a few examples per operation, a fixed seed, no example database):
no 5xx, and every status, content type, header and body is the one the document describes.

The login throttle is raised for this run: fuzzing /token is hundreds of failed logins, which
the throttle would rightly answer with 429 (tested on its own in test_login_hardening.py).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from werkzeug.test import Client

from functions.gateway import build_gateway
from functions.runtime import Runtime, install_runtime, reset_runtime
from tests.functions.conftest import PASSWORDS, Stack, cheap_env, seed_users

SEED = 20261127
EXAMPLES_PER_OPERATION = 25


_FUZZ_ENV = {
    "LOGIN_MAX_FAILURES_PER_USER": "1000000",
    "LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
}
_test_running = False


@contextlib.contextmanager
def _functions_ready() -> Iterator[None]:
    """During a test, its own runtime serves; during collection (Schemathesis builds its
    coverage examples, auth included, while collecting) a temporary one on a folder of its own.
    """
    if _test_running:
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="fuzz-collection-"))
    try:
        runtime = Runtime.from_environ(
            {**cheap_env(), **_FUZZ_ENV, "STORAGE_URL": str(folder / "store")}
        )
        seed_users(runtime.auth_store)
        install_runtime(runtime)
        yield
    finally:
        reset_runtime()
        shutil.rmtree(folder, ignore_errors=True)


class GatewayToken:
    """Schemathesis' dynamic auth: a password-grant token fetched from the gateway itself.

    Tokens are stateless (signed with the test secret, naming user 1), so one fetched while
    collecting stays valid in every test's stack; Schemathesis caches it for 300 s.
    """

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        del case, context
        with _functions_ready():
            response = Client(GATEWAY).post(
                "/auth/token",
                data={
                    "grant_type": "password",
                    "username": "alice@example.com",
                    "password": PASSWORDS["1"],
                },
            )
        assert response.status_code == 200, response.get_data()
        return str(response.get_json()["access_token"])

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        del context
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# Creating the apps checks the settings, so a runtime must exist then; requests use the one
# installed when they run (per test, below).
with _functions_ready():
    GATEWAY = build_gateway()
# Schema-valid requests the document cannot describe as invalid, per operation: a wrong
# password (400 invalid_grant: credentials are not a schema property), bytes that are not a
# real image (JSON Schema cannot say "a decodable PNG"), an opaque page token or a window
# whose start is after its stop (constraints between values). The original's routes refuse as
# FastAPI did: 422 for a grant_type other than `password` or a time that is not one.
_ACCEPTED_REFUSALS = [
    (["issueToken"], [400]),
    (["issueTokenLegacy"], [400, 422]),
    (["predict", "predictLegacy", "gradcam", "gradcamLegacy"], [400, 413, 415, 422]),
    (["listHistory"], [400]),
    (["listHistoryLegacy"], [422]),
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
        },
        "phases": {"stateful": {"enabled": False}},
        "operations": [
            {
                "include-operation-id": operation_ids,
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", 401, 403, 404, 409, 429, *refusals]
                    }
                },
            }
            for operation_ids, refusals in _ACCEPTED_REFUSALS
        ],
    }
)
schema = schemathesis.openapi.from_wsgi("/openapi.json", GATEWAY, config=CONFIG)
schema.auth()(GatewayToken)


@pytest.fixture(autouse=True)
def _functions(stack_factory: Callable[..., Stack]) -> Iterator[None]:
    """A fresh store, users and a healthy fake model server behind the gateway's functions."""
    global _test_running
    stack_factory(**_FUZZ_ENV)
    _test_running = True
    yield
    _test_running = False


@schema.parametrize()
def test_fuzz_gateway_answers_match_the_document(case: schemathesis.Case) -> None:
    case.call_and_validate()
