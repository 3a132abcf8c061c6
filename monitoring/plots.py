"""PNG plots of the comparison and drift reports.

Matplotlib's object API on the Agg renderer (no pyplot, no global state, no display), as the
training job's plots: they render in a headless container and from any thread. Imported only
where a report draws its plots, so reading records never loads matplotlib. Each function returns
PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

__all__ = ["confidence_histograms", "confusion_heatmap", "drift_figure", "latency_cdfs"]

_DPI = 110
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _histograms(
    axes: Axes, series: Mapping[str, Sequence[float]], title: str, bounds: tuple[float, float]
) -> None:
    present = {label: values for label, values in series.items() if len(values)}
    axes.set_title(title, fontsize=10)
    if not present:
        _no_data(axes)
        return
    low, high = bounds
    if not low < high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, 31)
    for colour, (label, values) in zip(_COLOURS, present.items(), strict=False):
        axes.hist(
            np.clip(np.asarray(values, dtype=np.float64), low, high),
            bins=edges.tolist(),
            density=True,
            histtype="stepfilled",
            alpha=0.35,
            color=colour,
            edgecolor=colour,
            linewidth=1.2,
            label=f"{label} (n={len(values)})",
        )
    axes.set_ylabel("density")
    axes.legend(fontsize=7, loc="best")


def _range(series: Mapping[str, Sequence[float]]) -> tuple[float, float]:
    values = [float(v) for values in series.values() for v in values]
    if not values:
        return 0.0, 1.0
    array = np.asarray(values)
    return float(np.percentile(array, 0.5)), float(np.percentile(array, 99.5))


def confidence_histograms(
    routed: Mapping[str, Sequence[float]],
    shadow: Mapping[str, Sequence[float]],
    *,
    title: str,
) -> bytes:
    """Confidence histograms overlaid: routed traffic (different users) and shadow answers
    (the same images)."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    _histograms(left, routed, "routed traffic (different users)", (0.0, 1.0))
    _histograms(right, shadow, "shadow answers (the same images)", (0.0, 1.0))
    for axes in (left, right):
        axes.set_xlabel("confidence (top probability)")
    figure.suptitle(title)
    return _png(figure)


def confusion_heatmap(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str],
    *,
    title: str,
    rows: str,
    columns: str,
) -> bytes:
    """Counts of (stable class, canary class) over the same images, with each row's shares."""
    figure = Figure(figsize=(6.2, 5.4), layout="constrained")
    axes = figure.subplots()
    counts = np.asarray(matrix, dtype=np.float64).reshape(len(classes), len(classes))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the row")
    for i in range(len(classes)):
        for j in range(len(classes)):
            axes.text(
                j,
                i,
                f"{int(counts[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if share[i, j] > 0.6 else "black",
            )
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel(columns)
    axes.set_ylabel(rows)
    agreed = int(np.trace(counts)) if counts.size else 0
    total = int(counts.sum())
    agreement = f"agreement {agreed / total:.1%} of {total}" if total else "no shadow answers"
    axes.set_title(f"{title}\n{agreement}", fontsize=10)
    return _png(figure)


def latency_cdfs(series: Mapping[str, Sequence[float]], *, title: str) -> bytes:
    """Empirical CDFs of latency (ms), log scale, with p50 and p95 marked."""
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    axes = figure.subplots()
    present = {label: values for label, values in series.items() if len(values)}
    if not present:
        _no_data(axes)
    for colour, (label, values) in zip(_COLOURS, present.items(), strict=False):
        ordered = np.sort(np.asarray(values, dtype=np.float64))
        fraction = np.arange(1, ordered.size + 1) / ordered.size
        p50, p95 = np.percentile(ordered, [50, 95])
        axes.step(
            ordered,
            fraction,
            where="post",
            color=colour,
            label=f"{label}: p50 {p50:.0f}, p95 {p95:.0f} ms (n={ordered.size})",
        )
        axes.plot([p95], [0.95], marker="o", color=colour)
    if present and min(min(values) for values in present.values()) > 0:
        axes.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
    axes.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    axes.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("model latency (ms)")
    axes.set_ylabel("share of requests at or below")
    axes.set_ylim(0, 1.02)
    axes.set_title(title, fontsize=10)
    if present:
        axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def _bars(axes: Axes, series: Mapping[str, Mapping[str, float]], title: str) -> None:
    axes.set_title(title, fontsize=10)
    present = {label: mix for label, mix in series.items() if mix and sum(mix.values()) > 0}
    if not present:
        _no_data(axes)
        return
    categories = list(dict.fromkeys(name for mix in present.values() for name in mix))
    width = 0.8 / len(present)
    positions = np.arange(len(categories))
    for k, (colour, (label, mix)) in enumerate(zip(_COLOURS, present.items(), strict=False)):
        axes.bar(
            positions + (k - (len(present) - 1) / 2) * width,
            [mix.get(name, 0.0) for name in categories],
            width=width,
            color=colour,
            label=label,
        )
    axes.set_xticks(positions, categories, fontsize=8, rotation=15)
    axes.set_ylabel("share")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, loc="best")


def _psi_bars(axes: Axes, psi: Mapping[str, Mapping[str, float | None]], threshold: float) -> None:
    axes.set_title(f"PSI per feature (threshold {threshold})", fontsize=10)
    features = list(dict.fromkeys(name for values in psi.values() for name in values))
    if not features:
        _no_data(axes)
        return
    width = 0.8 / max(1, len(psi))
    positions = np.arange(len(features))
    for k, (colour, (reference, values)) in enumerate(zip(_COLOURS, psi.items(), strict=False)):
        heights = [values.get(name) for name in features]
        axes.bar(
            positions + (k - (len(psi) - 1) / 2) * width,
            [0.0 if h is None or math.isnan(h) else h for h in heights],
            width=width,
            color=colour,
            label=reference.replace("_", " "),
        )
    axes.axhline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    axes.axhline(0.1, color="grey", linestyle=":", linewidth=1)
    axes.set_xticks(positions, features, fontsize=8, rotation=30)
    axes.legend(fontsize=7, loc="best")


def drift_figure(
    *,
    title: str,
    categorical: Mapping[str, Mapping[str, Mapping[str, float]]],
    numeric: Mapping[str, Mapping[str, Sequence[float]]],
    psi: Mapping[str, Mapping[str, float | None]],
    threshold: float,
) -> bytes:
    """One model version's day: each feature beside its references, and the PSI bars.

    `categorical`: feature -> source -> category -> share; `numeric`: feature -> source ->
    values; `psi`: reference -> feature -> PSI.
    """
    panels = len(categorical) + len(numeric) + 1
    columns = 3
    rows = max(1, math.ceil(panels / columns))
    figure = Figure(figsize=(4.6 * columns, 3.5 * rows), layout="constrained")
    grid = np.asarray(figure.subplots(rows, columns)).reshape(-1)
    index = 0
    for feature, series in categorical.items():
        _bars(grid[index], series, feature)
        index += 1
    for feature, values in numeric.items():
        _histograms(grid[index], values, feature, _range(values))
        index += 1
    _psi_bars(grid[index], psi, threshold)
    for axes in grid[index + 1 :]:
        axes.set_axis_off()
    figure.suptitle(title)
    return _png(figure)
