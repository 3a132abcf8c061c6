"""Classification metrics and the evaluation report, in NumPy (no TensorFlow).

Confusion matrix, per-class and macro F1, one-vs-rest ROC AUC, and the report that the
champion/challenger decision reads (`training_job.decision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cnn_vit.config import CLASS_NAMES

__all__ = [
    "ClassificationReport",
    "classification_report",
    "confusion_matrix",
    "macro_f1",
    "per_class_f1",
    "roc_auc_one_vs_rest",
]


def confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int
) -> npt.NDArray[np.int64]:
    """Counts [true class, predicted class]."""
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def per_class_f1(matrix: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """F1 per class from a confusion matrix; 0 for a class never true nor predicted."""
    counts = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(counts)
    denominator = counts.sum(axis=0) + counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(denominator > 0, 2.0 * true_positive / denominator, 0.0)
    return np.asarray(scores, dtype=np.float64)


def macro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in either array (as sklearn's
    `f1_score(average="macro")`), or over `range(num_classes)` when given."""
    true = np.asarray(y_true, dtype=np.int64).ravel()
    pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if true.size == 0:
        return float("nan")
    size = num_classes if num_classes is not None else int(max(true.max(), pred.max())) + 1
    scores = per_class_f1(confusion_matrix(true, pred, size))
    if num_classes is None:
        present = np.union1d(true, pred)
        scores = scores[present]
    return float(scores.mean())


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, ties sharing the mean of their ranks (as scipy's `rankdata`)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    starts = ends - counts + 1.0
    return np.asarray(((starts + ends) / 2.0)[inverse], dtype=np.float64)


def roc_auc_one_vs_rest(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, num_classes: int
) -> list[float | None]:
    """ROC AUC of each class against the rest (Mann-Whitney U over the class's probability);
    None for a class with no positive or no negative example."""
    truth = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(probabilities, dtype=np.float64).reshape(len(truth), num_classes)
    result: list[float | None] = []
    for index in range(num_classes):
        positive = truth == index
        positives, negatives = int(positive.sum()), int((~positive).sum())
        if positives == 0 or negatives == 0:
            result.append(None)
            continue
        ranks = _average_ranks(scores[:, index])
        u_statistic = ranks[positive].sum() - positives * (positives + 1) / 2.0
        result.append(float(u_statistic / (positives * negatives)))
    return result


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else 0.0


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class precision, recall, F1, support and ROC AUC; macro-F1; accuracy; confusion.

    Macro averages run over the classes the test set holds (support > 0), so both models of a
    comparison are averaged over the same classes whatever they predict.
    """

    classes: tuple[str, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]  # [true class][predicted class]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    roc_auc: tuple[float | None, ...]
    macro_f1: float
    accuracy: float
    roc_auc_macro: float | None
    images: int

    def per_class_f1(self) -> dict[str, float]:
        return {name: self.f1[index] for index, name in enumerate(self.classes)}

    def evaluated_classes(self) -> list[str]:
        return [name for index, name in enumerate(self.classes) if self.support[index] > 0]

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the registry entry of a published version."""
        values = {"macro_f1": self.macro_f1, "accuracy": self.accuracy}
        if self.roc_auc_macro is not None:
            values["roc_auc_macro"] = self.roc_auc_macro
        for name, score in self.per_class_f1().items():
            values[f"f1_{name}"] = score
        return values

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "images": self.images,
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "roc_auc_macro": self.roc_auc_macro,
            "per_class": {
                name: {
                    "precision": self.precision[index],
                    "recall": self.recall[index],
                    "f1": self.f1[index],
                    "support": self.support[index],
                    "roc_auc": self.roc_auc[index],
                }
                for index, name in enumerate(self.classes)
            },
            "confusion_matrix": {
                "rows": "true class",
                "columns": "predicted class",
                "counts": [list(row) for row in self.confusion_matrix],
            },
        }


def classification_report(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    classes: Sequence[str] = CLASS_NAMES,
) -> ClassificationReport:
    """The report of predicted `probabilities` [N, C] against true class indices `labels` [N]."""
    num_classes = len(classes)
    truth = np.asarray(labels, dtype=np.int64).ravel()
    scores = np.asarray(probabilities, dtype=np.float64).reshape(len(truth), num_classes)
    if len(truth) == 0:
        raise ValueError("nothing to evaluate: no images")
    matrix = confusion_matrix(truth, scores.argmax(axis=1), num_classes)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted_count = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1)
    precision = [_ratio(true_positive[i], predicted_count[i]) for i in range(num_classes)]
    recall = [_ratio(true_positive[i], support[i]) for i in range(num_classes)]
    f1 = [float(score) for score in per_class_f1(matrix)]
    present = [i for i in range(num_classes) if support[i] > 0]
    auc = roc_auc_one_vs_rest(truth, scores, num_classes)
    defined_auc = [value for value in auc if value is not None]
    return ClassificationReport(
        classes=tuple(classes),
        confusion_matrix=tuple(tuple(int(count) for count in row) for row in matrix),
        precision=tuple(precision),
        recall=tuple(recall),
        f1=tuple(f1),
        support=tuple(int(count) for count in support),
        roc_auc=tuple(auc),
        macro_f1=float(np.mean([f1[i] for i in present])),
        accuracy=float(np.trace(matrix) / len(truth)),
        roc_auc_macro=float(np.mean(defined_auc)) if defined_auc else None,
        images=len(truth),
    )
