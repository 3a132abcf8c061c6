"""What metrics and tracing cost (issue 19): per request, and at import (a function's cold start).

Per request: the real `predict` function in-process (Flask test client) against a fake model
server, four variants interleaved request by request so drift hits them alike: `off` (neither
configured: the default), `metrics` (prometheus_client recording), `tracing` (a SERVER span per
request and a CLIENT span per model call, batched to an exporter that drops them, so the cost
is ours and not a collector's), `both`. Medians per variant and their difference to `off`.

At import: the extra seconds `prometheus_client` and the OpenTelemetry SDK with its OTLP/HTTP
exporter add once the functions' own modules are loaded (each in a fresh interpreter; the best
of three), which is what a function pays at start only when they are configured.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["VARIANTS", "measure_import_costs", "measure_request_costs"]

VARIANTS = ("off", "metrics", "tracing", "both")
_ROOT = Path(__file__).resolve().parents[1]

_IMPORT_SCRIPT = """
import time
import functions.main
started = time.perf_counter()
import {module}
print(time.perf_counter() - started)
"""


class _DroppingExporter:
    """A span exporter that exports nowhere (OpenTelemetry's SpanExporter protocol)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        del spans
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        del timeout_millis
        return True


def measure_import_costs(repeats: int = 3) -> dict[str, float]:
    """Milliseconds each library adds to a process that has already imported the functions."""
    modules = {
        "prometheus_client": "prometheus_client",
        "opentelemetry_sdk_and_otlp": "opentelemetry.sdk.trace, "
        "opentelemetry.sdk.trace.export, "
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    }
    costs: dict[str, float] = {}
    for name, module in modules.items():
        runs = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", _IMPORT_SCRIPT.format(module=module)],
                cwd=_ROOT,
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONPATH": str(_ROOT), "PATH": "/usr/bin:/bin"},
            )
            runs.append(float(out.stdout.strip()) * 1000)
        costs[name] = round(min(runs), 1)
    return costs


def measure_request_costs(work: Path, image: bytes, requests: int) -> dict[str, Any]:
    """Median milliseconds of one `predict` request per variant, and the added microseconds."""
    import functions_framework
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from functions import metrics, tracing
    from functions.runtime import Runtime, install_runtime, reset_runtime
    from storage import open_areas
    from tests.functions.conftest import MAIN, cheap_env, seed_users
    from tests.functions.fake_serving import FakeTFServing

    fake = FakeTFServing().start()
    try:
        env = {**cheap_env(), "STORAGE_URL": str(work / "store"), "TF_SERVING_URL": fake.url}
        env["LOG_LEVEL"] = "WARNING"
        runtime = install_runtime(Runtime.from_environ(env))
        users = seed_users(open_areas(runtime.settings.storage).auth)
        headers = {"Authorization": f"Bearer {runtime.tokens.issue(users['1']).access_token}"}
        client = functions_framework.create_app("predict", MAIN).test_client()
        metrics.enable()
        recorder = metrics._metrics
        tracing.use_span_processor(BatchSpanProcessor(_DroppingExporter()))
        tracer = tracing._tracer

        def use(variant: str) -> None:
            metrics._metrics = recorder if variant in ("metrics", "both") else None
            tracing._tracer = tracer if variant in ("tracing", "both") else None

        timings: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for round_index in range(requests + 10):
            for variant in VARIANTS:
                use(variant)
                started = time.perf_counter()
                answer = client.post("/", data=image, content_type="image/png", headers=headers)
                elapsed = time.perf_counter() - started
                assert answer.status_code == 200, answer.get_data(as_text=True)[:200]
                if round_index >= 10:  # warm-up
                    timings[variant].append(elapsed * 1000)
        use("off")
        medians = {variant: statistics.median(values) for variant, values in timings.items()}
        return {
            "requests": requests,
            "p50_ms": {variant: round(value, 3) for variant, value in medians.items()},
            "added_us": {
                variant: round((medians[variant] - medians["off"]) * 1000, 1)
                for variant in VARIANTS
                if variant != "off"
            },
        }
    finally:
        tracing.reset()
        metrics._metrics = None
        reset_runtime()
        fake.stop()
