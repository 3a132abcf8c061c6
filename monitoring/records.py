"""Inference records of a time window, across all users, and the fields the reports read.

Records are keyed `output/inference/<user>/<day>/<time>-<id>.json`, newest first per user
(`storage.keys`). The users are walked one key at a time (`keys.inference_users_after` jumps
past a user's records without reading them), then each user's window is one contiguous run of
keys (`keys.inference_window`); only the records inside the window are read. The original
system's `history.csv` and migrated records (model `legacy`) are skipped: they say nothing
about a model being served.

The fields are read defensively: records written before routing, shadow answers or image
statistics existed lack them, and each accessor says None (or the default) for those.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from functions.records import LEGACY_MODEL
from storage import ObjectNotFound, Store, keys

__all__ = [
    "CANARY",
    "REFER",
    "REFUSED",
    "STABLE",
    "RecordSet",
    "confidence",
    "decision",
    "list_users",
    "model_version",
    "number",
    "read_records",
    "routed_to",
]

STABLE = "stable"
CANARY = "canary"
# Decisions other than a class: an uncertain answer, and an image refused as not a chest film.
REFER = "refer"
REFUSED = "not_a_chest_xray"
_READ_THREADS = 8


@dataclass
class RecordSet:
    """The records of a window and what was left out (reason -> count)."""

    start: datetime
    stop: datetime
    records: list[dict[str, Any]] = field(default_factory=list)
    users: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def list_users(store: Store) -> Iterator[str]:
    """Every user with records, in key order, one listed key per user."""
    start_after: str | None = None
    while True:
        listing = store.list(keys.INFERENCE_AREA, start_after=start_after, page_size=1)
        first = next(iter(listing), None)
        if first is None:
            return
        user = keys.inference_user_from_key(first.key)
        if user is None:  # history.csv, or a key outside any user's folder: step over it
            start_after = first.key
            continue
        yield user
        start_after = keys.inference_users_after(user)


def _window_keys(store: Store, user: str, start: datetime, stop: datetime) -> list[str]:
    window = keys.inference_window(user, start, stop)
    found = []
    for info in store.list(window.prefix, start_after=window.start_after):
        if info.key >= window.end_before:
            break
        if info.key.endswith(".json"):
            found.append(info.key)
    return found


def _read(store: Store, key: str) -> dict[str, Any] | None:
    try:
        document = json.loads(store.get_bytes(key))
    except (ObjectNotFound, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_records(
    store: Store, start: datetime, stop: datetime, *, model_name: str | None = None
) -> RecordSet:
    """Every record with `start <= time <= stop` of every user (of `model_name` when given)."""
    start, stop = start.astimezone(UTC), stop.astimezone(UTC)
    found = RecordSet(start=start, stop=stop)
    record_keys: list[str] = []
    for user in list_users(store):
        user_keys = _window_keys(store, user, start, stop)
        found.users += bool(user_keys)
        record_keys.extend(user_keys)
    with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="records") as pool:
        documents = list(pool.map(lambda key: _read(store, key), record_keys))
    for document in documents:
        if document is None:
            found.skipped["unreadable"] += 1
            continue
        model = document.get("model")
        name = model.get("name") if isinstance(model, Mapping) else None
        if name == LEGACY_MODEL["name"] or "migrated" in document:
            found.skipped["legacy"] += 1
        elif model_name is not None and name != model_name:
            found.skipped["other_model"] += 1
        else:
            found.records.append(document)
    found.records.sort(key=lambda record: str(record.get("created_at", "")))
    return found


# -- fields ---------------------------------------------------------------------------------------


def number(document: Any, *path: str) -> float | None:
    """The number at `path` inside nested objects, or None (booleans are not numbers)."""
    for name in path:
        if not isinstance(document, Mapping):
            return None
        document = document.get(name)
    if isinstance(document, int | float) and not isinstance(document, bool):
        return float(document)
    return None


def model_version(record: Mapping[str, Any]) -> int | None:
    value = number(record, "model", "version")
    return int(value) if value is not None else None


def routed_to(record: Mapping[str, Any]) -> str:
    """Which label answered the caller (records from before routing: stable)."""
    return CANARY if record.get("routed_to") == CANARY else STABLE


def decision(record: Mapping[str, Any]) -> str:
    """The record's decision: a class, `refer` or `not_a_chest_xray` (older: the class)."""
    return str(record.get("decision") or record.get("predicted_class") or "")


def confidence(answer: Mapping[str, Any]) -> float | None:
    """The answer's confidence: as decided on, else its top probability."""
    value = number(answer, "abstention", "confidence")
    if value is None:
        value = number(answer, "confidence")
    if value is None:
        probabilities = answer.get("probabilities")
        if isinstance(probabilities, Mapping):
            numbers = [number(probabilities, name) for name in probabilities]
            known = [p for p in numbers if p is not None]
            value = max(known) if known else None
    return value
