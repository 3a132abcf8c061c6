"""The job's log: one JSON object per line on stdout, kept in memory for the run's `job.log`.

Each lifecycle step (started, data discovered, cached, trained epoch by epoch, evaluated,
decided, published, finished or failed) is one line with the run id, so a log pipeline or a
person reading `kubectl logs` can follow a run and parse it.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JobLog", "json_safe"]


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


_RESERVED = frozenset({"time", "level", "event", "run_id"})


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JobLog:
    """Writes events as JSON lines to `stream` and keeps them for the run's log file."""

    def __init__(
        self,
        run_id: str,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], str] = _utc_now,
    ) -> None:
        self.run_id = run_id
        self._stream = stream if stream is not None else sys.stdout
        self._clock = clock
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def event(self, event: str, level: str = "info", **fields: Any) -> dict[str, Any]:
        """Write one event; `fields` must not reuse the names every line carries."""
        clashes = _RESERVED.intersection(fields)
        if clashes:
            raise ValueError(f"log fields {sorted(clashes)} would overwrite the line's own")
        record = {"time": self._clock(), "level": level, "event": event, "run_id": self.run_id}
        record.update(json_safe(fields))
        line = json.dumps(record, sort_keys=False, ensure_ascii=False, default=str)
        with self._lock:
            self._lines.append(line)
            self._stream.write(line + "\n")
            self._stream.flush()
        return record

    def text(self) -> str:
        with self._lock:
            return "".join(line + "\n" for line in self._lines)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(line) for line in self._lines]
