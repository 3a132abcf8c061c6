"""History: latency of a one-day-window query as the store grows from 1k to 100k records.

Records are seeded straight into the store, one object per inference at
`keys.inference_record(user, id)` with the record schema of docs/CONTRACTS.md: the queried day
always holds the same 50 records of the queried user, and every other record falls on another
day within a year either side (80 % the same user, the rest nine other users). So only the
store's size changes between measurements, never the answer. The query goes through the gateway
(`GET /history?user=...&start_time=...&stop_time=...`, as an admin), one client.

Local store: records written through `LocalStore` without fsync (seeding speed; reads are the
same). moto: its in-process server (`ThreadedMotoServer`) serves the gateway over HTTP, and the
records are put into its S3 backend directly, because 100k PUTs over HTTP would eat the
benchmark's time budget; the objects are the same either way.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bench.loadgen import HttpRequest, http_client_factory
from bench.measure import Plan, load_series

__all__ = [
    "HISTORY_USER",
    "WINDOW_RECORDS",
    "history_request",
    "measure_history",
    "record_items",
]

HISTORY_USER = "history-user"
WINDOW_RECORDS = 50
WINDOW_DAY = datetime(2026, 6, 15, tzinfo=UTC)
_OTHER_USERS = tuple(f"history-other-{index}" for index in range(1, 10))
_CLASSES = ("normal", "covid", "no-covid")

# (key, bytes) of one record.
Item = tuple[str, bytes]


def _record(user_id: str, moment: datetime, rng: random.Random) -> Item:
    from storage import keys

    inference_id = keys.new_inference_id(moment, f"{rng.getrandbits(128):032x}")
    weights = [rng.random() for _ in _CLASSES]
    total = sum(weights)
    probabilities = {
        name: round(weight / total, 6) for name, weight in zip(_CLASSES, weights, strict=True)
    }
    predicted = max(probabilities, key=lambda name: probabilities[name])
    record = {
        "schema": 1,
        "id": inference_id,
        "kind": "predict",
        "user_id": user_id,
        "created_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "model": {"name": "cnn_vit", "version": 1, "run_id": "bench-seed"},
        "predicted_class": predicted,
        "class_index": _CLASSES.index(predicted),
        "class_names": list(_CLASSES),
        "probabilities": probabilities,
        "input": {
            "sha256": f"{rng.getrandbits(256):064x}",
            "size_bytes": rng.randint(40_000, 90_000),
            "width": 256,
            "height": 256,
            "pixels": 65536,
            "format": "PNG",
            "mode": "L",
            "transformation": None,
        },
        "latency_ms": {
            "model": round(rng.uniform(10, 30), 3),
            "total": round(rng.uniform(15, 40), 3),
        },
    }
    data = json.dumps(record, indent=2, sort_keys=True).encode("utf-8")
    return keys.inference_record(user_id, inference_id), data


def record_items(start: int, stop: int, seed: int = 0) -> list[Item]:
    """Records number `start` to `stop - 1` of the benchmark's store (deterministic).

    The first `WINDOW_RECORDS` fall in the queried day for the queried user; the rest on other
    days.
    """
    items = []
    for number in range(start, stop):
        rng = random.Random(seed * 1_000_003 + number)
        if number < WINDOW_RECORDS:
            user = HISTORY_USER
            moment = WINDOW_DAY + timedelta(microseconds=rng.randrange(86_400_000_000))
        else:
            user = HISTORY_USER if rng.random() < 0.8 else rng.choice(_OTHER_USERS)
            offset = rng.choice([-1, 1]) * rng.randint(1, 365)
            moment = (
                WINDOW_DAY
                + timedelta(days=offset)
                + timedelta(microseconds=rng.randrange(86_400_000_000))
            )
        items.append(_record(user, moment, rng))
    return items


def history_request(token: str) -> HttpRequest:
    """The one-day-window query for the queried user (as an admin), first page of 100."""
    query = urlencode(
        {
            "user": HISTORY_USER,
            "start_time": WINDOW_DAY.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stop_time": (WINDOW_DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "limit": "100",
        }
    )
    return HttpRequest("GET", f"/history?{query}", None, {"Authorization": f"Bearer {token}"})


def put_items_into_store(store: Any, items: Sequence[Item], threads: int = 4) -> None:
    """Write records through the `Store` interface, several at a time."""

    def put(item: Item) -> None:
        store.put(item[0], item[1], content_type="application/json")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, items, chunksize=256))


def window_listing_ms(store: Any, repetitions: int = 5) -> float:
    """Median milliseconds to list the window's keys through the `Store` (no record reads):
    tells the listing's share of a query from the record fetches'."""
    from storage import keys

    window = keys.inference_window(HISTORY_USER, WINDOW_DAY, WINDOW_DAY + timedelta(days=1))
    times = []
    for _ in range(repetitions):
        started = time.perf_counter()
        for info in store.list(window.prefix, start_after=window.start_after, page_size=101):
            if info.key >= window.end_before:
                break
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def measure_history(
    seed_items: Callable[[Sequence[Item]], None],
    gateway_url: str,
    token: str,
    sizes: Sequence[int],
    plan: Plan,
    label: str,
    store: Any = None,
) -> dict[str, Any]:
    """Grow the store to each size in turn and measure the window query at that size (and,
    given the `store`, the window's listing alone)."""
    results: dict[str, Any] = {}
    seeded = 0
    request = history_request(token)
    for size in sizes:
        started = time.perf_counter()
        seed_items(record_items(seeded, size))
        seed_seconds = time.perf_counter() - started
        seeded = size
        returned = _records_returned(gateway_url, request)
        if returned != WINDOW_RECORDS:
            raise RuntimeError(
                f"the window query returned {returned} records, not {WINDOW_RECORDS}"
            )
        series = load_series(
            http_client_factory(gateway_url, [request]),
            [1],
            plan,
            seconds=plan.seconds,
            warmup_per_client=2,
            label=f"{label} {size} records",
        )
        results[str(size)] = {
            **series["1"],
            "seed_seconds": round(seed_seconds, 2),
            "records_returned": returned,
        }
        if store is not None:
            results[str(size)]["listing_ms"] = round(window_listing_ms(store), 2)
    return results


def _records_returned(gateway_url: str, request: HttpRequest) -> int:
    import urllib.request

    call = urllib.request.Request(gateway_url + request.path, headers=dict(request.headers))
    with urllib.request.urlopen(call, timeout=60) as response:
        return int(json.loads(response.read())["count"])


# -- a page of 100 records from a store with a network's round trip ---------------------------

PAGE_USER = "history-page-user"
PAGE_RECORDS = 100


def page_items(seed: int = 1) -> list[Item]:
    """`PAGE_RECORDS` records of `PAGE_USER`, all on `WINDOW_DAY`: one full page."""
    items = []
    for number in range(PAGE_RECORDS):
        rng = random.Random(seed * 1_000_003 + number)
        moment = WINDOW_DAY + timedelta(microseconds=rng.randrange(86_400_000_000))
        items.append(_record(PAGE_USER, moment, rng))
    return items


def page_request(token: str) -> HttpRequest:
    """The gateway query of that page (as an admin)."""
    query = urlencode(
        {
            "user": PAGE_USER,
            "start_time": WINDOW_DAY.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stop_time": (WINDOW_DAY + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "limit": str(PAGE_RECORDS),
        }
    )
    return HttpRequest("GET", f"/history?{query}", None, {"Authorization": f"Bearer {token}"})


def measure_page_fetch(
    store: Any, proxy: Any, repetitions: int, thread_counts: Sequence[int] = (1, 8)
) -> dict[str, Any]:
    """One page of `PAGE_RECORDS` records read by `HistoryService` through `store`, whose
    requests pass `proxy` (a `DelayProxy`), with each number of fetch threads, once with the
    proxy's delay and once without (all interleaved, `repetitions` times).

    Per thread count: median milliseconds with and without the delay, requests per page, and
    the round trips paid in sequence, (with - without) / delay: what the store's latency costs
    the page, apart from moto's own time (its one process serves requests one after another).
    """
    from unittest import mock

    from functions import history as history_module
    from functions.history import HistoryQuery, HistoryService

    delay = proxy.delay_seconds
    services = {}
    for threads in thread_counts:
        service = HistoryService(store, "bench-history-secret-" + "k" * 32)
        with mock.patch.object(history_module, "_FETCH_THREADS", threads):
            service._pool()  # the pool is made once, with the patched size
        services[threads] = service
    query = HistoryQuery(
        caller_id=PAGE_USER,
        user_id=PAGE_USER,
        start=WINDOW_DAY,
        stop=WINDOW_DAY + timedelta(days=1),
        limit=PAGE_RECORDS,
    )
    times: dict[tuple[int, float], list[float]] = {
        (threads, wait): [] for threads in thread_counts for wait in (0.0, delay)
    }
    requests: dict[int, int] = {}
    for service in services.values():
        if len(service.page(query).records) != PAGE_RECORDS:  # warm, and check the answer
            raise RuntimeError(f"the page did not hold {PAGE_RECORDS} records")
    try:
        for repetition in range(repetitions):
            for threads, service in services.items():
                if threads == 1 and repetition >= 2:
                    continue  # one call after another: two samples tell it, and each is long
                for wait in (0.0, delay):
                    proxy.delay_seconds = wait
                    before = proxy.requests
                    started = time.perf_counter()
                    service.page(query)
                    times[(threads, wait)].append((time.perf_counter() - started) * 1000)
                    requests[threads] = proxy.requests - before
    finally:
        proxy.delay_seconds = delay

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    delay_ms = delay * 1000
    figures: dict[str, Any] = {"delay_ms": delay_ms, "records": PAGE_RECORDS}
    for threads in thread_counts:
        with_delay, without = median(times[(threads, delay)]), median(times[(threads, 0.0)])
        figures[f"threads-{threads}"] = {
            "p50_ms": round(with_delay, 1),
            "min_ms": round(min(times[(threads, delay)]), 1),
            "max_ms": round(max(times[(threads, delay)]), 1),
            "p50_ms_without_delay": round(without, 1),
            "requests": requests[threads],
            "round_trips_in_sequence": round((with_delay - without) / delay_ms, 1),
        }
    return figures
