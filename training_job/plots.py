"""PNG plots of a training run: the training curves, a model's confusion matrix and its
reliability diagram.

Matplotlib's object API on the Agg renderer (no pyplot, no global state, no display), so plots
render in a headless container and from any thread. Each function returns PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training_job.calibration import ReliabilityBins

__all__ = ["plot_confusion_matrix", "plot_reliability_diagram", "plot_training_curves"]

_DPI = 110
_TRAIN_COLOUR = "#1f77b4"
_VALIDATION_COLOUR = "#d62728"
_F1_COLOUR = "#2ca02c"
_BEFORE_COLOUR = "#ff7f0e"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _column(rows: Sequence[Mapping[str, float | int]], name: str) -> list[float]:
    values = []
    for row in rows:
        value = row.get(name)
        values.append(float(value) if value is not None else math.nan)
    return values


def _has_values(values: Sequence[float]) -> bool:
    return any(not math.isnan(value) for value in values)


def plot_training_curves(
    history: Sequence[Mapping[str, float | int]],
    *,
    title: str,
    best_epoch: int | None = None,
) -> bytes:
    """Loss, accuracy and validation macro-F1 per epoch, and training throughput."""
    epochs = [int(row["epoch"]) for row in history]
    figure = Figure(figsize=(12, 4), layout="constrained")
    loss_axes, score_axes, speed_axes = figure.subplots(1, 3)
    markers = {"marker": "o", "markersize": 3} if len(epochs) <= 40 else {}

    loss_axes.plot(epochs, _column(history, "loss"), color=_TRAIN_COLOUR, label="train", **markers)
    if _has_values(_column(history, "val_loss")):
        loss_axes.plot(
            epochs,
            _column(history, "val_loss"),
            color=_VALIDATION_COLOUR,
            label="validation",
            **markers,
        )
    loss_axes.set_title("Loss (cross-entropy, label smoothing)")
    loss_axes.set_ylabel("loss")

    score_axes.plot(
        epochs, _column(history, "accuracy"), color=_TRAIN_COLOUR, label="train accuracy", **markers
    )
    if _has_values(_column(history, "val_accuracy")):
        score_axes.plot(
            epochs,
            _column(history, "val_accuracy"),
            color=_VALIDATION_COLOUR,
            label="validation accuracy",
            **markers,
        )
        score_axes.plot(
            epochs,
            _column(history, "val_macro_f1"),
            color=_F1_COLOUR,
            linestyle="--",
            label="validation macro-F1",
            **markers,
        )
    score_axes.set_title("Accuracy and macro-F1")
    score_axes.set_ylim(0.0, 1.02)

    speed_axes.bar(epochs, _column(history, "images_per_second"), color="#7f7f7f", width=0.7)
    speed_axes.set_title("Throughput (epoch 1 includes tracing)")
    speed_axes.set_ylabel("images per second")

    for axes in (loss_axes, score_axes, speed_axes):
        axes.set_xlabel("epoch")
        axes.grid(True, alpha=0.3)
        if len(epochs) <= 20:
            axes.set_xticks(epochs)
    for axes in (loss_axes, score_axes):
        if best_epoch is not None and best_epoch in epochs:
            axes.axvline(
                best_epoch, color="#555555", linestyle=":", label=f"best (epoch {best_epoch})"
            )
        axes.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    return _png(figure)


def plot_confusion_matrix(
    counts: Sequence[Sequence[int]],
    classes: Sequence[str],
    *,
    title: str,
) -> bytes:
    """Counts per (true, predicted) class, each cell also as a share of its true class."""
    size = len(classes)
    row_totals = [sum(row) for row in counts]
    shares = [
        [count / total if total else 0.0 for count in row]
        for row, total in zip(counts, row_totals, strict=True)
    ]
    figure = Figure(figsize=(6.4, 5.2), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    colour_bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colour_bar.set_label("share of the true class")
    for row in range(size):
        for column in range(size):
            share = shares[row][column]
            axes.text(
                column,
                row,
                f"{counts[row][column]}\n{share:.0%}",
                ha="center",
                va="center",
                color="white" if share > 0.55 else "black",
                fontsize="medium",
            )
    axes.set_xticks(range(size), labels=list(classes))
    axes.set_yticks(
        range(size),
        labels=[f"{name}\n(n={row_totals[index]})" for index, name in enumerate(classes)],
    )
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize="medium")
    return _png(figure)


def plot_reliability_diagram(
    before: ReliabilityBins,
    after: ReliabilityBins,
    *,
    ece_before: float,
    ece_after: float,
    temperature: float,
    title: str,
) -> bytes:
    """Accuracy against confidence per bin, before and after calibration, with the diagonal a
    perfectly calibrated model would follow and the share of images per bin underneath."""
    figure = Figure(figsize=(6.4, 6.4), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for bins, colour, label in (
        (before, _BEFORE_COLOUR, f"uncalibrated (ECE {ece_before:.3f})"),
        (after, _TRAIN_COLOUR, f"temperature {temperature:.2f} (ECE {ece_after:.3f})"),
    ):
        kept = [i for i, count in enumerate(bins.counts) if count]
        top.plot(
            [bins.confidence[i] for i in kept],
            [bins.accuracy[i] for i in kept],
            marker="o",
            color=colour,
            label=label,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy in the bin")
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    top.set_title(title, fontsize="medium", wrap=True)
    width = 1.0 / max(1, len(after.counts))
    centres = [(lo + hi) / 2 for lo, hi in zip(after.edges[:-1], after.edges[1:], strict=True)]
    total_before = max(1, sum(before.counts))
    total_after = max(1, sum(after.counts))
    bottom.bar(
        [c - width / 4 for c in centres],
        [count / total_before for count in before.counts],
        width=width / 2,
        color=_BEFORE_COLOUR,
    )
    bottom.bar(
        [c + width / 4 for c in centres],
        [count / total_after for count in after.counts],
        width=width / 2,
        color=_TRAIN_COLOUR,
    )
    bottom.set_xlabel("confidence (probability of the predicted class), 15 bins")
    bottom.set_ylabel("share of images")
    return _png(figure)
