"""The run's outcome as Prometheus metrics in a text file (node_exporter's textfile collector).

A run is a batch job: nothing is left to scrape once it exits, so when `METRICS_TEXTFILE` names
a file, the job writes its last run's metrics there at the end (written beside it, then renamed
into place, as the textfile collector asks), whatever the outcome:

| metric | labels |
|---|---|
| `xray_training_run_last_timestamp_seconds` | model_name |
| `xray_training_run_duration_seconds` | model_name |
| `xray_training_run_success` (1 or 0) | model_name |
| `xray_training_run_verdict` (1 on the run's verdict) | model_name, verdict |
| `xray_training_run_promoted` (1 or 0) | model_name |
| `xray_training_stable_version`, `xray_training_published_version` | model_name |
| `xray_training_model_metric` | model_name, role (candidate, stable), metric |

The text format is written by hand (a few lines): the training image carries no metrics client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import EnvReader
from common.textfile import label_value, write_textfile

__all__ = ["RunMetricsSettings", "render", "write_textfile"]

_VERDICTS = ("promote", "keep", "unchanged", "failed", "worker")
_HELP = {
    "xray_training_run_last_timestamp_seconds": ("gauge", "When the last run ended (Unix time)"),
    "xray_training_run_duration_seconds": ("gauge", "How long the last run took"),
    "xray_training_run_success": ("gauge", "1 when the last run ended without an error"),
    "xray_training_run_verdict": ("gauge", "1 on the last run's verdict"),
    "xray_training_run_promoted": ("gauge", "1 when the last run promoted a new version"),
    "xray_training_stable_version": ("gauge", "The stable version after the last run"),
    "xray_training_published_version": ("gauge", "The version the last run published"),
    "xray_training_model_metric": ("gauge", "Test-set metrics of the last run, per model role"),
}


@dataclass(frozen=True)
class RunMetricsSettings:
    textfile: Path | None = None  # METRICS_TEXTFILE; None: nothing written

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RunMetricsSettings:
        env = EnvReader(environ, "training job (metrics)")
        path = env.optional("METRICS_TEXTFILE")
        env.check()
        return cls(Path(path) if path else None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def render(
    model_name: str,
    *,
    verdict: str,
    started: float,
    finished: float,
    promoted: bool = False,
    stable_version: int | None = None,
    published_version: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> str:
    """The text format of one run's metrics."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in _HELP}
    base = {"model_name": model_name}
    samples["xray_training_run_last_timestamp_seconds"].append((base, finished))
    samples["xray_training_run_duration_seconds"].append((base, max(0.0, finished - started)))
    samples["xray_training_run_success"].append((base, 0.0 if verdict == "failed" else 1.0))
    for each in sorted({*_VERDICTS, verdict}):
        samples["xray_training_run_verdict"].append(
            ({**base, "verdict": each}, 1.0 if each == verdict else 0.0)
        )
    samples["xray_training_run_promoted"].append((base, 1.0 if promoted else 0.0))
    if stable_version is not None:
        samples["xray_training_stable_version"].append((base, float(stable_version)))
    if published_version is not None:
        samples["xray_training_published_version"].append((base, float(published_version)))
    for role, values in sorted((metrics or {}).items()):
        if not isinstance(values, Mapping):
            continue
        for metric, value in sorted(values.items()):
            number = _number(value)
            if number is not None:
                samples["xray_training_model_metric"].append(
                    ({**base, "role": str(role), "metric": str(metric)}, number)
                )
    lines: list[str] = []
    for name, (kind, text) in _HELP.items():
        if not samples[name]:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in samples[name]:
            rendered = ",".join(f'{key}="{label_value(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{rendered}}} {value!r}")
    return "\n".join(lines) + "\n"
