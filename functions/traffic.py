"""Which model answers a caller: the `stable` label, or the `canary` label for a share of users;
and, in shadow mode, the canary asked the same question on the side.

Canary traffic (`CANARY_PERCENT`): a user is in the canary share when a stable hash of their id
falls below the share. The hash is the same in every process and every restart, so one user sees
one model, and raising the share only adds users (nobody switches back and forth). The canary
label is served by the same model server (TF Serving's version labels), so routing is only a
different URL.

Shadow mode (`SHADOW=canary`): every caller gets the stable answer; the canary's answer to the
same image is asked for at the same time and recorded beside it (`shadow` in the record). The
answer waits for the shadow at most `SHADOW_BUDGET_MS` after the stable answer is ready; a later
shadow is recorded as `late` and its result dropped. Shadow calls have their own pool of threads
and their own circuit breaker: a slow or broken canary never takes a worker or a breaker slot
from the stable traffic; when the pool is busy the shadow is `skipped`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["CANARY_LABEL", "STABLE_LABEL", "TrafficSettings", "canary_bucket", "in_canary"]

STABLE_LABEL = "stable"
CANARY_LABEL = "canary"
# Buckets of the user hash: a share is honoured to 1/100 of a percent.
_BUCKETS = 10_000


@dataclass(frozen=True)
class TrafficSettings:
    # Percent of users (0..100) whose requests the canary answers.
    canary_percent: float = 0.0
    # "canary": ask the canary the same question on the side and record its answer.
    shadow: str | None = None
    # How long the answer may wait for the shadow once the stable answer is ready.
    shadow_budget_ms: float = 200.0
    # Shadow calls in flight per process at most (each holds a thread): beyond, `skipped`.
    shadow_max_in_flight: int = 8

    @property
    def uses_canary(self) -> bool:
        return self.canary_percent > 0 or self.shadow == CANARY_LABEL


def canary_bucket(user_id: str) -> int:
    """The user's bucket in [0, 10,000): SHA-256 of the id, the same everywhere, always."""
    digest = hashlib.sha256(b"xray-canary\x00" + user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def in_canary(user_id: str, percent: float) -> bool:
    """Whether the canary answers this user at this share (monotone in `percent`)."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    return canary_bucket(user_id) < round(percent * _BUCKETS / 100)
