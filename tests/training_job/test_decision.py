"""Champion/challenger rules: margin on macro-F1, no per-class collapse, a minimum for a first
model; the decision says why."""

from __future__ import annotations

import numpy as np
import pytest

from training_job.decision import PromotionPolicy, decide
from training_job.metrics import ClassificationReport, classification_report

CLASSES = ("normal", "covid", "no-covid")


def _report(correct_per_class: tuple[int, int, int], per_class: int = 20) -> ClassificationReport:
    """A report where class i gets correct_per_class[i] of its images right (the rest go to the
    next class)."""
    labels, predicted = [], []
    for index, correct in enumerate(correct_per_class):
        labels += [index] * per_class
        predicted += [index] * correct + [(index + 1) % 3] * (per_class - correct)
    probabilities = np.full((len(predicted), 3), 0.1)
    probabilities[np.arange(len(predicted)), predicted] = 0.8
    return classification_report(labels, probabilities, CLASSES)


POLICY = PromotionPolicy(margin=0.01, per_class_tolerance=0.05, min_macro_f1=0.6)


def test_decide_first_model_above_minimum_promoted() -> None:
    decision = decide(_report((18, 17, 16)), None, POLICY)

    assert decision.promote
    assert [check.name for check in decision.checks] == ["minimum_macro_f1"]


def test_decide_first_model_below_minimum_kept() -> None:
    decision = decide(_report((10, 5, 5)), None, POLICY)

    assert decision.verdict == "keep"
    assert decision.failed()[0].name == "minimum_macro_f1"
    assert "minimum" in decision.reason


def test_decide_better_everywhere_promoted() -> None:
    decision = decide(_report((19, 19, 18)), _report((16, 15, 15)), POLICY)

    assert decision.promote
    assert decision.failed() == []


def test_decide_gain_below_margin_kept() -> None:
    stable = _report((16, 15, 15))
    slightly_better = _report((16, 15, 16))  # about +0.016 macro-F1
    policy = PromotionPolicy(margin=0.05)

    decision = decide(slightly_better, stable, policy)

    assert decision.verdict == "keep"
    assert [check.name for check in decision.failed()] == ["macro_f1_margin"]


def test_decide_tie_with_zero_margin_keeps_the_champion() -> None:
    same = _report((16, 15, 15))

    decision = decide(same, _report((16, 15, 15)), PromotionPolicy(margin=0.0))

    assert decision.verdict == "keep"


def test_decide_one_class_collapses_kept_and_names_the_class() -> None:
    stable = _report((15, 15, 15))
    collapsed_covid = _report((20, 10, 20))  # higher macro-F1, covid F1 falls

    decision = decide(collapsed_covid, stable, POLICY)

    assert collapsed_covid.macro_f1 > stable.macro_f1 + POLICY.margin
    assert decision.verdict == "keep"
    assert [check.name for check in decision.failed()] == ["per_class_f1:covid"]
    assert "covid" in decision.reason


def test_decide_worse_challenger_kept_with_every_failed_rule_in_the_reason() -> None:
    decision = decide(_report((5, 5, 5)), _report((18, 18, 18)), POLICY, stable_label="v3")

    failed = {check.name for check in decision.failed()}
    assert failed == {
        "macro_f1_margin",
        "per_class_f1:normal",
        "per_class_f1:covid",
        "per_class_f1:no-covid",
    }
    assert decision.reason.startswith("the v3 model stays")
    assert decision.to_json()["verdict"] == "keep"


@pytest.mark.parametrize(
    "values",
    [
        {"margin": -0.1},
        {"per_class_tolerance": 1.5},
        {"min_macro_f1": 2.0},
        {"explanation_tolerance": -0.5},
    ],
)
def test_promotion_policy_out_of_range_raises(values: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PromotionPolicy(**values)


def test_decide_better_f1_but_worse_explanations_is_kept_with_the_reason() -> None:
    decision = decide(
        _report((19, 19, 19)),
        _report((15, 15, 15)),
        PromotionPolicy(),
        stable_label="stable version 3",
        pointing_game=(0.55, 0.85),
    )

    assert decision.verdict == "keep"
    (failed,) = decision.failed()
    assert failed.name == "explanation_pointing_game"
    assert failed.value == pytest.approx(0.30)
    assert "Grad-CAM pointing game 0.5500 vs stable version 3 0.8500" in decision.reason
    assert "beyond the tolerance 0.1000" in decision.reason


def test_decide_explanations_within_the_tolerance_or_better_promote() -> None:
    for pointing in ((0.80, 0.85), (0.95, 0.85)):
        decision = decide(
            _report((19, 19, 19)), _report((15, 15, 15)), PromotionPolicy(), pointing_game=pointing
        )
        assert decision.verdict == "promote"
        assert decision.checks[-1].name == "explanation_pointing_game"


def test_decide_without_masks_has_no_explanation_check() -> None:
    decision = decide(_report((19, 19, 19)), _report((15, 15, 15)), PromotionPolicy())
    assert "explanation_pointing_game" not in [check.name for check in decision.checks]
