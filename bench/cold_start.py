"""Cold start: from process start to the first answered request.

The clock starts just before the process is spawned and stops when the first real request (a
prediction with a bearer token and an image) is answered 200. The request is retried every few
milliseconds while the port refuses connections; the time the port first accepted one is kept
too, to tell start-up (imports, app creation) from the first request's own cost (lazy clients,
the users file, the model call).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bench.loadgen import HttpRequest
from bench.stack import ServerHandle
from bench.stats import over_repetitions

__all__ = ["first_answer", "measure_cold_starts"]

_POLL_SECONDS = 0.005


def first_answer(handle: ServerHandle, request: HttpRequest, timeout: float) -> dict[str, float]:
    """Seconds from spawn to the port accepting and to the first 200 answer to `request`."""
    parts = urlsplit(handle.url)
    deadline = handle.started_at + timeout
    accepted: float | None = None
    while time.perf_counter() < deadline:
        if not handle.process.alive():
            raise RuntimeError(f"{handle.process.name} exited:\n{handle.process.log_tail()}")
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
        try:
            connection.request(
                request.method, request.path, body=request.body, headers=dict(request.headers)
            )
            if accepted is None:
                accepted = time.perf_counter()
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                answered = time.perf_counter()
                return {
                    "first_answer_seconds": answered - handle.started_at,
                    "port_open_seconds": accepted - handle.started_at,
                }
            if response.status not in (502, 503, 504):
                raise RuntimeError(f"{handle.process.name} answered {response.status}")
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            pass
        finally:
            connection.close()
        time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"{handle.process.name} did not answer within {timeout:.0f} s")


def measure_cold_starts(
    start: Callable[[int], ServerHandle],
    request: HttpRequest,
    count: int,
    *,
    timeout: float = 120.0,
    keep_last: bool = False,
) -> tuple[dict[str, Any], ServerHandle | None]:
    """`count` cold starts one after another; returns the figures (and the last process if
    `keep_last`, for measurements that follow)."""
    runs: list[dict[str, float]] = []
    kept: ServerHandle | None = None
    for attempt in range(count):
        handle = start(attempt)
        try:
            runs.append(first_answer(handle, request, timeout))
        finally:
            if keep_last and attempt == count - 1:
                kept = handle
            else:
                handle.stop()
        print(
            f"[bench]   cold start {handle.process.name}: {runs[-1]['first_answer_seconds']:.2f} s",
            flush=True,
        )
    return {"runs": runs, "stats": over_repetitions(runs)}, kept
