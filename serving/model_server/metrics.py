"""A few Prometheus metrics with TF Serving's names, rendered in the text exposition format.

Served on the REST port at the path of `--monitoring_config_file` (prometheus_config), like
TF Serving's `:tensorflow:serving:request_count` and friends.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["Metrics"]

# Request latency buckets in microseconds (TF Serving reports latencies in microseconds).
_LATENCY_BUCKETS_US = (
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    escaped = (
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in pairs
    )
    return "{" + ",".join(escaped) + "}"


class _Histogram:
    def __init__(self, buckets: tuple[int, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Thread-safe counters and histograms keyed by label tuples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._latency: dict[tuple[tuple[str, str], ...], _Histogram] = {}
        self._batch_sizes: dict[tuple[tuple[str, str], ...], _Histogram] = {}
        self._loads: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)

    def record_request(
        self, model: str, api: str, entrypoint: str, status: str, micros: float
    ) -> None:
        with self._lock:
            self._requests[(("model_name", model), ("status", status))] += 1
            key = (("model_name", model), ("API", api), ("entrypoint", entrypoint))
            histogram = self._latency.get(key)
            if histogram is None:
                histogram = self._latency[key] = _Histogram(_LATENCY_BUCKETS_US)
            histogram.observe(micros)

    def record_batch(self, model: str, size: int) -> None:
        with self._lock:
            key = (("model_name", model),)
            histogram = self._batch_sizes.get(key)
            if histogram is None:
                histogram = self._batch_sizes[key] = _Histogram(_BATCH_SIZE_BUCKETS)
            histogram.observe(size)

    def record_load(self, model: str, status: str) -> None:
        with self._lock:
            self._loads[(("model_path", model), ("status", status))] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            lines.append("# TYPE :tensorflow:serving:request_count counter")
            for labels, value in sorted(self._requests.items()):
                lines.append(f":tensorflow:serving:request_count{_labels(labels)} {value}")
            self._render_histograms(lines, ":tensorflow:serving:request_latency", self._latency)
            self._render_histograms(
                lines,
                ":tensorflow:serving:batching_session:processed_batch_size",
                self._batch_sizes,
            )
            lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            for labels, value in sorted(self._loads.items()):
                lines.append(
                    f":tensorflow:cc:saved_model:load_attempt_count{_labels(labels)} {value}"
                )
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_histograms(
        lines: list[str],
        name: str,
        histograms: dict[tuple[tuple[str, str], ...], _Histogram],
    ) -> None:
        lines.append(f"# TYPE {name} histogram")
        for labels, histogram in sorted(histograms.items()):
            cumulative = 0
            for bound, count in zip(histogram.buckets, histogram.counts, strict=False):
                cumulative += count
                lines.append(f"{name}_bucket{_labels((*labels, ('le', str(bound))))} {cumulative}")
            lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {histogram.count}")
            lines.append(f"{name}_sum{_labels(labels)} {histogram.total:g}")
            lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
