"""The shared edge: errors are JSON whatever fails, access log lines, never a secret or a trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from functions.runtime import Runtime, install_runtime, reset_runtime
from storage import keys
from tests.functions.conftest import MAIN, Stack
from tests.functions.sample_images import png_bytes
from tests.functions.stores import FaultyStore


def _log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_web_unexpected_exception_is_a_generic_json_500_logged_with_traceback(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = FaultyStore(
        stack.auth_store,
        fails=lambda op, key: key == keys.USERS_FILE,
        error=lambda: RuntimeError("bucket-name-and-secret-detail"),
    )
    install_runtime(Runtime(stack.runtime.settings, root_store=stack.root, auth_store=broken))
    response = stack.client("auth").get("/me", headers=stack.bearer())
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal", "message": "internal error"}
    captured = capsys.readouterr()
    (problem,) = [line for line in _log_lines(captured.err) if line["level"] == "error"]
    assert "bucket-name-and-secret-detail" in str(problem["traceback"])
    assert "bucket-name-and-secret-detail" not in response.get_data(as_text=True)


def test_web_storage_outage_on_login_is_503_in_rfc6749_shape(stack: Stack) -> None:
    from storage import StorageUnavailable

    broken = FaultyStore(
        stack.auth_store,
        fails=lambda op, key: True,
        error=lambda: StorageUnavailable("get input/db_auth/authentication.csv: SlowDown"),
    )
    install_runtime(Runtime(stack.runtime.settings, root_store=stack.root, auth_store=broken))
    response = stack.client("auth").post(
        "/token", data={"grant_type": "password", "username": "a@example.com", "password": "x"}
    )
    assert response.status_code == 503
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert "authentication.csv" not in response.get_data(as_text=True)
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("auth", lambda client, headers: client.get("/me", headers=headers)),
        ("history", lambda client, headers: client.get("/", headers=headers)),
        (
            "predict",
            lambda client, headers: client.post(
                "/", headers=headers, data={"file": (io.BytesIO(png_bytes()), "x.png")}
            ),
        ),
    ],
)
def test_web_storage_outage_answers_the_configured_retry_after_on_every_function(
    stack_factory: Callable[..., Stack],
    function: str,
    call: Callable[[Any, dict[str, str]], Any],
) -> None:
    from storage import StorageUnavailable

    stack = stack_factory(RETRY_AFTER_SECONDS="17")
    headers = stack.bearer()
    stack.client(function)  # the app exists before the outage starts
    outage = lambda: StorageUnavailable("SlowDown")  # noqa: E731
    install_runtime(
        Runtime(
            stack.runtime.settings,
            root_store=FaultyStore(stack.root, fails=lambda op, key: True, error=outage),
            auth_store=FaultyStore(stack.auth_store, fails=lambda op, key: True, error=outage),
        )
    )
    response = call(stack.client(function), headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "17"


def test_web_misconfigured_function_fails_at_app_creation_naming_every_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functions_framework

    from common.settings import SettingsError

    reset_runtime()
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("TF_SERVING_URL", "ftp://model-server")

    with pytest.raises(SettingsError) as caught:
        functions_framework.create_app("auth", MAIN)

    problems = " ".join(caught.value.problems)
    assert "SECRET_KEY" in problems
    assert "TF_SERVING_URL" in problems
    reset_runtime()


def test_web_one_access_line_per_request_without_secrets(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    token = stack.token()
    response = stack.client("predict").post(
        "/",
        data=png_bytes(),
        content_type="image/png",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-123"},
    )
    assert response.headers["X-Request-ID"] == "req-123"
    stack.client("auth").post(
        "/token",
        data={"grant_type": "password", "username": "alice@example.com", "password": "pw-x"},
    )
    out = capsys.readouterr().out
    access = [line for line in _log_lines(out) if line["logger"] == "functions.access"]
    assert len(access) == 2
    predict_line, token_line = access
    assert predict_line["function"] == "predict"
    assert predict_line["route"] == "/"
    assert predict_line["status"] == 200
    assert predict_line["user_id"] == "1"
    assert predict_line["model_version"] == 3
    assert predict_line["request_id"] == "req-123"
    assert isinstance(predict_line["latency_ms"], float)
    assert token_line["error"] == "invalid_grant"
    assert token not in out
    assert "pw-x" not in out


def test_web_request_id_is_generated_when_missing_or_unsafe(stack: Stack) -> None:
    unsafe = "<script>" + "x" * 100
    response = stack.client("auth").get("/me", headers={"X-Request-ID": unsafe})
    assert response.headers["X-Request-ID"] != unsafe
    assert len(response.headers["X-Request-ID"]) == 16


@pytest.mark.parametrize("target", ["auth", "predict", "gradcam", "history"])
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_web_every_function_answers_unknown_methods_with_json_405(
    stack: Stack, target: str, method: str
) -> None:
    path = "/token" if target == "auth" else "/"
    response = stack.client(target).open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"]
    assert response.mimetype == "application/json"


def test_web_log_level_from_settings_survives_app_creation(
    stack_factory: Callable[..., Stack],
) -> None:
    """LOG_LEVEL is set by the runtime; registering the web hooks on an app must not reset it."""
    stack = stack_factory(LOG_LEVEL="WARNING")
    stack.client("auth")
    assert logging.getLogger("functions").level == logging.WARNING
    reset_runtime()
    stack_factory(LOG_LEVEL="INFO").client("auth")
    assert logging.getLogger("functions").level == logging.INFO


def test_web_routers_with_the_same_rules_share_one_map_and_each_routes_to_its_own_views() -> None:
    """functions-framework executes functions/main.py once per app: the werkzeug Map (compiled
    rules) is built once per process, while each Router keeps its own views."""
    import flask

    from functions import web

    def view(answer: str) -> Callable[..., flask.Response]:
        return lambda request, **values: web.json_response({"from": answer, **values})

    def router(answer: str) -> web.Router:
        return web.Router(
            "shared-map-test",
            [
                web.Route("/", ("GET",), view(answer), "/"),
                web.Route("/<item>", ("GET",), view(answer), "/<item>"),
            ],
        )

    first, second = router("first"), router("second")
    assert first._map is second._map
    other = web.Router("shared-map-test", [web.Route("/", ("POST",), view("x"), "/")])
    assert other._map is not first._map
    app = flask.Flask("shared-map-test")
    with app.test_request_context("/abc"):
        assert json.loads(first(flask.request).get_data()) == {"from": "first", "item": "abc"}
        assert json.loads(second(flask.request).get_data()) == {"from": "second", "item": "abc"}
