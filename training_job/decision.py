"""Champion/challenger: promote the newly trained model only when it measurably wins.

Pure and TensorFlow-free (DESIGN.md decision 7). With a stable model, the candidate is promoted
when its macro-F1 beats the stable one's by at least the margin (a tie never replaces the
champion) and no class's F1 drops by more than the tolerance; both were evaluated on the same
test images. Without a stable model, the candidate must clear a minimum macro-F1. Where the
test split has lesion masks, the explanations are compared too: the candidate's pointing game
(the share of films whose Grad-CAM peak lies on the lesion) must not fall more than its
tolerance below the stable model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from training_job.metrics import ClassificationReport

__all__ = ["Check", "Decision", "PromotionPolicy", "Verdict", "decide"]

Verdict = Literal["promote", "keep"]
# Float noise must not turn an equal F1 into a "drop" (or a tiny gain into a win).
_EPSILON = 1e-9


@dataclass(frozen=True)
class PromotionPolicy:
    """The rules of a comparison; defaults are the job's defaults."""

    margin: float = 0.005
    per_class_tolerance: float = 0.05
    min_macro_f1: float = 0.6
    explanation_tolerance: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError("the promotion margin must lie in [0, 1]")
        if not 0.0 <= self.per_class_tolerance <= 1.0:
            raise ValueError("the per-class F1 tolerance must lie in [0, 1]")
        if not 0.0 <= self.min_macro_f1 <= 1.0:
            raise ValueError("the minimum macro-F1 must lie in [0, 1]")
        if not 0.0 <= self.explanation_tolerance <= 1.0:
            raise ValueError("the explanation tolerance must lie in [0, 1]")

    def to_json(self) -> dict[str, float]:
        return {
            "margin": self.margin,
            "per_class_tolerance": self.per_class_tolerance,
            "min_macro_f1": self.min_macro_f1,
            "explanation_tolerance": self.explanation_tolerance,
        }


@dataclass(frozen=True)
class Check:
    """One rule applied: its name, whether it passed, the numbers and a sentence."""

    name: str
    passed: bool
    value: float
    threshold: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]

    @property
    def promote(self) -> bool:
        return self.verdict == "promote"

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "checks": [check.to_json() for check in self.checks],
        }


def _first_model(candidate: ClassificationReport, policy: PromotionPolicy) -> Decision:
    passed = candidate.macro_f1 + _EPSILON >= policy.min_macro_f1
    check = Check(
        name="minimum_macro_f1",
        passed=passed,
        value=candidate.macro_f1,
        threshold=policy.min_macro_f1,
        detail=(
            f"candidate macro-F1 {candidate.macro_f1:.4f} "
            f"{'clears' if passed else 'is below'} the minimum {policy.min_macro_f1:.4f} "
            "for a first model"
        ),
    )
    if passed:
        return Decision("promote", f"no stable model yet; {check.detail}", (check,))
    return Decision("keep", f"no stable model yet, and the {check.detail}", (check,))


def decide(
    candidate: ClassificationReport,
    stable: ClassificationReport | None,
    policy: PromotionPolicy,
    *,
    stable_label: str = "stable",
    pointing_game: tuple[float, float] | None = None,
) -> Decision:
    """Whether `candidate` replaces `stable` (both evaluated on the same test images).

    `pointing_game`: (candidate, stable) on the same masked test films, when there are any.
    """
    if stable is None:
        return _first_model(candidate, policy)
    if candidate.classes != stable.classes:
        raise ValueError("the two reports do not share a class list")

    gain = candidate.macro_f1 - stable.macro_f1
    # A zero margin still asks for a real gain: a tie keeps the model already serving.
    beats = gain + _EPSILON >= policy.margin and gain > _EPSILON
    checks = [
        Check(
            name="macro_f1_margin",
            passed=beats,
            value=gain,
            threshold=policy.margin,
            detail=(
                f"candidate macro-F1 {candidate.macro_f1:.4f} vs {stable_label} "
                f"{stable.macro_f1:.4f}: {gain:+.4f} "
                f"({'at least' if beats else 'short of'} the margin {policy.margin:.4f})"
            ),
        )
    ]
    candidate_f1, stable_f1 = candidate.per_class_f1(), stable.per_class_f1()
    for name in stable.evaluated_classes():
        drop = stable_f1[name] - candidate_f1[name]
        within = drop <= policy.per_class_tolerance + _EPSILON
        checks.append(
            Check(
                name=f"per_class_f1:{name}",
                passed=within,
                value=drop,
                threshold=policy.per_class_tolerance,
                detail=(
                    f"F1 of {name} {candidate_f1[name]:.4f} vs {stable_f1[name]:.4f}: "
                    f"{'drop' if drop > 0 else 'change'} {abs(drop):.4f} "
                    f"({'within' if within else 'beyond'} the tolerance "
                    f"{policy.per_class_tolerance:.4f})"
                ),
            )
        )
    if pointing_game is not None:
        ours, theirs = pointing_game
        drop = theirs - ours
        within = drop <= policy.explanation_tolerance + _EPSILON
        checks.append(
            Check(
                name="explanation_pointing_game",
                passed=within,
                value=drop,
                threshold=policy.explanation_tolerance,
                detail=(
                    f"Grad-CAM pointing game {ours:.4f} vs {stable_label} {theirs:.4f}: "
                    f"{'drop' if drop > 0 else 'change'} {abs(drop):.4f} "
                    f"({'within' if within else 'beyond'} the tolerance "
                    f"{policy.explanation_tolerance:.4f})"
                ),
            )
        )
    failed = [check for check in checks if not check.passed]
    if not failed:
        reason = (
            f"the candidate wins: {checks[0].detail}; no class's F1 drops by more than "
            f"{policy.per_class_tolerance:.4f}"
        )
        return Decision("promote", reason, tuple(checks))
    reason = f"the {stable_label} model stays: " + "; ".join(check.detail for check in failed)
    return Decision("keep", reason, tuple(checks))
