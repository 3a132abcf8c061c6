"""The local gateway as a real process over real HTTP: new and original routes, docs, TLS."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from functions.docs import load_openapi
from tests.conftest import free_port
from tests.functions.fake_serving import FakeTFServing, overlay_png
from tests.functions.gateway_process import (
    ROOT,
    Gateway,
    gateway_environment,
    start_gateway,
    stop_gateway,
)
from tests.functions.sample_images import png_bytes


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, fake_serving: FakeTFServing
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway")
    running = start_gateway(folder, gateway_environment(folder, fake_serving))
    yield running
    stop_gateway(running)


@pytest.mark.parametrize("token_path", ["/auth/token", "/token"])
@pytest.mark.parametrize("me_path", ["/auth/me", "/user/me"])
def test_gateway_login_and_profile_on_new_and_original_routes(
    gateway: Gateway, token_path: str, me_path: str
) -> None:
    token = gateway.token(token_path)
    response = requests.get(
        gateway.url + me_path, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["email"] == "alice@example.com"


@pytest.mark.parametrize("path", ["/predict", "/predict/"])
def test_gateway_predict_routes_answer_without_redirect(gateway: Gateway, path: str) -> None:
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    response = requests.post(
        gateway.url + path,
        files={"file": ("x.png", png_bytes(), "image/png")},
        headers=headers,
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 200, response.text
    assert response.json()["predicted_class"] == "covid"


@pytest.mark.parametrize("path", ["/gradcam", "/grad_cam"])
def test_gateway_gradcam_routes(gateway: Gateway, path: str) -> None:
    response = requests.post(
        gateway.url + path,
        files={"file": ("x.png", png_bytes(), "image/png")},
        headers={"Authorization": f"Bearer {gateway.token()}", "Accept": "application/json"}
        if path == "/grad_cam"
        else {"Authorization": f"Bearer {gateway.token()}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.content == overlay_png()


@pytest.mark.parametrize("path", ["/history", "/history/"])
def test_gateway_history_routes(gateway: Gateway, path: str) -> None:
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    made = requests.post(
        gateway.url + "/predict",
        data=png_bytes(),
        headers={**headers, "Content-Type": "image/png"},
        timeout=10,
    ).json()
    listing = requests.get(gateway.url + path, headers=headers, timeout=10, allow_redirects=False)
    assert listing.status_code == 200
    assert listing.json()["records"][0]["id"] == made["id"]
    one = requests.get(f"{gateway.url}/history/{made['id']}", headers=headers, timeout=10)
    assert one.json() == made


def test_gateway_serves_the_openapi_document_and_docs(gateway: Gateway) -> None:
    as_yaml = requests.get(gateway.url + "/openapi.yaml", timeout=10)
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.text) == load_openapi()
    assert requests.get(gateway.url + "/openapi.json", timeout=10).json() == load_openapi()
    page = requests.get(gateway.url + "/docs", timeout=10)
    assert page.status_code == 200
    assert "swagger-ui-bundle.js" in page.text
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js"):
        assert requests.get(gateway.url + asset, timeout=10).status_code == 200
    ui = requests.get(gateway.url + "/docs/openapi-ui.json", timeout=10).json()
    assert ui["openapi"] == "3.0.3"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/docs/../../etc/passwd", 404),
        ("POST", "/openapi.yaml", 405),
        ("DELETE", "/auth/token", 405),
        ("GET", "/auth/nothing", 404),
    ],
)
def test_gateway_errors_are_json(gateway: Gateway, method: str, path: str, status: int) -> None:
    response = requests.request(method, gateway.url + path, timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert "error" in response.json()


def test_gateway_chunked_upload_over_the_cap_is_413(gateway: Gateway) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    try:
        response = requests.post(
            gateway.url + "/predict",
            data=chunks(),
            headers={"Authorization": f"Bearer {gateway.token()}", "Content-Type": "image/png"},
            timeout=30,
        )
    except requests.ConnectionError:
        pytest.fail("the gateway reset the connection instead of answering 413")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_gateway_refuses_to_start_with_a_missing_secret(
    tmp_path: Path, fake_serving: FakeTFServing
) -> None:
    env = gateway_environment(tmp_path, fake_serving)
    del env["SECRET_KEY"]
    result = subprocess.run(
        [sys.executable, "-m", "functions.gateway", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_gateway_self_signed_tls(tmp_path: Path, fake_serving: FakeTFServing) -> None:
    running = start_gateway(
        tmp_path, gateway_environment(tmp_path, fake_serving), "--self-signed", scheme="https"
    )
    running.verify = False
    try:
        response = requests.get(
            running.url + "/openapi.json",
            timeout=10,
            verify=running.verify,  # its own certificate, made at start
        )
        assert response.status_code == 200
        token = running.token()
        me = requests.get(
            running.url + "/user/me",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=running.verify,  # its own certificate, made at start
        )
        assert me.json()["id"] == 1  # the original's integer id
    finally:
        stop_gateway(running)


def test_gateway_werkzeug_server_option(tmp_path: Path, fake_serving: FakeTFServing) -> None:
    running = start_gateway(
        tmp_path, gateway_environment(tmp_path, fake_serving), "--server", "werkzeug"
    )
    try:
        assert requests.get(running.url + "/openapi.json", timeout=10).status_code == 200
        assert running.token("/token")
    finally:
        stop_gateway(running)


def test_function_runs_alone_under_the_functions_framework_cli(
    tmp_path: Path, fake_serving: FakeTFServing
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--source",
            str(ROOT / "functions" / "main.py"),
            "--target",
            "predict",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=gateway_environment(tmp_path, fake_serving),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    alone = Gateway(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                assert process.poll() is None
                time.sleep(0.1)
        unauthenticated = requests.post(
            alone.url + "/", data=png_bytes(), timeout=10, headers={"Content-Type": "image/png"}
        )
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"] == "authentication_required"
        assert requests.put(alone.url + "/", timeout=10).status_code == 405
    finally:
        stop_gateway(alone)


def test_function_under_the_functions_framework_cli_without_secret_key_refuses_to_start(
    tmp_path: Path, fake_serving: FakeTFServing
) -> None:
    env = gateway_environment(tmp_path, fake_serving)
    del env["SECRET_KEY"]
    env["ENVIRONMENT"] = "production"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--source",
            str(ROOT / "functions" / "main.py"),
            "--target",
            "predict",
            "--port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "SettingsError" in result.stderr
    assert "SECRET_KEY is required" in result.stderr


def test_gateway_serves_the_web_app_with_strict_headers(gateway: Gateway) -> None:
    page = requests.get(gateway.url + "/app/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    bare = requests.get(gateway.url + "/app", timeout=10, allow_redirects=False)
    assert (bare.status_code, bare.headers["Location"]) == (301, "/app/")
    for missing in ("/app/nothing.js", "/app/../main.py", "/app/%2e%2e/main.py"):
        assert requests.get(gateway.url + missing, timeout=10).status_code == 404
    assert requests.post(gateway.url + "/app/index.html", timeout=10).status_code == 405


def test_gateway_sends_browsers_to_the_app_and_api_clients_to_the_original_answer(
    gateway: Gateway,
) -> None:
    browser = requests.get(
        gateway.url + "/",
        headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
        timeout=10,
        allow_redirects=False,
    )
    assert (browser.status_code, browser.headers["Location"]) == (302, "/app/")
    for accept in ("application/json", "*/*", None):
        headers = {"Accept": accept} if accept else {}
        answer = requests.get(gateway.url + "/", headers=headers, timeout=10)
        assert answer.status_code == 200
        assert answer.json() == "The API is available."
