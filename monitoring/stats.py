"""The statistics both reports use: percentiles, shares and the population stability index.

Population stability index (PSI) of a feature between a reference sample (expected shares e_i)
and a current one (actual shares a_i) over the same bins:

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

Bins of a number are quantile bins of the *reference* (so each holds about the same share of
it): up to 10, fewer for small samples (about one per 50 values of the smaller sample, at least
two), so that sampling noise alone stays well under the first reading below. Bins of a category
are its values seen on either side. An empty bin's share is taken as EPSILON (1e-4), so the
logarithm stays finite and a category that appears from nowhere counts, but not infinitely.

The usual reading: under 0.1 no significant change; 0.1 to 0.25 a moderate change, worth a look;
over 0.25 a significant shift. The drift job's default threshold is 0.2.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "EPSILON",
    "MAX_BINS",
    "VALUES_PER_BIN",
    "categorical_psi",
    "numeric_psi",
    "percentiles",
    "quantile_edges",
    "rate",
    "shares",
    "summary",
]

EPSILON = 1e-4
MAX_BINS = 10
VALUES_PER_BIN = 50


def percentiles(values: ArrayLike, points: Iterable[int] = (50, 95, 99)) -> dict[str, Any]:
    """`{"p50": .., "p95": .., "p99": ..}` (None for an empty sample)."""
    array = np.asarray(values, dtype=np.float64)
    return {
        f"p{point}": (round(float(np.percentile(array, point)), 4) if array.size else None)
        for point in points
    }


def summary(values: ArrayLike) -> dict[str, Any]:
    """Count, mean, standard deviation and the 5th, 50th and 95th percentiles."""
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"count": 0, "mean": None, "std": None, "p5": None, "p50": None, "p95": None}
    return {
        "count": int(array.size),
        "mean": round(float(array.mean()), 6),
        "std": round(float(array.std()), 6),
        **{key: round(float(value), 6) for key, value in percentiles(array, (5, 50, 95)).items()},
    }


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def shares(values: Iterable[str], categories: Iterable[str] = ()) -> dict[str, float]:
    """Each category's share of `values` (the listed `categories` included, at 0)."""
    counts = Counter(values)
    total = sum(counts.values())
    names = list(dict.fromkeys([*categories, *sorted(counts)]))
    return {name: (counts[name] / total if total else 0.0) for name in names}


def _psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return round(total, 6)


def categorical_psi(reference: Mapping[str, float], current: Mapping[str, float]) -> float:
    """PSI between two category -> share mappings (a category missing on a side has share 0)."""
    names = sorted(set(reference) | set(current))
    return _psi([reference.get(n, 0.0) for n in names], [current.get(n, 0.0) for n in names])


def quantile_edges(reference: ArrayLike, bins: int) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, duplicates merged."""
    array = np.asarray(reference, dtype=np.float64)
    inner = np.quantile(array, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    edges = np.unique(inner)
    if edges.size == 0:  # a constant reference: split at its value
        edges = np.unique(array)[:1]
    return edges


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    # Bin i holds edges[i-1] < x <= edges[i]; the outer bins are open.
    index = np.searchsorted(edges, values, side="left")
    counts = np.bincount(index, minlength=edges.size + 1)
    return [float(count) / values.size for count in counts]


def numeric_psi(reference: ArrayLike, current: ArrayLike) -> tuple[float, int]:
    """PSI of a number over the reference's quantile bins, and how many bins were used."""
    expected = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(current, dtype=np.float64)
    if not expected.size or not actual.size:
        raise ValueError("both samples need values")
    bins = max(2, min(MAX_BINS, min(expected.size, actual.size) // VALUES_PER_BIN))
    edges = quantile_edges(expected, bins)
    return _psi(_bin_shares(expected, edges), _bin_shares(actual, edges)), int(edges.size + 1)
