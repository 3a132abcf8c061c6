"""The web app's static server (functions/webapp.py): exact names only, strict headers, and the
`webapp` function a deployment runs without the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.webapp import SECURITY_HEADERS, STATIC_FOLDER, WebApp, static_files, wants_html
from tests.functions.conftest import Stack


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "app.js").write_text("export {};")
    (tmp_path / "notes.md").write_text("not served")
    (tmp_path / ".hidden.js").write_text("not served")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.js").write_text("not served")
    return tmp_path


def test_only_the_folders_own_files_of_known_types_are_served(folder: Path) -> None:
    assert set(static_files(folder)) == {"index.html", "app.js"}
    app = WebApp(folder)

    status, headers, body = app.answer("/app/", "GET")
    assert (status, body) == (200, b"<!doctype html><title>x</title>")
    assert dict(headers)["Content-Type"] == "text/html; charset=utf-8"
    assert app.answer("/app/app.js", "GET")[0] == 200
    for path in ("/app/notes.md", "/app/.hidden.js", "/app/sub/x.js", "/app/../app.js"):
        assert app.answer(path, "GET")[0] == 404, path
    assert app.answer("/app/app.js", "PUT")[0] == 405
    status, _, body = app.answer("/app/app.js", "HEAD")
    assert (status, body) == (200, b"")


def test_every_answer_carries_the_security_headers(folder: Path) -> None:
    app = WebApp(folder)
    for path, method in (("/app/", "GET"), ("/app/nothing", "GET"), ("/app/app.js", "POST")):
        headers = dict(app.answer(path, method)[1])
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        ("application/json, text/html;q=0.5", False),
    ],
)
def test_wants_html_only_for_browsers(accept: str, html: bool) -> None:
    assert wants_html({"HTTP_ACCEPT": accept}) is html


def test_the_webapp_function_serves_the_shipped_app(stack: Stack) -> None:
    client = stack.client("webapp")
    assert "index.html" in static_files(STATIC_FOLDER)

    for path in ("/", "/app/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert (
            page.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        )
    assert client.get("/nothing.css").status_code == 404
