"""Checks a function's real answer against the OpenAPI document: status, content type, headers
and (for JSON) the body's schema."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from functions.docs import load_openapi

__all__ = ["check_response"]

_DOC_URI = "urn:xray-openapi"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Follow a local `$ref` once; returns the node and its JSON pointer parts."""
    parts = node["$ref"].removeprefix("#/").split("/")
    target: Any = document
    for part in parts:
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target, parts


def check_response(path: str, method: str, response: Any) -> None:
    """Assert the status, the content type and (for JSON) the body are what the document says."""
    document = load_openapi()
    operation = document["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} -> {status} undocumented"
    described = operation["responses"][status]
    pointer = ["paths", path, method, "responses", status]
    if "$ref" in described:
        described, pointer = _resolve(document, described)
    content_type = response.mimetype
    assert content_type in described["content"], f"{content_type} undocumented for {status}"
    for header in described.get("headers", {}):
        if header not in ("Retry-After",) or response.status_code == 503:
            assert header in response.headers, f"{header} missing on {status}"
    if content_type != "application/json":
        return
    location = "/".join(_escape(part) for part in [*pointer, "content", content_type, "schema"])
    registry = Registry().with_resource(
        _DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    validator = Draft202012Validator({"$ref": f"{_DOC_URI}#/{location}"}, registry=registry)
    errors = sorted(validator.iter_errors(response.get_json()), key=str)
    assert not errors, f"{method.upper()} {path} {status}: {errors[0].message}"
