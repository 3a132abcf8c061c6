"""Temperature scaling and the calibration measures (NumPy only): the fit recovers a known
temperature, the measures match hand-computed values, and calibrating an over-confident model
lowers its ECE and negative log-likelihood without changing one prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training_job.calibration import (
    apply_temperature,
    at_range_end,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    measure,
    refer_threshold,
    reliability_bins,
    selective,
)
from training_job.plots import plot_reliability_diagram

CLASSES = ("normal", "covid", "no-covid")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _overconfident(images: int, sharpening: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (so softmax(z) is calibrated), and the probabilities of a
    model that reports softmax(z * sharpening): over-confident by a temperature `sharpening`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(images, 3))
    truth = _softmax(logits)
    labels = np.array([rng.choice(3, p=row) for row in truth])
    return _softmax(logits * sharpening).astype(np.float32), labels


@pytest.mark.parametrize("sharpening", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_the_temperature_that_calibrates(sharpening: float) -> None:
    probabilities, labels = _overconfident(20_000, sharpening)

    temperature = fit_temperature(probabilities, labels)

    assert temperature == pytest.approx(sharpening, rel=0.06)


def test_calibrating_an_overconfident_model_lowers_ece_and_nll_and_changes_no_prediction() -> None:
    fit_set = _overconfident(5_000, 3.0, seed=1)
    held_out = _overconfident(5_000, 3.0, seed=2)
    temperature = fit_temperature(*fit_set)

    before = measure(held_out[0], held_out[1], CLASSES)
    calibrated = apply_temperature(held_out[0], temperature)
    after = measure(calibrated, held_out[1], CLASSES)

    assert before.ece > 0.1
    assert after.ece < 0.03
    assert after.nll < before.nll
    assert after.brier < before.brier
    assert all(after.per_class_ece[name] < before.per_class_ece[name] for name in CLASSES)
    assert (calibrated.argmax(axis=1) == held_out[0].argmax(axis=1)).all()


def test_apply_temperature_is_softmax_of_the_logits_divided_by_t_and_undone_by_1_over_t() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [30.0, -30.0, 1.0]])
    probabilities = _softmax(logits)

    np.testing.assert_allclose(
        apply_temperature(probabilities, 2.0), _softmax(logits / 2), atol=1e-12
    )
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities, atol=1e-12)
    back = apply_temperature(apply_temperature(probabilities, 0.7), 1 / 0.7)
    np.testing.assert_allclose(back, probabilities, atol=1e-9)


def test_apply_temperature_keeps_underflowed_classes_finite() -> None:
    probabilities = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)  # a float32 softmax underflow

    calibrated = apply_temperature(probabilities, 3.0)

    assert np.isfinite(calibrated).all()
    assert calibrated[0, 0] == pytest.approx(1.0)
    assert calibrated.sum() == pytest.approx(1.0)


def test_a_calibrated_model_keeps_a_temperature_of_one_on_a_near_tie() -> None:
    # Perfectly separated and maximally confident: no T does better than 1 by a margin.
    probabilities = np.eye(3)[[0, 1, 2, 0]] * 0.98 + 0.01
    assert fit_temperature(probabilities, [0, 1, 2, 0]) < 1.0  # sharpening helps a right model
    uniform = np.full((6, 3), 1 / 3)
    assert fit_temperature(uniform, [0, 1, 2, 0, 1, 2]) == 1.0  # nothing to change


def test_ece_by_hand() -> None:
    # Two images at confidence 0.9 (one right) and two at 0.6 (both right), 15 bins:
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4.
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.2, 0.6, 0.2]]
    )
    labels = [0, 1, 1, 1]

    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    bins = reliability_bins(probabilities, labels)
    assert sum(bins.counts) == 4
    assert len(bins.counts) == 15
    assert [count for count in bins.counts if count] == [2, 2]
    # The class 'normal', one-vs-rest: probabilities 0.9, 0.9 (one right) and 0.2, 0.2 (never):
    # |0.5 - 0.9| * 2/4 + |0 - 0.2| * 2/4 = 0.3.
    assert expected_calibration_error(probabilities, labels, class_index=0) == pytest.approx(0.3)


def test_brier_by_hand() -> None:
    assert brier_score(np.eye(3), [0, 1, 2]) == 0.0
    assert brier_score(np.full((3, 3), 1 / 3), [0, 1, 2]) == pytest.approx(2 / 3)
    assert brier_score(np.eye(3)[[1]], [0]) == pytest.approx(2.0)
    assert brier_score(np.eye(3)[[1]], [0], class_index=0) == pytest.approx(1.0)
    assert brier_score(np.eye(3)[[1]], [0], class_index=2) == 0.0


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        (np.ones(3), [0], "images, classes"),
        (np.full((2, 3), np.nan), [0, 1], "finite"),
        (np.full((2, 3), 1 / 3), [0], "labels"),
        (np.full((2, 3), 1 / 3), [0, 3], "class indices"),
    ],
)
def test_bad_input_is_refused(probabilities: np.ndarray, labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probabilities, labels)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_apply_temperature_refuses_a_temperature_that_is_not_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(np.full((1, 3), 1 / 3), temperature)


def test_fit_temperature_refuses_an_empty_split() -> None:
    with pytest.raises(ValueError, match="no images"):
        fit_temperature(np.zeros((0, 3)), [])


def test_measure_names_every_class() -> None:
    probabilities, labels = _overconfident(300, 2.0)
    measures = measure(probabilities, labels, CLASSES).to_json()
    assert measures["images"] == 300
    assert set(measures["per_class_ece"]) == set(CLASSES)
    assert set(measures["per_class_brier"]) == set(CLASSES)
    assert 0 <= measures["ece"] <= 1
    assert 0 <= measures["brier"] <= 2


def test_reliability_diagram_is_a_png() -> None:
    probabilities, labels = _overconfident(500, 2.5)
    calibrated = apply_temperature(probabilities, 2.5)

    png = plot_reliability_diagram(
        reliability_bins(probabilities, labels),
        reliability_bins(calibrated, labels),
        ece_before=expected_calibration_error(probabilities, labels),
        ece_after=expected_calibration_error(calibrated, labels),
        temperature=2.5,
        title="test",
    )

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_a_split_that_cannot_pin_the_temperature_down_runs_to_the_range_end() -> None:
    # Every answer right and already confident: the NLL falls as T falls, to the range's end.
    probabilities = np.eye(3)[[0, 1, 2] * 4] * 0.9 + 0.1 / 3
    temperature = fit_temperature(probabilities, [0, 1, 2] * 4)

    assert at_range_end(temperature)
    assert not at_range_end(1.0)
    assert not at_range_end(fit_temperature(*_overconfident(2_000, 2.0)))


def test_refer_threshold_is_the_lowest_confidence_whose_kept_answers_reach_the_target() -> None:
    # Confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (right), 0.5 (wrong).
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.3, 0.2]]
    )
    labels = [0, 0, 1, 0, 2]

    assert refer_threshold(probabilities, labels, 1.0).threshold == pytest.approx(0.8)
    # 3 of 4 kept right at 0.6: 0.75 reached there, and not lower (3 of 5).
    chosen = refer_threshold(probabilities, labels, 0.75)
    assert chosen.threshold == pytest.approx(0.6)
    assert (chosen.coverage, chosen.accuracy, chosen.referred_accuracy) == (0.8, 0.75, 0.0)
    assert chosen.reached
    # Reached with every answer kept: never refer.
    assert refer_threshold(probabilities, labels, 0.6).threshold == 0.0


def test_refer_threshold_never_cuts_between_equal_confidences() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05]] * 2 + [[0.8, 0.1, 0.1]] * 2)
    labels = [0, 1, 0, 0]  # the two 0.9 answers: one wrong

    chosen = refer_threshold(probabilities, labels, 0.75)

    assert chosen.threshold == 0.0
    assert refer_threshold(probabilities, labels, 0.9).reached is False


def test_refer_threshold_unreachable_refers_everything_below_certainty() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])
    chosen = refer_threshold(probabilities, [1, 2], 0.95)

    assert (chosen.threshold, chosen.coverage, chosen.accuracy, chosen.reached) == (
        1.0,
        0.0,
        None,
        False,
    )


def test_selective_on_a_calibrated_model_keeps_fewer_but_better_answers() -> None:
    probabilities, labels = _overconfident(4_000, 1.0, seed=3)
    overall = selective(probabilities, labels, 0.0)
    chosen = refer_threshold(probabilities[:2_000], labels[:2_000], 0.9)
    held_out = selective(probabilities[2_000:], labels[2_000:], chosen.threshold)

    assert overall.coverage == 1.0
    assert overall.accuracy is not None
    assert overall.accuracy < 0.8
    assert 0.05 < held_out.coverage < 0.9
    assert held_out.accuracy is not None
    assert held_out.accuracy > 0.85
    assert held_out.referred_accuracy is not None
    assert held_out.referred_accuracy < held_out.accuracy
