"""A closed-loop load generator: N client threads, each sending its next request when the last
one is answered, bounded in time and in count.

Pure Python (threads and urllib3 with one kept-alive connection per client) so `make bench`
needs nothing beyond the virtual environment. The same loop drives in-process calls (the bare
SavedModel signature) so every system is measured by one yardstick. The generator shares the
machine's cores with the system under test; its own cost per request (about a millisecond of
Python) is part of every figure alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

from bench.stats import latency_summary

__all__ = [
    "HttpRequest",
    "LoadRun",
    "http_client_factory",
    "multipart_body",
    "run_closed_loop",
]

# A client: called with a running request number, returns an HTTP-like status (200 = success).
Client = Callable[[int], int]


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadRun:
    """One bounded run: latencies of the answered requests and the count of every status."""

    clients: int
    latencies_ms: list[float]
    statuses: Counter[int]
    seconds: float

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float]:
        """Latency percentiles, throughput (answered requests per second) and error count."""
        figures = latency_summary(self.latencies_ms)
        figures["throughput"] = self.throughput
        figures["errors"] = float(sum(n for status, n in self.statuses.items() if status != 200))
        return figures

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            **{name: round(value, 3) for name, value in self.summary().items()},
        }


def multipart_body(
    field_name: str, file_name: str, data: bytes, content_type: str
) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part, and its Content-Type header value."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field_name}"; filename="{file_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + data + tail, f"multipart/form-data; boundary={boundary}"


def http_client_factory(
    base_url: str,
    requests: Sequence[HttpRequest],
    *,
    timeout_seconds: float = 60.0,
) -> Callable[[], Client]:
    """Clients that cycle through `requests`, each over its own kept-alive connection."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    def make_client() -> Client:
        pool = urllib3.HTTPConnectionPool(
            host,
            port,
            maxsize=1,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds),
        )

        def call(number: int) -> int:
            request = requests[number % len(requests)]
            try:
                response = pool.urlopen(
                    request.method,
                    request.path,
                    body=request.body,
                    headers=dict(request.headers),
                    retries=False,
                    redirect=False,
                    preload_content=True,
                )
            except urllib3.exceptions.HTTPError:
                return 0
            return int(response.status)

        return call

    return make_client


def run_closed_loop(
    make_client: Callable[[], Client],
    clients: int,
    *,
    seconds: float,
    max_requests: int,
    warmup_per_client: int = 1,
) -> LoadRun:
    """Run `clients` closed-loop clients for at most `seconds` and `max_requests` requests.

    Each client first sends `warmup_per_client` requests that are not counted (connections,
    caches); then all start together. A request counts if it was sent before the time was up.
    """
    lock = threading.Lock()
    sent = 0
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start_box: list[float] = []
    # The barrier's action stamps the start once every client has warmed up.
    ready = threading.Barrier(clients + 1, action=lambda: start_box.append(time.perf_counter()))
    last_done = [0.0]

    def worker() -> None:
        nonlocal sent
        call = make_client()
        for index in range(warmup_per_client):
            call(index)
        ready.wait()
        start = start_box[0]
        while True:
            with lock:
                if sent >= max_requests or time.perf_counter() - start >= seconds:
                    return
                number = sent
                sent += 1
            began = time.perf_counter()
            status = call(number)
            ended = time.perf_counter()
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append((ended - began) * 1000.0)
                last_done[0] = max(last_done[0], ended)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    elapsed = max(last_done[0] - start_box[0], 1e-9)
    return LoadRun(clients=clients, latencies_ms=latencies, statuses=statuses, seconds=elapsed)
