"""The web app's static files (`functions/webapp_static/`), served with strict security headers.

A single page (plain HTML, CSS and JavaScript modules, no build step and nothing from the
network) that talks only to the public API. The gateway serves it at `/app/`; in a deployment
the `webapp` function (functions/main.py) serves the same files, or they are copied to a bucket
behind the same headers (infra/README.md).

Only the files in the folder are served, by exact name (no directory walking, no index
listing); anything else is 404. Every answer carries a Content-Security-Policy that allows
scripts, styles and connections to the page's own origin only (no inline script), images from
the origin and from `blob:` (the Grad-CAM overlays the page fetches with its token), and
forbids framing; `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
`Cache-Control: no-cache` (revalidated, so a new release shows at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

__all__ = ["APP_PREFIX", "SECURITY_HEADERS", "STATIC_FOLDER", "WebApp", "static_files"]

APP_PREFIX = "/app"
STATIC_FOLDER = Path(__file__).with_name("webapp_static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def static_files(folder: Path = STATIC_FOLDER) -> dict[str, Path]:
    """URL name -> file, for every servable file directly in `folder`."""
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in _TYPES and not path.name.startswith(".")
    }


class WebApp:
    """The files under `prefix` (`/app/` -> index.html), as a WSGI app or answers."""

    def __init__(self, folder: Path = STATIC_FOLDER, prefix: str = APP_PREFIX) -> None:
        self._files = static_files(folder)
        self._prefix = prefix

    def answer(self, path: str, method: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for a request of `path` (the prefix included or not)."""
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        if path == "" and self._prefix:
            return (
                301,
                [("Location", f"{self._prefix}/"), ("Content-Length", "0"), *_headers()],
                b"",
            )
        name = path.lstrip("/") or "index.html"
        file = self._files.get(name) if "/" not in name else None
        if file is None:
            return 404, _plain(b"not found"), b"not found"
        if method not in ("GET", "HEAD"):
            return (
                405,
                [*_plain(b"method not allowed"), ("Allow", "GET, HEAD")],
                b"method not allowed",
            )
        body = file.read_bytes()
        headers = [
            ("Content-Type", _TYPES[file.suffix]),
            ("Content-Length", str(len(body))),
            *_headers(),
        ]
        return 200, headers, b"" if method == "HEAD" else body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        status, headers, body = self.answer(
            environ.get("PATH_INFO", "") or "/", environ.get("REQUEST_METHOD", "GET")
        )
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body]


def _headers() -> list[tuple[str, str]]:
    return list(SECURITY_HEADERS.items())


def _plain(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *_headers(),
    ]


def wants_html(environ: dict[str, Any]) -> bool:
    """A browser navigating (its Accept prefers text/html), not an API client."""
    accept = environ.get("HTTP_ACCEPT", "")
    if "text/html" not in accept:
        return False
    from werkzeug.datastructures import MIMEAccept
    from werkzeug.http import parse_accept_header

    parsed = parse_accept_header(accept, MIMEAccept)
    return parsed.best_match(["application/json", "text/html"]) == "text/html"
