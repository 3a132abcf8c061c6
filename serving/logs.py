"""One JSON object per log line, for the sync sidecar and the local model server.

`log_event(logger, "version_installed", model=..., version=...)` records an action with its
fields; `configure_json_logging()` (called by a CLI's `main` only) makes the root handler print
each record as a single JSON line on stderr, which log collectors parse without rules.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonLogFormatter", "configure_json_logging", "log_event"]


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with structured `fields` (kept apart from the message for the formatter)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event_fields": fields})


class JsonLogFormatter(logging.Formatter):
    """`{"time": ..., "level": ..., "logger": ..., "event": ..., <fields>}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        document.update(getattr(record, "event_fields", {}))
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def configure_json_logging(level: int | str = logging.INFO) -> None:
    """Route every logger to one stderr handler printing JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_json_lines", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    handler._json_lines = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
