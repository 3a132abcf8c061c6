"""A soak: the whole stack under steady mixed load, every process's memory and open files sampled.

`run_soak` drives closed-loop clients (predict, Grad-CAM and history, in the proportions a user
would) against the gateway for a bounded time while a sampler reads, every `interval` seconds,
the resident memory (VmRSS) and the open file descriptors of every process of each named
process group (a started service and its children: gunicorn's worker, say) from /proc. It
returns the counts by status, the samples and, per process group, the least-squares slope of
memory (MiB per minute) and of open files (per minute) over the samples after the warm-up.

Linux only (/proc). Used by `xray-bench --only soak` (10 minutes) and, for a short run, by
the end-to-end tests.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3

__all__ = [
    "SoakResult",
    "always_503_server",
    "group_usage",
    "run_soak",
    "slope",
    "time_refusals",
]

_PROC = Path("/proc")


def _group_members(group: int) -> list[int]:
    """Every process whose process group is `group` (a service started in its own session)."""
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def group_usage(group: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of the process group, summed over its members."""
    rss_kib = descriptors = 0
    for pid in _group_members(group):
        try:
            for line in (_PROC / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
            descriptors += len(os.listdir(_PROC / str(pid) / "fd"))
        except OSError:  # ended between the listing and the read
            continue
    return rss_kib / 1024, descriptors


def slope(times: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of `values` over `times` (per unit of time); 0 for < 2 points."""
    count = len(times)
    if count < 2:
        return 0.0
    mean_t = sum(times) / count
    mean_v = sum(values) / count
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread


@dataclass
class SoakResult:
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)  # "predict 200", "history 200"...
    samples: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    warmup_fraction: float = 0.2

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(count for key, count in self.statuses.items() if not key.endswith(" 200"))

    def trends(self) -> dict[str, dict[str, float]]:
        """Per process group: memory MiB/min and descriptors/min after the warm-up, first and
        last values."""
        trends = {}
        for name, series in self.samples.items():
            skip = int(len(series) * self.warmup_fraction)
            kept = series[skip:] if len(series) - skip >= 2 else series
            minutes = [moment / 60 for moment, _, _ in kept]
            trends[name] = {
                "rss_mib_per_minute": round(slope(minutes, [rss for _, rss, _ in kept]), 3),
                "fds_per_minute": round(slope(minutes, [fds for _, _, fds in kept]), 3),
                "rss_mib_first": round(series[0][1], 1) if series else 0.0,
                "rss_mib_last": round(series[-1][1], 1) if series else 0.0,
                "fds_first": series[0][2] if series else 0,
                "fds_last": series[-1][2] if series else 0,
            }
        return trends

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "failed": self.failed,
            "statuses": dict(self.statuses),
            "trends": self.trends(),
            "samples": {
                name: [[round(t, 1), round(rss, 1), fds] for t, rss, fds in series]
                for name, series in self.samples.items()
            },
        }


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "soak-boundary-7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run_soak(
    base_url: str,
    token: str,
    images: Sequence[bytes],
    groups: Mapping[str, int],
    *,
    seconds: float,
    clients: int = 4,
    interval: float = 10.0,
) -> SoakResult:
    """Mixed closed-loop load on the gateway at `base_url` for `seconds`, sampling `groups`
    (name -> process group id) every `interval` seconds (and once at the start and end)."""
    result = SoakResult(seconds=seconds, samples={name: [] for name in groups})
    stop = threading.Event()
    lock = threading.Lock()
    started = time.monotonic()
    auth = {"Authorization": f"Bearer {token}"}

    def sample() -> None:
        moment = time.monotonic() - started
        for name, group in groups.items():
            rss, fds = group_usage(group)
            result.samples[name].append((moment, rss, fds))

    def sampler() -> None:
        while not stop.wait(interval):
            sample()

    def client(index: int) -> None:
        http = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(5, 60))
        number = index
        while not stop.is_set():
            image = images[number % len(images)]
            kind = ("predict", "predict", "predict", "gradcam", "predict", "history")[number % 6]
            number += clients
            try:
                if kind == "predict":
                    answer = http.request(
                        "POST",
                        base_url + "/predict",
                        body=image,
                        headers={**auth, "Content-Type": "image/png"},
                    )
                elif kind == "gradcam":
                    body, content_type = _multipart(image)
                    answer = http.request(
                        "POST",
                        base_url + "/gradcam",
                        body=body,
                        headers={**auth, "Content-Type": content_type},
                    )
                else:
                    answer = http.request("GET", base_url + "/history?limit=20", headers=auth)
                status = str(answer.status)
            except urllib3.exceptions.HTTPError as exc:
                status = type(exc).__name__
            with lock:
                result.statuses[f"{kind} {status}"] += 1

    sample()
    threads = [threading.Thread(target=sampler, daemon=True)]
    threads += [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    sample()
    result.seconds = time.monotonic() - started
    return result


class RefusingServer:
    """A model server that answers 503 to every call, counting them."""

    def __init__(self) -> None:
        owner = self
        self.calls = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with owner._lock:
                    owner.calls += 1
                body = b'{"error": "Servable not found"}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def always_503_server() -> RefusingServer:
    return RefusingServer()


def time_refusals(base_url: str, token: str, image: bytes, count: int) -> dict[str, Any]:
    """`count` predictions one after another over one kept-alive connection: the latency of
    each answer (all expected 503), median and 99th percentile, and the statuses."""
    http = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(5, 60))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    for _ in range(count):
        began = time.perf_counter()
        answer = http.request("POST", base_url + "/predict", body=image, headers=headers)
        latencies.append((time.perf_counter() - began) * 1000)
        statuses[str(answer.status)] += 1
    ordered = sorted(latencies)
    return {
        "requests": count,
        "statuses": dict(statuses),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }
