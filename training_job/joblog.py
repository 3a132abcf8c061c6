"""The job's log: the project's one JSON line format (`common.logs`), with the run id on every line.

Each lifecycle step (started, data discovered, cached, trained epoch by epoch, evaluated,
decided, published, finished or failed) is one line on stdout, kept in memory for the run's
`job.log`, so a log pipeline or a person reading `kubectl logs` can follow a run and parse it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from common.logs import LINE_FIELDS, format_line

__all__ = ["LOGGER_NAME", "JobLog"]

LOGGER_NAME = "training_job"
_RESERVED = frozenset({*LINE_FIELDS, "run_id"})


class JobLog:
    """Writes events as JSON lines to `stream` and keeps them for the run's log file."""

    def __init__(
        self,
        run_id: str,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_id = run_id
        self._stream = stream if stream is not None else sys.stdout
        self._clock = clock
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def event(
        self, event: str, level: str = "info", message: str = "", **fields: Any
    ) -> dict[str, Any]:
        """Write one event; `fields` must not reuse the names every line carries."""
        clashes = _RESERVED.intersection(fields)
        if clashes:
            raise ValueError(f"log fields {sorted(clashes)} would overwrite the line's own")
        line = format_line(
            level=level,
            logger=LOGGER_NAME,
            event=event,
            message=message,
            fields={"run_id": self.run_id, **fields},
            epoch_seconds=self._clock(),
        )
        with self._lock:
            self._lines.append(line)
            self._stream.write(line + "\n")
            self._stream.flush()
        record: dict[str, Any] = json.loads(line)
        return record

    def text(self) -> str:
        with self._lock:
            return "".join(line + "\n" for line in self._lines)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(line) for line in self._lines]
