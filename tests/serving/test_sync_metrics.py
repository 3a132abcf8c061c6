"""The model sync's Prometheus metrics: cycles, actions, the versions served and the lag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry

from serving.sync import ModelSync, SyncMetrics, SyncSettings, run_watch
from storage import StorageSettings, StorageUnavailable, Store
from tests.conftest import free_port
from tests.serving.publishing import MODEL, publish_version, write_registry


def _settings(tmp_path: Path) -> SyncSettings:
    base = tmp_path / "models"
    return SyncSettings(
        storage=StorageSettings(url=str(tmp_path / "unused")),
        model_name=MODEL,
        model_base_path=base,
        model_config_file=base / "models.config",
        interval_seconds=0.01,
    )


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_sync_metrics_settings_read_their_own_port() -> None:
    settings = SyncSettings.from_env({"SYNC_METRICS_PORT": "9465", "METRICS_HOST": "0.0.0.0"})
    assert (settings.metrics_port, settings.metrics_host) == (9465, "0.0.0.0")
    assert SyncSettings.from_env({}).metrics_port is None


def test_sync_metrics_count_cycles_actions_versions_and_lag(
    local_store: Store, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = SyncMetrics(registry)
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    sync = ModelSync(_settings(tmp_path), local_store)

    # First cycle: version 1 installed, its config written without a label (not loaded yet).
    metrics.cycle(sync.run_cycle(), 0.2, now=100.0)
    assert _value(registry, "xray_sync_cycles_total", outcome="ok") == 1
    assert _value(registry, "xray_sync_actions_total", action="installed") == 1
    assert _value(registry, "xray_sync_actions_total", action="config_written") == 1
    assert _value(registry, "xray_sync_last_success_timestamp_seconds") == 100.0
    assert _value(registry, "xray_sync_lag_seconds") == 0
    assert _value(registry, "xray_sync_served_version", label="stable") is None

    # Next cycle: the label follows; in step.
    metrics.cycle(sync.run_cycle(), 0.1, now=110.0)
    assert _value(registry, "xray_sync_served_version", label="stable") == 1
    assert _value(registry, "xray_sync_lag_seconds") == 0

    # A promotion: behind until the label has moved.
    publish_version(local_store, 2)
    write_registry(local_store, stable=2, previous_stable=[1])
    metrics.cycle(sync.run_cycle(), 0.1, now=120.0)
    assert _value(registry, "xray_sync_actions_total", action="installed") == 2
    assert _value(registry, "xray_sync_served_version", label="stable") == 1
    assert _value(registry, "xray_sync_lag_seconds") == 0  # behind since now
    metrics.cycle(None, 0.1, now=125.0)  # storage down
    assert _value(registry, "xray_sync_cycles_total", outcome="failed") == 1
    assert _value(registry, "xray_sync_lag_seconds") == 5.0
    metrics.cycle(sync.run_cycle(), 0.1, now=130.0)
    assert _value(registry, "xray_sync_served_version", label="stable") == 2
    assert _value(registry, "xray_sync_lag_seconds") == 0
    assert _value(registry, "xray_sync_cycle_duration_seconds_count") == 5


def test_sync_metrics_run_watch_records_failed_cycles(local_store: Store, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = SyncMetrics(registry)

    class Down(ModelSync):
        def run_cycle(self):  # type: ignore[no-untyped-def]
            raise StorageUnavailable("bucket unreachable")

    run_watch(Down(_settings(tmp_path), local_store), 0.001, max_cycles=2, metrics=metrics)
    assert _value(registry, "xray_sync_cycles_total", outcome="failed") == 2
    assert _value(registry, "xray_sync_cycles_total", outcome="ok") == 0


def test_sync_metrics_served_by_the_watching_sidecar(local_store: Store, tmp_path: Path) -> None:
    publish_version(local_store, 1)
    write_registry(local_store, stable=1)
    port = free_port()
    base = tmp_path / "models"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "MODEL_"))},
        "STORAGE_URL": str(tmp_path / "store"),  # the local_store fixture's folder
        "MODEL_NAME": MODEL,
        "MODEL_BASE_PATH": str(base),
        "SYNC_INTERVAL_SECONDS": "0.2",
        "SYNC_METRICS_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.sync", "--watch"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.ConnectionError:
                text = ""
            if 'xray_sync_served_version{label="stable"} 1.0' in text:
                break
            time.sleep(0.1)
        assert 'xray_sync_served_version{label="stable"} 1.0' in text
        assert 'xray_sync_actions_total{action="installed"} 1.0' in text
        assert "xray_sync_lag_seconds 0.0" in text
    finally:
        process.terminate()
        process.wait(timeout=10)
