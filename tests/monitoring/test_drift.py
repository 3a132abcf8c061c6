"""Drift from generated records, on a folder and on moto: a shifted version is caught against
both references, the same population is not; the summary, the plots, the cached training
reference and the Prometheus textfile."""

from __future__ import annotations

import io
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from monitoring.cli import EXIT_DRIFT, EXIT_OK, main
from monitoring.drift import DATASET_FILE, DriftOptions, run_drift
from storage import keys
from tests.monitoring.conftest import Monitored
from tests.monitoring.records import (
    MODEL_NAME,
    Population,
    films,
    make_record,
    model,
    publish_versions,
    shifted,
    spread,
    write_records,
    write_training_data,
)

DAY = date(2026, 12, 7)
NEXT_DAY = DAY + timedelta(days=1)
TRAINING_MIX = {"normal": 50, "covid": 20, "no-covid": 30}
PER_DAY = 150


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def history(empty_store: Monitored, tmp_path_factory: pytest.TempPathFactory) -> Monitored:
    """Version 1 (stable) answers the same population every day; version 2 (canary) appears
    on DAY with a shifted one. Both were trained on the same films, which the baseline users
    send too."""
    monitored = empty_store
    publish_versions(monitored.root, tmp_path_factory.mktemp("exports"), 2, stable=1, canary=2)
    training = films(sum(TRAINING_MIX.values()), sides=(128, 192), grey_mean=0.5, seed=3)
    write_training_data(monitored.root, monitored.db, ["run-1", "run-2"], training, TRAINING_MIX)
    baseline = Population(films=[facts for _, facts in training])
    other_films = films(24, sides=(64, 96), grey_mean=0.3, seed=4)
    drifted = shifted(baseline, [facts for _, facts in other_films])
    rng = random.Random(2026)
    records: list[dict[str, Any]] = []

    def day_of(day: date, version: int, population: Population, count: int) -> None:
        for index, moment in enumerate(spread(rng, _at(day), 23.5, count)):
            user = f"user-{version}-{index % 25}"
            records.append(make_record(rng, moment, user, model(version), population))

    for days_before in (3, 9, 16, 24):  # within the previous four weeks
        day_of(DAY - timedelta(days=days_before), 1, baseline, 60)
    day_of(DAY - timedelta(days=40), 1, drifted, 30)  # older than four weeks: not a reference
    day_of(DAY, 1, baseline, PER_DAY)
    day_of(DAY, 2, drifted, PER_DAY)
    day_of(NEXT_DAY, 1, baseline, PER_DAY)
    write_records(monitored.root, records)
    return monitored


def _png_ok(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_drift_catches_the_shifted_version_and_not_the_steady_one(history: Monitored) -> None:
    outcome = run_drift(history.root, history.db, MODEL_NAME, DriftOptions(day=DAY))

    assert outcome.drift_detected
    versions = outcome.summary["versions"]
    steady, moved = versions["1"], versions["2"]
    assert steady["records"] == moved["records"] == PER_DAY
    assert not steady["drift_detected"], steady["references"]
    for reference in ("training", "previous_weeks"):
        assert steady["references"][reference]["status"] == "ok"
        assert steady["references"][reference]["drifted"] == []
        assert all(value < 0.1 for value in steady["references"][reference]["psi"].values())
    # Version 2 is new: it is compared with every version's previous weeks.
    assert moved["references"]["previous_weeks"]["scope"] == "all_versions"
    assert set(moved["references"]["previous_weeks"]["drifted"]) >= {
        "class",
        "confidence",
        "decision",
        "width",
        "grey_mean",
    }
    assert set(moved["references"]["training"]["drifted"]) >= {"class", "width", "grey_mean"}
    assert moved["refusal_rate"] > steady["refusal_rate"]
    # The summary and one plot per version in the day's folder; the training data's summary
    # cached once per run.
    summary = history.root.get_json(keys.monitoring_day_file(DAY, "summary.json"))
    assert summary["drift_detected"] is True
    for version in (1, 2):
        width, height = _png_ok(
            history.root.get_bytes(keys.monitoring_day_file(DAY, f"version-{version}.png"))
        )
        assert (width > 1000, height > 800) == (True, True)
    reference = history.root.get_json(keys.monitoring_reference("run-1"))
    assert reference["class_counts"] == {"covid": 16, "no-covid": 24, "normal": 40}
    assert reference["sample"]["measured"] == 80


def test_drift_cli_exit_codes_and_metrics_textfile(
    history: Monitored, command_env: None, tmp_path: Path
) -> None:
    textfile = tmp_path / "metrics" / "drift.prom"

    def run(*arguments: str, now: datetime) -> int:
        command = ["drift", "--no-plots", "--weeks", "1", "--metrics-textfile", str(textfile)]
        return main([*command, *arguments], environ=history.environ, clock=lambda: now)

    assert run("--day", DAY.isoformat(), now=datetime(2026, 12, 20, tzinfo=UTC)) == EXIT_DRIFT
    text = textfile.read_text(encoding="utf-8")
    assert "xray_monitoring_drift_detected 1" in text
    assert (
        'xray_monitoring_drift_psi{feature="grey_mean",model_version="2",reference="training"}'
        in text
    )

    # The next day (yesterday, the default day) only version 1 answers, as before: no drift.
    assert run(now=datetime(2026, 12, 9, 1, 30, tzinfo=UTC)) == EXIT_OK
    assert "xray_monitoring_drift_detected 0" in textfile.read_text(encoding="utf-8")
    assert not list(textfile.parent.glob(".*"))  # no temporary file left behind
    assert history.root.exists(keys.monitoring_day_file(NEXT_DAY, "summary.json"))


def test_drift_reference_name_is_the_training_jobs() -> None:
    outputs = pytest.importorskip("training_job.outputs")

    assert outputs.DATASET_FILE == DATASET_FILE
