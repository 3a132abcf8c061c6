"""JSON log lines for the functions: one object per line, to stdout (and stderr for warnings).

Every record under the `functions` logger is written as JSON with its message, level, logger and
any fields passed with `extra={"fields": {...}}`; an exception's traceback goes into `traceback`.
Tokens, passwords and image bytes are never passed here (the callers only log ids and numbers).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "configure_logging"]

ACCESS_LOGGER = "functions.access"
_HANDLER_MARK = "_functions_json_handler"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _CurrentStreamHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout`/`sys.stderr` is at emit time (test capture swaps them)."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self._stream_name = stream_name

    @property
    def stream(self) -> Any:
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: Any) -> None:
        del value  # the stream is always looked up


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def configure_logging(level: str | None = None) -> None:
    """Attach JSON handlers to the `functions` logger once per process (idempotent); set its
    level when one is given (the runtime's LOG_LEVEL), else leave the level as it is."""
    root = logging.getLogger("functions")
    if level is not None:
        root.setLevel(level)
    elif root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if any(getattr(handler, _HANDLER_MARK, False) for handler in root.handlers):
        return
    formatter = JsonFormatter()
    info = _CurrentStreamHandler("stdout")
    info.addFilter(_BelowWarning())
    problems = _CurrentStreamHandler("stderr")
    problems.setLevel(logging.WARNING)
    for handler in (info, problems):
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    # The JSON lines are complete; do not repeat them through the root logger's handlers.
    root.propagate = False
