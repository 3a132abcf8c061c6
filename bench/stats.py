"""Small statistics for benchmark samples: percentiles, and median with spread over repetitions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["latency_summary", "over_repetitions", "percentile", "ratio"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (NumPy's default), `fraction` in [0, 1]; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, mean and count of one run's latencies (milliseconds)."""
    count = len(latencies_ms)
    return {
        "p50": percentile(latencies_ms, 0.50),
        "p90": percentile(latencies_ms, 0.90),
        "p99": percentile(latencies_ms, 0.99),
        "mean": sum(latencies_ms) / count if count else math.nan,
        "count": float(count),
    }


def over_repetitions(runs: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """For each statistic of repeated runs: the median, minimum and maximum across runs.

    The median of the repetitions is the figure reported; min and max show how much the
    machine's other load moved it.
    """
    collected: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.items():
            if isinstance(value, int | float) and not math.isnan(float(value)):
                collected.setdefault(name, []).append(float(value))
    return {
        name: {
            "median": percentile(values, 0.5),
            "min": min(values),
            "max": max(values),
            "runs": float(len(values)),
        }
        for name, values in collected.items()
    }


def ratio(numerator: Any, denominator: Any) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is zero."""
    try:
        top, bottom = float(numerator), float(denominator)
    except (TypeError, ValueError):
        return math.nan
    if bottom == 0 or math.isnan(top) or math.isnan(bottom):
        return math.nan
    return top / bottom
