"""Calibration of the model's probabilities: temperature scaling, fitted on the validation split.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) divides the
logits by one number T > 0 before the softmax. It is fitted by minimising the negative
log-likelihood of the validation split's labels, changes no argmax (so no prediction, F1 or
confusion matrix), cannot over-fit a small validation split the way per-class or histogram
methods can (one parameter), and is exact to bake into a SavedModel: the model's float32
softmax gives log-probabilities that equal the logits up to a constant per image, which the
softmax ignores, so `softmax(log(p) / T)` is `softmax(logits / T)`.

The measures (NumPy only, no TensorFlow):
- expected calibration error, top-label, 15 equal-width bins (Guo et al.'s ECE): the mean
  |accuracy - confidence| over the bins, weighted by their share of images;
- the same per class, one-vs-rest (the class's probability against "is this class");
- Brier score: the mean over images of the squared distance between the probability vector and
  the one-hot label (0 is perfect, 2 the worst), and per class its one-vs-rest term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BINS",
    "Abstention",
    "CalibrationMeasures",
    "ReliabilityBins",
    "apply_temperature",
    "at_range_end",
    "brier_score",
    "expected_calibration_error",
    "fit_temperature",
    "measure",
    "refer_threshold",
    "reliability_bins",
    "selective",
]

BINS = 15
# The search interval of T: wider than any useful temperature, so the fit never sits on an end
# unless the model is badly broken (then the end is reported, not a made-up optimum).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
# log(0) guard: float32 softmax underflows to 0 for logits ~104 below the largest.
_TINY = np.float64(1e-38)

FloatArray = npt.NDArray[np.float64]


def _as_probabilities(probabilities: Any) -> FloatArray:
    array = np.asarray(probabilities, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"probabilities must be [images, classes >= 2], not {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("probabilities must be finite and non-negative")
    return array


def _as_labels(labels: Any, images: int, classes: int) -> npt.NDArray[np.int64]:
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if array.shape[0] != images:
        raise ValueError(f"{images} probability rows but {array.shape[0]} labels")
    if array.size and (array.min() < 0 or array.max() >= classes):
        raise ValueError(f"labels must be class indices 0..{classes - 1}")
    return array


def _log_probabilities(probabilities: FloatArray) -> FloatArray:
    return np.log(np.maximum(probabilities, _TINY))


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: FloatArray = exp / exp.sum(axis=1, keepdims=True)
    return result


def apply_temperature(probabilities: Any, temperature: float) -> FloatArray:
    """`softmax(log(p) / T)`: the probabilities the model gives with its logits divided by T."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"the temperature must be a positive number, not {temperature!r}")
    array = _as_probabilities(probabilities)
    if temperature == 1.0:
        return array  # the identity, without a round trip through log and exp
    return _softmax(_log_probabilities(array) / temperature)


def at_range_end(temperature: float) -> bool:
    """Whether a fitted temperature ran to an end of the search range: the split could not pin
    it down (a tiny or degenerate split), so it is no estimate to serve."""
    return any(
        abs(math.log(temperature) - math.log(end)) < 1e-3
        for end in (MIN_TEMPERATURE, MAX_TEMPERATURE)
    )


def _nll(log_probabilities: FloatArray, labels: npt.NDArray[np.int64], temperature: float) -> float:
    scaled = log_probabilities / temperature
    top = scaled.max(axis=1, keepdims=True)
    log_normaliser = top[:, 0] + np.log(np.exp(scaled - top).sum(axis=1))
    picked = scaled[np.arange(labels.shape[0]), labels]
    return float(np.mean(log_normaliser - picked))


def fit_temperature(probabilities: Any, labels: Any) -> float:
    """The T minimising the negative log-likelihood of `labels` (golden-section search on
    log T over [0.05, 20]; the NLL is convex in 1/T, so unimodal in log T)."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    if truth.size == 0:
        raise ValueError("no images to fit a temperature on")
    log_p = _log_probabilities(array)

    def loss(log_t: float) -> float:
        return _nll(log_p, truth, math.exp(log_t))

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(80):  # the interval shrinks to ~1e-16 of its width
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    best = (low + high) / 2
    # The identity wins a tie (within rounding): a temperature must earn its place.
    return 1.0 if loss(0.0) - loss(best) <= 1e-9 * max(1.0, abs(loss(0.0))) else math.exp(best)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin: images, mean confidence and accuracy (NaN for an empty bin)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]


def _bins(confidence: FloatArray, correct: FloatArray, bins: int) -> ReliabilityBins:
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edge_i, edge_i+1]; a confidence of exactly 0 goes to the first bin.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums_conf = np.bincount(index, weights=confidence, minlength=bins)
    sums_correct = np.bincount(index, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sums_conf / counts, np.nan)
        accuracy = np.where(counts > 0, sums_correct / counts, np.nan)
    return ReliabilityBins(
        edges=tuple(float(edge) for edge in edges),
        counts=tuple(int(count) for count in counts),
        confidence=tuple(float(value) for value in mean_conf),
        accuracy=tuple(float(value) for value in accuracy),
    )


def _ece_of(bins: ReliabilityBins) -> float:
    total = sum(bins.counts)
    if total == 0:
        return 0.0
    return float(
        sum(
            count * abs(accuracy - confidence)
            for count, accuracy, confidence in zip(
                bins.counts, bins.accuracy, bins.confidence, strict=True
            )
            if count
        )
        / total
    )


def reliability_bins(probabilities: Any, labels: Any, bins: int = BINS) -> ReliabilityBins:
    """Top-label reliability: the predicted class's probability against being right."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == truth).astype(np.float64)
    return _bins(confidence, correct, bins)


def expected_calibration_error(
    probabilities: Any, labels: Any, bins: int = BINS, class_index: int | None = None
) -> float:
    """Top-label ECE over `bins` equal-width bins; with `class_index`, that class's
    one-vs-rest ECE (its probability against the label being that class)."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    if class_index is None:
        return _ece_of(reliability_bins(array, truth, bins))
    return _ece_of(_bins(array[:, class_index], (truth == class_index).astype(np.float64), bins))


def brier_score(probabilities: Any, labels: Any, class_index: int | None = None) -> float:
    """Multi-class Brier score (mean squared distance to the one-hot label, 0..2); with
    `class_index`, that class's term alone (0..1)."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    if truth.size == 0:
        return 0.0
    one_hot = np.eye(array.shape[1])[truth]
    squared = (array - one_hot) ** 2
    if class_index is None:
        return float(squared.sum(axis=1).mean())
    return float(squared[:, class_index].mean())


@dataclass(frozen=True)
class CalibrationMeasures:
    """ECE and Brier score of one set of probabilities, overall and per class."""

    images: int
    ece: float
    brier: float
    per_class_ece: dict[str, float]
    per_class_brier: dict[str, float]
    nll: float

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "ece": self.ece,
            "brier": self.brier,
            "nll": self.nll,
            "per_class_ece": dict(self.per_class_ece),
            "per_class_brier": dict(self.per_class_brier),
        }


def measure(probabilities: Any, labels: Any, classes: Sequence[str]) -> CalibrationMeasures:
    """Every measure of `probabilities` against `labels`, classes named by `classes`."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    if len(classes) != array.shape[1]:
        raise ValueError(f"{len(classes)} class names for {array.shape[1]} probability columns")
    nll = _nll(_log_probabilities(array), truth, 1.0) if truth.size else 0.0
    return CalibrationMeasures(
        images=int(truth.size),
        ece=expected_calibration_error(array, truth),
        brier=brier_score(array, truth),
        per_class_ece={
            name: expected_calibration_error(array, truth, class_index=index)
            for index, name in enumerate(classes)
        },
        per_class_brier={
            name: brier_score(array, truth, class_index=index) for index, name in enumerate(classes)
        },
        nll=nll,
    )


@dataclass(frozen=True)
class Abstention:
    """Answers below `threshold` (top probability) are referred; the rest are kept.

    `coverage` is the share kept, `accuracy` the accuracy of the kept ones (None when none is
    kept), `referred_accuracy` that of the referred ones, `reached` whether the kept answers
    reach the target accuracy the threshold was chosen for.
    """

    threshold: float
    coverage: float
    accuracy: float | None
    referred_accuracy: float | None
    images: int
    reached: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "coverage": self.coverage,
            "accuracy": self.accuracy,
            "referred_accuracy": self.referred_accuracy,
            "images": self.images,
            "reached": self.reached,
        }


def selective(
    probabilities: Any, labels: Any, threshold: float, target_accuracy: float | None = None
) -> Abstention:
    """Coverage and accuracy when answers with a top probability below `threshold` are
    referred (`reached`: the kept accuracy is at least `target_accuracy`, if given)."""
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    confidence = array.max(axis=1)
    correct = array.argmax(axis=1) == truth
    kept = confidence >= threshold
    images = int(truth.size)
    accuracy = float(correct[kept].mean()) if kept.any() else None
    referred = float(correct[~kept].mean()) if (~kept).any() else None
    reached = target_accuracy is None or (accuracy is not None and accuracy >= target_accuracy)
    return Abstention(
        threshold=float(threshold),
        coverage=float(kept.mean()) if images else 0.0,
        accuracy=accuracy,
        referred_accuracy=referred,
        images=images,
        reached=reached,
    )


def refer_threshold(probabilities: Any, labels: Any, target_accuracy: float) -> Abstention:
    """The lowest confidence threshold at which the kept answers reach `target_accuracy`
    (the most answers kept for that accuracy): 0 when every answer may be kept; when no
    threshold reaches it, 1 (refer all but certain answers) with `reached` False."""
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"the target accuracy must lie in (0, 1], not {target_accuracy!r}")
    array = _as_probabilities(probabilities)
    truth = _as_labels(labels, array.shape[0], array.shape[1])
    if truth.size == 0:
        raise ValueError("no images to choose a threshold on")
    confidence = array.max(axis=1)
    correct = (array.argmax(axis=1) == truth).astype(np.float64)
    order = np.argsort(-confidence, kind="stable")
    sorted_conf = confidence[order]
    kept_accuracy = np.cumsum(correct[order]) / np.arange(1, truth.size + 1)
    # A threshold keeps every answer at or above it: only the last of equal confidences is a
    # place to cut.
    cut_here = np.append(sorted_conf[1:] < sorted_conf[:-1], True)
    good = np.flatnonzero(cut_here & (kept_accuracy >= target_accuracy - 1e-12))
    if good.size == 0:
        return selective(array, truth, 1.0, target_accuracy)
    last = int(good[-1])
    threshold = 0.0 if last == truth.size - 1 else float(sorted_conf[last])
    return selective(array, truth, threshold, target_accuracy)
