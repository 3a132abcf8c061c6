"""The API description: `openapi.yaml` (OpenAPI 3.1), its JSON twin, and Swagger UI without network.

Swagger UI comes from the `swagger_ui_bundle` package (4.15, which renders OpenAPI 3.0 only), so
the page loads a 3.0 rendition of the same document (`openapi_for_swagger_ui`): the version
string changes, `type: [X, "null"]` becomes `nullable`, and 3.1-only keywords are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

__all__ = ["OPENAPI_PATH", "DocsApp", "load_openapi", "openapi_for_swagger_ui"]

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
_SWAGGER_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
_ASSET_TYPES = {".css": "text/css", ".js": "application/javascript", ".png": "image/png"}
_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Chest X-ray classification API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
# A file of its own rather than an inline script, so a strict Content-Security-Policy holds.
_INIT_SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/docs/openapi-ui.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' "
    "'unsafe-inline'; frame-ancestors 'none'",
}


@cache
def load_openapi() -> dict[str, Any]:
    import yaml  # on first use: only the docs routes read it (cold start)

    document = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def openapi_for_swagger_ui(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0.3 rendition of a 3.1 document, for Swagger UI 4."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            result = {key: convert(value) for key, value in node.items()}
            kind = result.get("type")
            if isinstance(kind, list):
                others = [name for name in kind if name != "null"]
                result["type"] = others[0] if len(others) == 1 else others
                if "null" in kind:
                    result["nullable"] = True
            if "const" in result:
                result["enum"] = [result.pop("const")]
            for keyword in ("contentEncoding", "contentMediaType"):
                result.pop(keyword, None)
            return result
        if isinstance(node, list):
            return [convert(item) for item in node]
        return node

    converted: dict[str, Any] = convert(document)  # new containers all the way down
    converted["openapi"] = "3.0.3"
    converted.get("info", {}).pop("summary", None)
    converted.get("info", {}).get("license", {}).pop("identifier", None)
    return converted


@cache
def _bodies() -> dict[str, bytes]:
    """The three renditions of the document, built once per process."""
    document = load_openapi()
    return {
        "yaml": OPENAPI_PATH.read_bytes(),
        "json": json.dumps(document).encode("utf-8"),
        "ui": json.dumps(openapi_for_swagger_ui(document)).encode("utf-8"),
    }


class DocsApp:
    """WSGI app for `/openapi.yaml`, `/openapi.json`, `/docs` (and `/redoc`, which leads
    there) and the Swagger UI assets."""

    def __init__(self) -> None:
        self._routes = {
            "/openapi.yaml": self._yaml,
            "/openapi.json": self._json,
            "/docs": self._page,
            "/docs/": self._page,
            "/docs/init.js": self._init,
            "/docs/openapi-ui.json": self._ui_json,
            # The original (FastAPI) also served ReDoc; one documentation page is kept.
            "/redoc": self._redoc,
        }

    @cached_property
    def _assets(self) -> Path:
        import swagger_ui_bundle  # on first use: only the docs pages need it (cold start)

        return Path(swagger_ui_bundle.swagger_ui_path)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self._respond(request)
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        handler = self._routes.get(path)
        asset = path.removeprefix("/docs/") if path.startswith("/docs/") else None
        if handler is None and asset not in _SWAGGER_ASSETS:
            return _error(404, "not_found", "no such path")
        if request.method not in ("GET", "HEAD"):
            response = _error(405, "method_not_allowed", "method not allowed on this resource")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if handler is None:
            assert asset is not None
            return self._asset(asset)
        return handler()

    def _yaml(self) -> Response:
        return _ok(_bodies()["yaml"], "application/yaml")

    def _json(self) -> Response:
        return _ok(_bodies()["json"], "application/json")

    def _ui_json(self) -> Response:
        return _ok(_bodies()["ui"], "application/json")

    def _page(self) -> Response:
        return _ok(_DOCS_PAGE.encode("utf-8"), "text/html; charset=utf-8")

    def _init(self) -> Response:
        return _ok(_INIT_SCRIPT.encode("utf-8"), "application/javascript")

    def _redoc(self) -> Response:
        response = Response(status=307, headers={"Location": "/docs"})
        response.headers.update(_SECURITY_HEADERS)
        return response

    def _asset(self, name: str) -> Response:
        path = self._assets / name
        return _ok(path.read_bytes(), _ASSET_TYPES[path.suffix], cache=True)


def _ok(data: bytes, content_type: str, *, cache: bool = False) -> Response:
    response = Response(data, status=200, content_type=content_type)
    response.headers.update(_SECURITY_HEADERS)
    response.headers["Cache-Control"] = "public, max-age=3600" if cache else "no-cache"
    return response


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": code, "message": message}).encode("utf-8")
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(_SECURITY_HEADERS)
    return response
