"""Stable vs canary on live traffic, from the inference records; and the promotion helper.

Two sources in the records of a window:

- routed traffic: the callers the canary answers (`routed_to: canary`, model version = the
  canary) against the callers the stable model answers (model version = the stable). Different
  users, so the report compares distributions: class and decision mix, confidence, latency
  (`latency_ms.model` and `.total`), refusal and refer rates, and errors. A canary that failed
  on its server's side was replaced by the stable model for that request (`canary_fallback`):
  those count as canary errors.
- shadow answers: records with a `shadow` object, the same image answered by both. Agreement of
  the predicted classes (and of the decisions), the confusion matrix stable class x canary
  class, confidence deltas, the shadow call's latency; `error` and `late` shadows count as
  canary errors, `skipped` ones (the pool was busy) count for nothing.

Records exist only for answered requests, so a request the stable model failed leaves none: the
stable side's error rate is 0 by construction and the error check is on the canary's own rate.

The promotion helper promotes the canary only when every threshold given is met and the
registry still names the stable and canary versions the report compared: the canary becomes
stable through `ModelRegistry.promote(..., expected_stable=...)`, the same conditional write the
training job uses, so a promotion or rollback made meanwhile is never overridden.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from functions.records import iso_time
from model_contract.errors import StableChanged
from model_contract.registry import ModelRegistry
from monitoring.records import (
    CANARY,
    REFER,
    REFUSED,
    STABLE,
    RecordSet,
    confidence,
    decision,
    model_version,
    number,
    read_records,
    routed_to,
)
from monitoring.stats import categorical_psi, percentiles, rate, shares, summary
from storage import Store, keys

__all__ = [
    "CompareOutcome",
    "CompareStatus",
    "Thresholds",
    "build_report",
    "evaluate",
    "run_compare",
]

REPORT_FILE = "report.json"
CONFIDENCE_PLOT = "confidence.png"
CONFUSION_PLOT = "confusion.png"
LATENCY_PLOT = "latency.png"
_SHADOW_ERRORS = ("error", "late")


class CompareStatus(enum.Enum):
    OK = "ok"  # thresholds met (or none given); promoted when asked
    THRESHOLDS_NOT_MET = "thresholds_not_met"
    REGISTRY_CHANGED = "registry_changed"  # stable (or canary) is not the one compared
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Thresholds:
    """What the canary must meet; None: not checked. `min_samples` always is."""

    min_agreement: float | None = None
    max_error_rate_increase: float | None = None
    max_latency_p95_ratio: float | None = None
    max_refusal_rate_increase: float | None = None
    max_refer_rate_increase: float | None = None
    min_samples: int = 30

    def given(self) -> bool:
        return any(
            value is not None
            for value in (
                self.min_agreement,
                self.max_error_rate_increase,
                self.max_latency_p95_ratio,
                self.max_refusal_rate_increase,
                self.max_refer_rate_increase,
            )
        )


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass
class CompareOutcome:
    status: CompareStatus
    message: str
    report: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    promoted: bool = False


# -- the report ---------------------------------------------------------------------------------


def _class_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for record in records:
        for name in record.get("class_names") or ():
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


def _values(records: Sequence[Mapping[str, Any]], *path: str) -> list[float]:
    return [value for record in records if (value := number(record, *path)) is not None]


def _confidences(answers: Sequence[Mapping[str, Any]]) -> list[float]:
    return [value for answer in answers if (value := confidence(answer)) is not None]


def _side(records: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """One side of the routed traffic: what its answers and latencies look like."""
    decisions = [decision(record) for record in records]
    answered = [d for d in decisions if d not in (REFER, REFUSED)]
    return {
        "count": len(records),
        "users": len({record.get("user_id") for record in records}),
        "class_mix": shares((str(r.get("predicted_class")) for r in records), classes),
        "decision_mix": shares(decisions, [*classes, REFER, REFUSED]),
        "refusal_rate": rate(decisions.count(REFUSED), len(decisions)),
        "refer_rate": rate(decisions.count(REFER), len(decisions)),
        "answered": len(answered),
        "confidence": summary(_confidences(records)),
        "latency_ms": {
            "model": percentiles(_values(records, "latency_ms", "model")),
            "total": percentiles(_values(records, "latency_ms", "total")),
        },
    }


def _shadow_section(
    records: Sequence[Mapping[str, Any]], canary_version: int, classes: Sequence[str]
) -> tuple[dict[str, Any], list[tuple[Mapping[str, Any], Mapping[str, Any]]]]:
    """The shadow answers beside the stable ones; also the (record, shadow) pairs answered."""
    statuses: Counter[str] = Counter()
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for record in records:
        shadow = record["shadow"]
        status = str(shadow.get("status"))
        if status == "ok":
            if model_version(shadow) != canary_version:
                statuses["other_version"] += 1
                continue
            pairs.append((record, shadow))
        statuses[status] += 1
    index = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    agree = decisions_agree = 0
    deltas: list[float] = []
    for record, shadow in pairs:
        stable_class, canary_class = record.get("predicted_class"), shadow.get("predicted_class")
        if stable_class in index and canary_class in index:
            matrix[index[str(stable_class)]][index[str(canary_class)]] += 1
        agree += stable_class == canary_class
        decisions_agree += decision(record) == decision(shadow)
        stable_confidence, canary_confidence = confidence(record), confidence(shadow)
        if stable_confidence is not None and canary_confidence is not None:
            deltas.append(canary_confidence - stable_confidence)
    attempts = statuses["ok"] + sum(statuses[s] for s in _SHADOW_ERRORS)
    stable_records = [record for record, _ in pairs]
    shadows = [shadow for _, shadow in pairs]
    section = {
        "records": len(records),
        "statuses": dict(sorted(statuses.items())),
        "answered": len(pairs),
        "agreement_rate": rate(agree, len(pairs)),
        "decision_agreement_rate": rate(decisions_agree, len(pairs)),
        "confusion": {
            "rows": "stable class",
            "columns": "canary class",
            "classes": list(classes),
            "matrix": matrix,
        },
        "confidence": {
            "stable": summary(_confidences(stable_records)),
            "canary": summary(_confidences(shadows)),
            "delta": summary(deltas),
        },
        "refusal_rate": {
            "stable": rate(sum(bool(_ood_reason(r)) for r in stable_records), len(pairs)),
            "canary": rate(sum(bool(s.get("ood_reason")) for s in shadows), len(pairs)),
        },
        "refer_rate": {
            "stable": rate(sum(decision(r) == REFER for r in stable_records), len(pairs)),
            "canary": rate(sum(decision(s) == REFER for s in shadows), len(pairs)),
        },
        "latency_ms": {
            "stable_model": percentiles(_values(stable_records, "latency_ms", "model")),
            "canary": percentiles(_values(shadows, "latency_ms")),
        },
        "errors": sum(statuses[s] for s in _SHADOW_ERRORS),
        "error_rate": rate(sum(statuses[s] for s in _SHADOW_ERRORS), attempts),
    }
    return section, pairs


def _ood_reason(record: Mapping[str, Any]) -> Any:
    ood = record.get("ood")
    return ood.get("reason") if isinstance(ood, Mapping) else None


def build_report(
    found: RecordSet, *, model_name: str, stable_version: int, canary_version: int
) -> dict[str, Any]:
    """The comparison of the stable and canary versions over the records of a window."""
    stable: list[dict[str, Any]] = []
    canary: list[dict[str, Any]] = []
    fallbacks: list[dict[str, Any]] = []
    shadowed: list[dict[str, Any]] = []
    for record in found.records:
        version, label = model_version(record), routed_to(record)
        if label == CANARY and version == canary_version:
            canary.append(record)
        elif label == STABLE and version == stable_version:
            if isinstance(record.get("canary_fallback"), Mapping):
                fallbacks.append(record)
            else:
                stable.append(record)
            shadow = record.get("shadow")
            if isinstance(shadow, Mapping) and shadow.get("label", CANARY) == CANARY:
                shadowed.append(record)
    classes = _class_names(found.records)
    shadow, _ = _shadow_section(shadowed, canary_version, classes)
    routed_stable, routed_canary = _side(stable, classes), _side(canary, classes)
    routed_canary["fallbacks"] = len(fallbacks)
    routed_canary["error_rate"] = rate(len(fallbacks), len(canary) + len(fallbacks))
    routed_stable["error_rate"] = 0.0 if stable else None
    errors = len(fallbacks) + shadow["errors"]
    attempts = len(canary) + len(fallbacks) + shadow["answered"] + shadow["errors"]
    return {
        "schema": 1,
        "model": model_name,
        "stable_version": stable_version,
        "canary_version": canary_version,
        "window": {"start": iso_time(found.start), "stop": iso_time(found.stop)},
        "records": {
            "read": len(found.records),
            "users": found.users,
            "skipped": dict(sorted(found.skipped.items())),
        },
        "routed": {
            "stable": routed_stable,
            "canary": routed_canary,
            "class_mix_psi": (
                categorical_psi(routed_stable["class_mix"], routed_canary["class_mix"])
                if stable and canary
                else None
            ),
        },
        "shadow": shadow,
        "canary": {
            "samples": len(canary) + shadow["answered"],
            "errors": errors,
            "attempts": attempts,
            "error_rate": rate(errors, attempts),
        },
        "stable": {
            "samples": len(stable) + len(fallbacks),
            # Records exist only for answered requests: a failed stable request leaves none.
            "error_rate": 0.0,
        },
    }


# -- thresholds ---------------------------------------------------------------------------------


def _source(report: Mapping[str, Any]) -> str:
    """Which comparison the rate checks read: routed traffic when the canary answered callers,
    else the shadow answers."""
    return "routed" if report["routed"]["canary"]["count"] else "shadow"


def _rates(report: Mapping[str, Any], name: str) -> tuple[float | None, float | None]:
    if _source(report) == "routed":
        routed = report["routed"]
        return routed["stable"][name], routed["canary"][name]
    return report["shadow"][name]["stable"], report["shadow"][name]["canary"]


def _at_most(name: str, value: float | None, limit: float, what: str) -> Check:
    if value is None:
        return Check(name, None, limit, False, f"{what}: no data")
    return Check(name, round(value, 6), limit, value <= limit, f"{what} {value:.4f} <= {limit}")


def evaluate(report: Mapping[str, Any], thresholds: Thresholds) -> list[Check]:
    """The checks the thresholds ask for, each with its value and verdict."""
    checks = []
    samples = report["canary"]["samples"], report["stable"]["samples"]
    checks.append(
        Check(
            "min_samples",
            float(min(samples)),
            float(thresholds.min_samples),
            min(samples) >= thresholds.min_samples,
            f"canary answers {samples[0]}, stable answers {samples[1]} >= {thresholds.min_samples}",
        )
    )
    if thresholds.min_agreement is not None:
        value = report["shadow"]["agreement_rate"]
        checks.append(
            Check(
                "min_agreement",
                value,
                thresholds.min_agreement,
                value is not None and value >= thresholds.min_agreement,
                "shadow answers: no data"
                if value is None
                else f"shadow agreement {value:.4f} >= {thresholds.min_agreement}",
            )
        )
    if thresholds.max_error_rate_increase is not None:
        canary_rate = report["canary"]["error_rate"]
        increase = None if canary_rate is None else canary_rate - report["stable"]["error_rate"]
        checks.append(
            _at_most(
                "max_error_rate_increase",
                increase,
                thresholds.max_error_rate_increase,
                "canary error rate - stable error rate",
            )
        )
    if thresholds.max_latency_p95_ratio is not None:
        source = _source(report)
        if source == "routed":
            stable_p95 = report["routed"]["stable"]["latency_ms"]["model"]["p95"]
            canary_p95 = report["routed"]["canary"]["latency_ms"]["model"]["p95"]
        else:
            stable_p95 = report["shadow"]["latency_ms"]["stable_model"]["p95"]
            canary_p95 = report["shadow"]["latency_ms"]["canary"]["p95"]
        ratio = canary_p95 / stable_p95 if canary_p95 is not None and stable_p95 else None
        checks.append(
            _at_most(
                "max_latency_p95_ratio",
                ratio,
                thresholds.max_latency_p95_ratio,
                f"canary/stable p95 model latency ({source})",
            )
        )
    for name, field_name, limit in (
        ("max_refusal_rate_increase", "refusal_rate", thresholds.max_refusal_rate_increase),
        ("max_refer_rate_increase", "refer_rate", thresholds.max_refer_rate_increase),
    ):
        if limit is None:
            continue
        stable_rate, canary_rate = _rates(report, field_name)
        increase = None if stable_rate is None or canary_rate is None else canary_rate - stable_rate
        checks.append(
            _at_most(name, increase, limit, f"canary - stable {field_name} ({_source(report)})")
        )
    return checks


# -- the run ------------------------------------------------------------------------------------


def _write_plots(
    store: Store, moment: datetime, report: Mapping[str, Any], found: RecordSet
) -> list[str]:
    from monitoring import plots

    stable_version, canary_version = report["stable_version"], report["canary_version"]
    routed: dict[str, list[float]] = {STABLE: [], CANARY: []}
    latency: dict[str, list[float]] = {}
    shadow_stable: list[float] = []
    shadow_canary: list[float] = []
    for record in found.records:
        version, label = model_version(record), routed_to(record)
        mine = (label == CANARY and version == canary_version) or (
            label == STABLE and version == stable_version and "canary_fallback" not in record
        )
        value, model_ms = confidence(record), number(record, "latency_ms", "model")
        if mine and value is not None:
            routed[label].append(value)
        if mine and model_ms is not None:
            latency.setdefault(f"{label} v{version} (routed)", []).append(model_ms)
        shadow = record.get("shadow")
        if (
            label == STABLE
            and isinstance(shadow, Mapping)
            and shadow.get("status") == "ok"
            and model_version(shadow) == canary_version
        ):
            stable_value, canary_value = value, confidence(shadow)
            if stable_value is not None and canary_value is not None:
                shadow_stable.append(stable_value)
                shadow_canary.append(canary_value)
            shadow_ms = number(shadow, "latency_ms")
            if shadow_ms is not None:
                latency.setdefault(f"canary v{canary_version} (shadow)", []).append(shadow_ms)
    title = f"{report['model']}: stable v{stable_version} vs canary v{canary_version}"
    figures = {
        CONFIDENCE_PLOT: plots.confidence_histograms(
            {
                f"routed: stable v{stable_version}": routed[STABLE],
                f"routed: canary v{canary_version}": routed[CANARY],
            },
            {
                f"shadow: stable v{stable_version}": shadow_stable,
                f"shadow: canary v{canary_version}": shadow_canary,
            },
            title=title,
        ),
        CONFUSION_PLOT: plots.confusion_heatmap(
            report["shadow"]["confusion"]["matrix"],
            report["shadow"]["confusion"]["classes"],
            title=f"{title}: the same images (shadow)",
            rows=f"stable v{stable_version}",
            columns=f"canary v{canary_version}",
        ),
        LATENCY_PLOT: plots.latency_cdfs(latency, title=f"{title}: model latency"),
    }
    written = []
    for name, data in figures.items():
        key = keys.monitoring_compare_file(moment, name)
        store.put(key, data, content_type="image/png")
        written.append(key)
    return written


def run_compare(
    store: Store,
    model_name: str,
    start: datetime,
    stop: datetime,
    thresholds: Thresholds,
    *,
    promote: bool = False,
    stable_version: int | None = None,
    canary_version: int | None = None,
    plots: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> CompareOutcome:
    """Compare, write the report and plots, and promote the canary when asked and earned."""
    registry = ModelRegistry(store, model_name)
    state = registry.load()
    stable = stable_version if stable_version is not None else state.stable
    canary = canary_version if canary_version is not None else state.canary
    if stable is None or canary is None:
        return CompareOutcome(
            CompareStatus.NO_DATA,
            f"{model_name}: nothing to compare (stable {stable}, canary {canary}); name the "
            "versions with --stable-version/--canary-version or label a canary",
        )
    found = read_records(store, start, stop, model_name=model_name)
    report = build_report(
        found, model_name=model_name, stable_version=stable, canary_version=canary
    )
    checks = evaluate(report, thresholds)
    moment = clock()
    report["created_at"] = iso_time(moment)
    report["registry_at_start"] = {"stable": state.stable, "canary": state.canary}
    report["checks"] = [check.to_json() for check in checks]
    no_data = report["canary"]["samples"] + report["canary"]["errors"] == 0 or (
        report["stable"]["samples"] == 0
    )
    failed = [check for check in checks if not check.passed]
    if no_data:
        outcome = CompareOutcome(
            CompareStatus.NO_DATA,
            f"no records of both stable v{stable} and canary v{canary} between "
            f"{iso_time(found.start)} and {iso_time(found.stop)}",
        )
    elif failed:
        outcome = CompareOutcome(
            CompareStatus.THRESHOLDS_NOT_MET,
            "thresholds not met: " + "; ".join(check.detail for check in failed),
        )
    elif promote:
        outcome = _promote(registry, stable, canary)
    else:
        outcome = CompareOutcome(
            CompareStatus.OK,
            "thresholds met" if thresholds.given() else "compared (no thresholds given)",
        )
    report["verdict"] = outcome.status.value
    report["message"] = outcome.message
    report["promotion"] = {"asked": promote, "promoted": outcome.promoted}
    outcome.report = report
    outcome.written = _write_plots(store, moment, report, found) if plots else []
    report_key = keys.monitoring_compare_file(moment, REPORT_FILE)
    report["plots"] = list(outcome.written)
    store.put_json(report_key, report)
    outcome.written.insert(0, report_key)
    return outcome


def _promote(registry: ModelRegistry, stable: int, canary: int) -> CompareOutcome:
    current = registry.load()
    if current.stable != stable or current.canary != canary:
        return CompareOutcome(
            CompareStatus.REGISTRY_CHANGED,
            f"not promoted: the registry names stable {current.stable} and canary "
            f"{current.canary}, the report compared stable {stable} and canary {canary}",
        )
    try:
        # Checked again inside the registry's own conditional write.
        registry.promote(canary, "stable", expected_stable=stable)
    except StableChanged as exc:
        return CompareOutcome(
            CompareStatus.REGISTRY_CHANGED,
            f"not promoted: stable changed to {exc.current} since the comparison of {stable}",
        )
    return CompareOutcome(
        CompareStatus.OK,
        f"thresholds met: canary version {canary} promoted to stable (was {stable})",
        promoted=True,
    )
