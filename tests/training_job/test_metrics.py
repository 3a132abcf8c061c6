"""Evaluation reports in NumPy: per-class precision, recall, F1, support, one-vs-rest ROC AUC
(checked against pair counting), macro averages over the classes the test set holds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training_job.metrics import (
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_f1,
    roc_auc_one_vs_rest,
)

CLASSES = ("normal", "covid", "no-covid")


def _one_hot(predicted: list[int], confidence: float = 0.8) -> np.ndarray:
    rest = (1.0 - confidence) / 2
    probabilities = np.full((len(predicted), 3), rest)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def _pair_counting_auc(positive_scores: list[float], negative_scores: list[float]) -> float:
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(positive_scores, negative_scores)
    )
    return wins / (len(positive_scores) * len(negative_scores))


def test_classification_report_hand_computed_example() -> None:
    labels = [0, 0, 1, 2, 2]
    predicted = [0, 1, 1, 2, 0]

    report = classification_report(labels, _one_hot(predicted), CLASSES)

    assert report.confusion_matrix == ((1, 1, 0), (0, 1, 0), (1, 0, 1))
    assert report.support == (2, 1, 2)
    assert report.precision == pytest.approx((0.5, 0.5, 1.0))
    assert report.recall == pytest.approx((0.5, 1.0, 0.5))
    assert report.f1 == pytest.approx((0.5, 2 / 3, 2 / 3))
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert report.accuracy == pytest.approx(3 / 5)
    assert report.images == 5


def test_classification_report_absent_class_left_out_of_macro_average() -> None:
    labels = [0, 0, 1, 1]

    report = classification_report(labels, _one_hot([0, 0, 1, 2]), CLASSES)

    assert report.support[2] == 0
    assert report.evaluated_classes() == ["normal", "covid"]
    assert report.macro_f1 == pytest.approx((1.0 + 2 / 3) / 2)
    assert report.roc_auc[2] is None


def test_roc_auc_one_vs_rest_matches_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    # Rounded scores make ties, which count one half.
    probabilities = np.round(rng.dirichlet(np.ones(3), 60), 1)

    aucs = roc_auc_one_vs_rest(labels, probabilities, 3)

    for index in range(3):
        positive = labels == index
        expected = _pair_counting_auc(
            list(probabilities[positive, index]), list(probabilities[~positive, index])
        )
        assert aucs[index] == pytest.approx(expected)


def test_roc_auc_one_vs_rest_perfect_and_reversed_rankings() -> None:
    labels = [0, 0, 1, 1]
    perfect = [[0.9, 0.1, 0], [0.8, 0.2, 0], [0.3, 0.7, 0], [0.1, 0.9, 0]]

    assert roc_auc_one_vs_rest(labels, perfect, 3)[:2] == [1.0, 1.0]
    assert roc_auc_one_vs_rest([1, 1, 0, 0], perfect, 3)[:2] == [0.0, 0.0]


def test_classification_report_json_has_every_field() -> None:
    report = classification_report([0, 1, 2], _one_hot([0, 1, 2]), CLASSES)

    document = report.to_json()

    assert set(document["per_class"]) == set(CLASSES)
    assert set(document["per_class"]["covid"]) == {
        "precision",
        "recall",
        "f1",
        "support",
        "roc_auc",
    }
    assert document["confusion_matrix"]["counts"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert report.metrics()["f1_no-covid"] == 1.0
    assert document["macro_f1"] == 1.0


def test_classification_report_no_images_raises() -> None:
    with pytest.raises(ValueError):
        classification_report([], np.zeros((0, 3)), CLASSES)


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    matrix = confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)

    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


def test_macro_f1_hand_computed_example() -> None:
    # Per class: F1(0) = 2*1/(2+2) = 0.5; F1(1) = 2*1/(1+2) = 2/3; F1(2) = 2*1/(2+1) = 2/3.
    score = macro_f1([0, 0, 1, 2, 2], [0, 1, 1, 2, 0])

    assert score == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)


def test_macro_f1_absent_class_counts_only_when_num_classes_given() -> None:
    perfect_two_classes = ([0, 1, 0, 1], [0, 1, 0, 1])

    assert macro_f1(*perfect_two_classes) == 1.0
    assert macro_f1(*perfect_two_classes, num_classes=3) == pytest.approx(2 / 3)


def test_per_class_f1_never_seen_class_scores_zero() -> None:
    scores = per_class_f1(np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0]]))

    np.testing.assert_allclose(scores, [1.0, 1.0, 0.0])
