"""Read-modify-write of one shared object, safe under concurrent writers (DESIGN decision 5).

`update_object` reads the object with its version tag (or finds it absent), applies a change,
and writes the result conditionally: create-only when it was absent, replace-if-unchanged
otherwise. A writer that lost the race re-reads and re-applies its change after a jittered
backoff, a bounded number of times. The users file and the model registry both change this way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from storage.base import ObjectNotFound, PreconditionFailed, StorageError, Store

__all__ = ["UpdateConflict", "update_object"]

T = TypeVar("T")


class UpdateConflict(StorageError):
    """Every attempt of a conditional update lost to a concurrent writer."""


def update_object(
    store: Store,
    key: str,
    change: Callable[[T], T],
    *,
    parse: Callable[[bytes], T],
    serialize: Callable[[T], bytes],
    initial: Callable[[], T],
    content_type: str | None = None,
    attempts: int = 8,
    backoff_seconds: float = 0.02,
    max_backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Apply `change` to the object at `key` with a compare-and-swap loop; returns what is stored.

    `change` receives the parsed object (`initial()` when there is none) and returns the new
    value, or the very same object to write nothing. It may raise to refuse: nothing is written
    and the error propagates (so may `parse`'s). After `attempts` lost races, UpdateConflict.
    """
    attempts = max(1, attempts)
    for attempt in range(attempts):
        try:
            stored = store.get(key)
        except ObjectNotFound:
            current, etag = initial(), None
        else:
            current, etag = parse(stored.data), stored.etag
        updated = change(current)
        if updated is current:
            return current
        data = serialize(updated)
        try:
            if etag is None:
                store.put(key, data, content_type=content_type, if_none_match=True)
            else:
                store.put(key, data, content_type=content_type, if_match=etag)
        except PreconditionFailed:
            if attempt + 1 < attempts:
                # Full jitter spreads the retrying writers apart; not security relevant.
                ceiling = min(max_backoff_seconds, backoff_seconds * 2**attempt)
                sleep(random.uniform(0, ceiling))  # noqa: S311
            continue
        return updated
    raise UpdateConflict(f"{key} changed during each of {attempts} attempts")
