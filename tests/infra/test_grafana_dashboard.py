"""infra/grafana/xray-dashboard.json: valid, provisioned by compose, and every `xray_*` series it
queries is one the code exports (a renamed metric fails here, not on a blank panel)."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.infra.helpers import COMPOSE_FILE, REPO, load_compose

DASHBOARD = REPO / "infra" / "grafana" / "xray-dashboard.json"
_SERIES = re.compile(r"\b(xray_[a-z0-9_]+)")


def _exported_series() -> set[str]:
    """Every sample name the functions, the model sync and the training job export."""
    from functions import metrics
    from serving.sync import SyncMetrics
    from training_job.run_metrics import render

    metrics.enable()
    names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    # Families without a sample yet (labelled, nothing recorded): their names and suffixes.
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    sync = CollectorRegistry()
    SyncMetrics(sync)
    for family in sync.collect():
        names |= {sample.name for sample in family.samples} | {family.name}
    text = render(
        "m",
        verdict="keep",
        started=0,
        finished=1,
        stable_version=1,
        published_version=1,
        metrics={"candidate": {"macro_f1": 0.5}},
    )
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_grafana_dashboard_is_valid_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"]
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"])
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("requests", "errors", "latency", "model version", "class mix", "drift"):
        assert topic in titles, topic


def test_grafana_dashboard_queries_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in _panels(dashboard)
        for target in panel["targets"]
        for name in _SERIES.findall(target["expr"])
    }
    assert queried, "the dashboard queries no xray_ series"
    assert queried - _exported_series() == set()


def test_grafana_dashboard_provisioned_by_compose_monitoring_profile() -> None:
    services = load_compose(COMPOSE_FILE)["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    mounts = " ".join(services["grafana"]["volumes"])
    assert "xray-dashboard.json" in mounts
    assert (REPO / "infra" / "grafana" / "provisioning" / "dashboards" / "xray.yaml").is_file()
    scrape = (COMPOSE_FILE.parent / "prometheus.yml").read_text()
    for target in ("predict:9464", "model-sync:9465", "tfserving:8501"):
        assert target in scrape
