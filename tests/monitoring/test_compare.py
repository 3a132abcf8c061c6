"""Stable vs canary from generated records, on a folder and on moto: the report's numbers, its
plots, the thresholds, and a promotion that happens only when earned and still valid."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from model_contract.registry import ModelRegistry
from monitoring.cli import (
    EXIT_NO_DATA,
    EXIT_OK,
    EXIT_THRESHOLDS_NOT_MET,
    EXIT_USAGE,
    main,
)
from monitoring.compare import CompareStatus, Thresholds, run_compare
from storage import Store, keys
from tests.monitoring.conftest import Monitored
from tests.monitoring.records import (
    MODEL_NAME,
    Population,
    add_shadow,
    make_record,
    model,
    publish_versions,
    spread,
    write_records,
)
from tests.stores import InterceptingStore

NOW = datetime(2026, 12, 8, 6, 0, tzinfo=UTC)
DAY = datetime(2026, 12, 7, tzinfo=UTC)
STABLE, CANARY, OTHER = 1, 2, 3
SHADOWED, ROUTED_STABLE, ROUTED_CANARY = 240, 120, 90
AGREEMENT = 0.9


def _records() -> list[dict[str, Any]]:
    """A day of traffic: stable users (some shadowed by the canary, some of whose canary calls
    fell back to stable), canary users, a migrated record and one of another model."""
    rng = random.Random(19)
    records = []
    times = iter(spread(rng, DAY, 23, SHADOWED + ROUTED_STABLE + ROUTED_CANARY + 10))
    for index in range(SHADOWED):
        record = make_record(rng, next(times), f"user-{index % 30}", model(STABLE))
        status = "ok" if index % 40 else ("error" if index % 80 else "late")
        records.append(add_shadow(rng, record, model(CANARY), agreement=AGREEMENT, status=status))
    for index in range(ROUTED_STABLE):
        record = make_record(rng, next(times), f"user-{index % 30}", model(STABLE))
        records.append(record | {"routed_to": "stable"})
    slow = Population(latency_ms=(60.0, 0.3))
    for index in range(ROUTED_CANARY):
        user = f"canary-user-{index % 10}"
        records.append(make_record(rng, next(times), user, model(CANARY), slow, routed_to="canary"))
    for index in range(6):
        record = make_record(rng, next(times), f"canary-user-{index}", model(STABLE))
        records.append(record | {"canary_fallback": {"error": "model_timeout"}})
    legacy = make_record(rng, next(times), "old-user", {"name": "legacy", "version": 0})
    other = make_record(rng, next(times), "user-1", {"name": "other", "version": 1})
    records += [legacy | {"migrated": {"source": "history.csv", "line": 2}}, other]
    return records


@pytest.fixture(scope="module")
def stored(empty_store: Monitored, tmp_path_factory: pytest.TempPathFactory) -> Monitored:
    folder = tmp_path_factory.mktemp("exports")
    publish_versions(empty_store.root, folder, 3, stable=STABLE, canary=CANARY)
    write_records(empty_store.root, _records())
    empty_store.root.put(keys.LEGACY_HISTORY_FILE, b"id,user\n")  # the original's: skipped
    return empty_store


@pytest.fixture
def traffic(stored: Monitored, command_env: None) -> Monitored:
    """The day's traffic, with stable 1 and canary 2 labelled (as a test may have changed)."""
    registry = ModelRegistry(stored.root, MODEL_NAME)
    registry.promote(STABLE, "stable")
    registry.promote(CANARY, "canary")
    return stored


def _cli(monitored: Monitored, *arguments: str) -> int:
    command = ["compare", "--no-plots", *arguments]
    return main(command, environ=monitored.environ, clock=lambda: NOW)


def _png_size(store: Store, key: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(store.get_bytes(key))) as image:
        image.load()
        return image.size


def test_compare_reports_both_sources_with_plots(traffic: Monitored) -> None:
    outcome = run_compare(
        traffic.root,
        MODEL_NAME,
        DAY,
        DAY + timedelta(days=1),
        Thresholds(),
        clock=lambda: NOW,
    )

    report = outcome.report
    assert outcome.status == CompareStatus.OK
    assert (report["stable_version"], report["canary_version"]) == (STABLE, CANARY)
    assert report["records"]["skipped"] == {"legacy": 1, "other_model": 1}
    shadow = report["shadow"]
    assert shadow["statuses"] == {"error": 3, "late": 3, "ok": SHADOWED - 6}
    assert shadow["answered"] == SHADOWED - 6
    assert shadow["agreement_rate"] == pytest.approx(AGREEMENT, abs=0.05)
    matrix = shadow["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == SHADOWED - 6
    agreed = sum(matrix[i][i] for i in range(3))
    assert agreed / (SHADOWED - 6) == pytest.approx(shadow["agreement_rate"])
    routed = report["routed"]
    assert routed["stable"]["count"] == SHADOWED + ROUTED_STABLE
    assert routed["canary"]["count"] == ROUTED_CANARY
    assert routed["canary"]["fallbacks"] == 6
    assert (
        routed["canary"]["latency_ms"]["model"]["p95"]
        > (routed["stable"]["latency_ms"]["model"]["p95"])
    )
    assert report["canary"]["errors"] == 6 + 6
    expected_rate = 12 / (ROUTED_CANARY + 6 + SHADOWED)
    assert report["canary"]["error_rate"] == pytest.approx(expected_rate, abs=1e-6)
    # The report and its plots, readable PNGs.
    prefix = keys.monitoring_compare_file(NOW, "report.json").rsplit("/", 1)[0]
    assert outcome.written[0] == f"{prefix}/report.json"
    assert traffic.root.get_json(outcome.written[0])["verdict"] == "ok"
    for name in ("confidence.png", "confusion.png", "latency.png"):
        width, height = _png_size(traffic.root, f"{prefix}/{name}")
        assert (width > 500, height > 400) == (True, True)


def test_compare_cli_promotes_only_when_thresholds_are_met(traffic: Monitored) -> None:
    registry = ModelRegistry(traffic.root, MODEL_NAME)
    window = ["--since", DAY.isoformat(), "--until", (DAY + timedelta(days=1)).isoformat()]

    assert _cli(traffic, *window, "--promote") == EXIT_USAGE  # promote needs a threshold
    strict = _cli(
        traffic, *window, "--min-agreement", "0.99", "--max-latency-p95-ratio", "1.05", "--promote"
    )
    assert strict == EXIT_THRESHOLDS_NOT_MET
    assert (registry.load().stable, registry.load().canary) == (STABLE, CANARY)
    report = traffic.root.get_json(keys.monitoring_compare_file(NOW, "report.json"))
    checks = {check["name"]: check["passed"] for check in report["checks"]}
    assert checks == {"min_samples": True, "min_agreement": False, "max_latency_p95_ratio": False}
    assert report["promotion"] == {"asked": True, "promoted": False}

    met = _cli(
        traffic,
        *window,
        "--min-agreement",
        "0.8",
        "--max-error-rate-increase",
        "0.1",
        "--max-latency-p95-ratio",
        "2.5",
        "--max-refer-rate-increase",
        "0.1",
        "--promote",
    )

    assert met == EXIT_OK
    state = registry.load()
    assert (state.stable, state.canary) == (CANARY, None)
    assert STABLE in state.previous_stable
    # Nothing left to compare: no canary.
    assert _cli(traffic, *window, "--min-agreement", "0.8", "--promote") == EXIT_NO_DATA


def test_compare_no_records_in_the_window_is_no_data(traffic: Monitored) -> None:
    code = _cli(traffic, "--since", "2020-01-01", "--until", "2020-01-02")

    assert code == EXIT_NO_DATA


def test_compare_refuses_to_promote_when_stable_changed_meanwhile(traffic: Monitored) -> None:
    # A competitor promotes another version between the report and the registry write.
    store = InterceptingStore(traffic.root)
    registry_key = keys.model_registry(MODEL_NAME)
    competitor = ModelRegistry(traffic.root, MODEL_NAME)

    def promote_first(key: str, options: dict[str, Any]) -> None:
        if key == registry_key and store.before_put is not None:
            store.before_put = None
            competitor.promote(OTHER, "stable")

    store.before_put = promote_first

    outcome = run_compare(
        store,
        MODEL_NAME,
        DAY,
        DAY + timedelta(days=1),
        Thresholds(min_agreement=0.8),
        promote=True,
        clock=lambda: NOW,
    )

    assert outcome.status == CompareStatus.REGISTRY_CHANGED
    assert not outcome.promoted
    state = competitor.load()
    assert (state.stable, state.canary) == (OTHER, CANARY)
    assert store.get_json(outcome.written[0])["verdict"] == "registry_changed"
