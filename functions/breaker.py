"""Fail fast when the model server is down: a circuit breaker and a bulkhead, per endpoint.

`CircuitBreaker` watches the outcome of every call to one model endpoint. It opens after
`failures` consecutive failures, or when at least `failure_rate` of the last `window` calls
failed (once `min_calls` are in the window). While open, calls are refused at once, with zero
upstream traffic, and told when to come back (`retry_after`). After the cool-down one probe call
at a time is let through (half-open): a success closes the breaker, a failure opens it again
for twice as long (up to `max_open_seconds`). Every transition is a log line (`circuit_open`,
`circuit_half_open`, `circuit_closed`) and is counted in `stats()`.

`Bulkhead` bounds the calls in flight per process, so a hanging model server holds at most that
many request threads; one more call is refused at once instead of queueing behind them.

What counts as a failure is the caller's choice (`functions.serving_client`): the server
unreachable, unavailable, timing out or answering with a server error. A request the model
server refuses because of the request itself (a 400 about the image) proves the server alive.
Pure Python, thread-safe, with an injectable clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from common.logs import log_event
from functions import metrics

__all__ = [
    "BreakerSettings",
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpen",
    "Permit",
]

logger = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerSettings:
    """When the breaker opens and for how long; how many calls may be in flight."""

    failures: int = 5  # consecutive failures that open the breaker
    failure_rate: float = 0.5  # ... or this share of the last `window` calls
    window: int = 20
    min_calls: int = 10  # the rate is judged only over at least this many calls
    open_seconds: float = 5.0  # the first cool-down; doubled on each failed probe
    max_open_seconds: float = 60.0
    max_in_flight: int = 16  # calls to the model server at once, per process


class CircuitOpen(Exception):
    """The breaker refuses the call; retry after `retry_after` seconds (at least 1)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit open; retry after {retry_after} s")
        self.retry_after = retry_after


class BulkheadFull(Exception):
    """As many calls as allowed are in flight already."""


class Permit:
    """One admitted call: report its outcome exactly once (`success` or `failure`)."""

    __slots__ = ("_breaker", "_done", "probe")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self.probe = probe
        self._done = False

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._record(self, ok=True)

    def failure(self, reason: str = "") -> None:
        if not self._done:
            self._done = True
            self._breaker._record(self, ok=False, reason=reason)

    def release(self) -> None:
        """The call ended without telling anything about the server's health (e.g. the
        caller's own error before sending): frees a half-open probe slot, counts nothing."""
        if not self._done:
            self._done = True
            self._breaker._release(self)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=self._settings.window)
        self._open_until = 0.0
        self._open_seconds = self._settings.open_seconds
        self._probe_in_flight = False
        self._transitions: dict[str, int] = {}
        self._rejected = 0
        metrics.breaker_state(name, "closed")  # `xray_model_breaker_state`

    @property
    def state(self) -> State:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def allow(self) -> Permit:
        """A permit for one call, or CircuitOpen when the breaker refuses it."""
        with self._lock:
            self._maybe_half_open()
            if self._state == "closed":
                return Permit(self, probe=False)
            if self._state == "half_open" and not self._probe_in_flight:
                self._probe_in_flight = True
                return Permit(self, probe=True)
            self._rejected += 1
            raise CircuitOpen(self._retry_after())

    def retry_after(self) -> int:
        """Seconds until the breaker lets a call through again (1 when it is closed)."""
        with self._lock:
            return self._retry_after()

    def stats(self) -> dict[str, Any]:
        """State, counters and transitions, for logs, health answers and tests."""
        with self._lock:
            self._maybe_half_open()
            failures = sum(1 for ok in self._outcomes if not ok)
            return {
                "name": self.name,
                "state": self._state,
                "consecutive_failures": self._consecutive,
                "window_calls": len(self._outcomes),
                "window_failures": failures,
                "rejected": self._rejected,
                "transitions": dict(self._transitions),
                "open_seconds": self._open_seconds,
            }

    # -- internals (the lock is held) ------------------------------------------------------------

    def _retry_after(self) -> int:
        if self._state == "closed":
            return 1
        return max(1, math.ceil(self._open_until - self._clock()))

    def _maybe_half_open(self) -> None:
        if self._state == "open" and self._clock() >= self._open_until:
            self._move("half_open", "cool-down over: one probe call at a time")

    def _move(self, state: State, reason: str) -> None:
        before, self._state = self._state, state
        key = f"{before}->{state}"
        metrics.breaker_state(self.name, state)
        self._transitions[key] = self._transitions.get(key, 0) + 1
        level = logging.WARNING if state == "open" else logging.INFO
        log_event(
            logger,
            f"circuit_{state}",
            level,
            f"model endpoint {self.name}: circuit {before} -> {state} ({reason})",
            endpoint=self.name,
            previous=before,
            reason=reason,
            retry_after=self._retry_after() if state == "open" else None,
        )

    def _open(self, reason: str) -> None:
        self._open_until = self._clock() + self._open_seconds
        self._move("open", reason)
        self._outcomes.clear()
        self._consecutive = 0

    def _record(self, permit: Permit, *, ok: bool, reason: str = "") -> None:
        settings = self._settings
        with self._lock:
            if permit.probe:
                self._probe_in_flight = False
                if ok:
                    self._open_seconds = settings.open_seconds
                    self._outcomes.clear()
                    self._consecutive = 0
                    self._move("closed", "the probe call succeeded")
                else:
                    self._open_seconds = min(settings.max_open_seconds, self._open_seconds * 2)
                    self._open(f"the probe call failed: {reason}" if reason else "probe failed")
                return
            if self._state != "closed":
                # A call admitted before the breaker opened ends now: it changes nothing.
                return
            self._outcomes.append(ok)
            if ok:
                self._consecutive = 0
                return
            self._consecutive += 1
            failed = sum(1 for each in self._outcomes if not each)
            if self._consecutive >= settings.failures:
                self._open(f"{self._consecutive} consecutive failures, the last: {reason}")
            elif (
                len(self._outcomes) >= settings.min_calls
                and failed / len(self._outcomes) >= settings.failure_rate
            ):
                self._open(f"{failed} of the last {len(self._outcomes)} calls failed")

    def _release(self, permit: Permit) -> None:
        with self._lock:
            if permit.probe:
                self._probe_in_flight = False


class Bulkhead:
    """At most `limit` calls in flight; one more is refused at once (`BulkheadFull`)."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rejected = 0

    def __enter__(self) -> Bulkhead:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self._rejected += 1
            raise BulkheadFull(f"{self.limit} calls to {self.name} are in flight")
        with self._lock:
            self._in_flight += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"limit": self.limit, "in_flight": self._in_flight, "rejected": self._rejected}
