"""The Grafana dashboard (docs/grafana/chorus-dashboard.json, issue 22 point 1) asks only for
metrics and labels a running Chorus exposes at ``/metrics``: a renamed metric would leave a
panel silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from infrastructure.embedded_postgres import EmbeddedPostgres
from tests.fixtures.chorus import running_chorus
from tests.fixtures.failover import set_up_channel

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "chorus-dashboard.json"
METRIC = re.compile(r"\bchorus_[a-z0-9_]+\b")
# Labels Prometheus adds at the scrape (instance) or histograms carry on their buckets (le).
ADDED_LABELS = {"instance", "job", "le"}


def _exposed(url: str) -> dict[str, set[str]]:
    """Each sample name a scrape of ``/metrics`` shows, with the label names it carries."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    exposed: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    return exposed


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panels' targets and template variables."""
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def _labels_used(expr: str) -> set[str]:
    """Label names the expression groups by or matches on."""
    grouped = {
        name.strip()
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for name in clause.split(",")
        if name.strip()
    }
    matched = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    values = set(re.findall(r"label_values\(\s*[a-z0-9_]+\s*,\s*([a-z_]+)\s*\)", expr))
    return (grouped | matched | values) - ADDED_LABELS


@pytest.mark.slow
def test_every_metric_and_label_the_dashboard_asks_for_is_exposed(
    postgres_server: EmbeddedPostgres, redis_url: str, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 15
    # With Redis: its health shows only where it is configured.
    with running_chorus(postgres_server, tmp_path, metrics="public", redis_url=redis_url) as chorus:
        url = chorus.server.url
        # What makes the labelled series appear: commands over HTTP and a refused socket.
        set_up_channel(url)
        refused = url.replace("http", "ws") + "/ws?token=not-a-token"
        with connect(refused, open_timeout=10) as ws, pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        exposed = _exposed(url)
    for expr in queries:
        names = set(METRIC.findall(expr))
        assert names, expr
        missing = names - exposed.keys()
        assert not missing, f"{expr}: {sorted(missing)} not exposed"
        labels: set[str] = set().union(*(exposed[name] for name in names))
        assert _labels_used(expr) <= labels, (expr, _labels_used(expr) - labels)
