"""The functions' logging: the project's one JSON line format (`common.logs`), with the request id.

Every record under the `functions` logger is one JSON line (below warning on stdout, warnings and
errors on stderr) carrying the request's `request_id` when it is logged while a request is
handled. Tokens, passwords and image bytes are never passed here (callers log ids and numbers).
"""

from __future__ import annotations

from typing import Any

import flask

from common.logs import configure_json_logging

__all__ = ["ACCESS_LOGGER", "configure_logging"]

ACCESS_LOGGER = "functions.access"


def _request_context() -> dict[str, Any]:
    if flask.has_request_context():
        request_id = flask.g.get("request_id")
        if request_id:
            return {"request_id": request_id}
    return {}


def configure_logging(level: str | None = None) -> None:
    """JSON lines for the `functions` logger (idempotent); its level set when one is given
    (the runtime's LOG_LEVEL), else left as it is."""
    configure_json_logging(
        level, logger_name="functions", split_streams=True, context=_request_context
    )
