"""The training run's metrics file (training_job/run_metrics.py): its text format, and the
command line writing it at the end of a run, failed or not (the job itself is stubbed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from training_job import cli
from training_job.job import JobResult
from training_job.run_metrics import RunMetricsSettings, render


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_run_metrics_render_parses_as_prometheus_text() -> None:
    text = render(
        "cnn_vit",
        verdict="promote",
        started=100.0,
        finished=160.5,
        promoted=True,
        stable_version=2,
        published_version=2,
        metrics={"candidate": {"macro_f1": 0.91, "per_class": {"x": 1}}, "stable": None},
    )
    samples = _samples(text)
    model = (("model_name", "cnn_vit"),)
    assert samples[("xray_training_run_duration_seconds", model)] == 60.5
    assert samples[("xray_training_run_success", model)] == 1
    assert samples[("xray_training_run_promoted", model)] == 1
    assert samples[("xray_training_run_verdict", (*model, ("verdict", "promote")))] == 1
    assert samples[("xray_training_run_verdict", (*model, ("verdict", "keep")))] == 0
    assert samples[("xray_training_stable_version", model)] == 2
    key = ("xray_training_model_metric", (("metric", "macro_f1"), *model, ("role", "candidate")))
    assert samples[key] == 0.91
    assert not any("per_class" in str(labels) for _, labels in samples)


def test_run_metrics_settings() -> None:
    assert RunMetricsSettings.from_env({}).textfile is None
    assert RunMetricsSettings.from_env({"METRICS_TEXTFILE": "/m/x.prom"}).textfile == Path(
        "/m/x.prom"
    )


@pytest.mark.parametrize("fails", [False, True])
def test_run_metrics_written_by_the_command_line_whatever_the_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    def fake_run_job(settings: Any, options: Any, *, stream: Any = None) -> JobResult:
        if fails:
            raise RuntimeError("the database is empty")
        return JobResult("run-1", "keep", False, "no gain", stable_version=1)

    monkeypatch.setattr(cli, "run_job", fake_run_job)
    textfile = tmp_path / "textfile" / "xray_training.prom"
    environ = {"STORAGE_URL": str(tmp_path / "store"), "METRICS_TEXTFILE": str(textfile)}
    code = cli.main([], environ, stdout=io.StringIO(), stderr=io.StringIO())
    assert code == (1 if fails else 0)
    samples = _samples(textfile.read_text())
    model = (("model_name", "cnn_vit"),)
    assert samples[("xray_training_run_success", model)] == (0 if fails else 1)
    verdict = "failed" if fails else "keep"
    assert samples[("xray_training_run_verdict", (*model, ("verdict", verdict)))] == 1
    assert list(textfile.parent.iterdir()) == [textfile]  # no partial file left
