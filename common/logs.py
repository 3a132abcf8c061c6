"""One JSON log line format for every deployable (functions, model sync, model server, training).

Every line is one JSON object whose first fields are always the same, in this order:

- `time`: UTC, ISO 8601 with milliseconds, `Z` suffix (`2026-12-07T10:15:00.123Z`);
- `level`: `debug`, `info`, `warning`, `error` or `critical`;
- `logger`: where it comes from (`functions.access`, `serving.sync`, `training_job`...);
- `event`: a stable snake_case name for machines (`request`, `version_installed`, `epoch`);
- `message`: a sentence for people (may be empty);

then the context's id (`request_id` in the functions, `run_id` in the training job) when there is
one, then the event's own fields, and `traceback` for an exception. Log collectors parse it
without rules, and one query (`event`, `request_id`, `run_id`) works across every deployable.
Standard library only.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "LINE_FIELDS",
    "JsonLineFormatter",
    "configure_json_logging",
    "format_line",
    "format_time",
    "json_safe",
    "log_event",
]

# The fields every line starts with, in this order.
LINE_FIELDS: tuple[str, ...] = ("time", "level", "logger", "event", "message")
# The event of a record logged without one (a plain `logger.warning(...)`, a library's line).
DEFAULT_EVENT = "log"

ContextProvider = Callable[[], Mapping[str, Any]]


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None (JSON has neither) and tuples as lists."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return json_safe(value.item())
    return value


def format_time(epoch_seconds: float) -> str:
    """`2026-12-07T10:15:00.123Z` for a POSIX time."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))
    return f"{whole}.{int((epoch_seconds % 1) * 1000):03d}Z"


def format_line(
    *,
    level: str,
    logger: str,
    event: str,
    message: str = "",
    fields: Mapping[str, Any] | None = None,
    epoch_seconds: float | None = None,
) -> str:
    """One log line (no newline). `fields` may not reuse the names in LINE_FIELDS."""
    record: dict[str, Any] = {
        "time": format_time(time.time() if epoch_seconds is None else epoch_seconds),
        "level": level.lower(),
        "logger": logger,
        "event": event,
        "message": message,
    }
    for name, value in (fields or {}).items():
        if name in record:
            raise ValueError(f"log field {name!r} would overwrite the line's own")
        record[name] = json_safe(value)
    return json.dumps(record, default=str, ensure_ascii=False)


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    message: str = "",
    **fields: Any,
) -> None:
    """Log `event` with a human `message` and structured `fields`."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"event": event, "event_fields": fields})


class JsonLineFormatter(logging.Formatter):
    """Formats a record as the one line format; `context` adds ids (a request's, a run's)."""

    def __init__(self, context: ContextProvider | None = None) -> None:
        super().__init__()
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if self._context is not None:
            fields.update(self._context())
        fields.update(getattr(record, "event_fields", None) or {})
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        return format_line(
            level=record.levelname,
            logger=record.name,
            event=getattr(record, "event", None) or DEFAULT_EVENT,
            message=record.getMessage(),
            fields=fields,
            epoch_seconds=record.created,
        )


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


_HANDLER_MARK = "_json_lines_handler"


def configure_json_logging(
    level: int | str | None = logging.INFO,
    *,
    logger_name: str = "",
    split_streams: bool = False,
    context: ContextProvider | None = None,
) -> None:
    """Route `logger_name` (default: the root logger) to JSON lines; idempotent.

    Lines go to stderr, or with `split_streams` below-warning lines to stdout and the rest to
    stderr (the functions: a platform that colours stderr red shows only problems red). A named
    logger stops propagating, so its lines are not printed twice. `level` None leaves the
    logger's level as it is (INFO when unset).
    """
    target = logging.getLogger(logger_name or None)
    if level is not None:
        target.setLevel(level)
    elif target.level == logging.NOTSET:
        target.setLevel(logging.INFO)
    for handler in list(target.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            target.removeHandler(handler)
    formatter = JsonLineFormatter(context)
    handlers: list[logging.Handler] = []
    if split_streams:
        below = _CurrentStreamHandler("stdout")
        below.addFilter(_BelowWarning())
        problems = _CurrentStreamHandler("stderr")
        problems.setLevel(logging.WARNING)
        handlers = [below, problems]
    else:
        handlers = [_CurrentStreamHandler("stderr")]
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        target.addHandler(handler)
    if logger_name:
        target.propagate = False
