"""Static checks of the Grafana dashboard and alert rules against the metric set."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stream.identity.profile import IdentityProfiles
from stream.identity.state import Restores
from stream.metrics import Metrics
from tests.observability.conftest import REPO

DASHBOARD = REPO / "helm" / "capi-stream" / "dashboards" / "capi-stream.json"
RULES = REPO / "helm" / "capi-stream" / "rules" / "capi-stream-alerts.yaml"
METRIC_NAME = re.compile(r"\bcapi_stream_[a-z_]+\b")
# Series of the chart's recording rules (`level:metric:operations`).
RECORDED_NAME = re.compile(r"\bcapi_stream:[a-z0-9_]+:[a-z0-9_]+\b")
# prometheus_client's process and platform collectors, registered on capi-stream's registry.
RUNTIME_METRIC_NAME = re.compile(r"\b(?:process|python)_[a-z_]+\b")
# Metrics of kube-state-metrics (not capi-stream's): only where nothing else can answer, e.g.
# restarts of pods that never got scraped. Their panels say so in their description.
KUBE_METRIC_NAME = re.compile(r"\bkube_[a-z_]+\b")
KUBE_STATE_METRICS = {
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_resource_limits",
}
# Label filters of every capi-stream query, and of the per-account ones.
SCOPE = 'namespace=~"$namespace",job=~"$job",pod=~"$pod"'
ACCOUNT_SCOPE = 'ad_account=~"$ad_account"'
# Recorded per ad account across replicas: they keep namespace and job, not the pod.
RECORDED_SCOPE = 'namespace=~"$namespace",job=~"$job",ad_account=~"$ad_account"'
ACCOUNT_METRICS = {
    "capi_stream_pinterest_warnings_total",
    "capi_stream_requests_total",
    "capi_stream_concurrency_limit",
    "capi_stream_setup_error",
    "capi_stream_setup_error_status",
    "capi_stream_quality_status",
    "capi_stream_quality_coverage_ratio",
    "capi_stream_quality_issues",
    "capi_stream_quality_last_success_timestamp_seconds",
    "capi_stream_quality_poll_errors_total",
}
# Every panel the issue asks for, by the metric that answers it.
REQUIRED_METRICS = {
    "capi_stream_events_total",
    "capi_stream_dead_letters_total",
    "capi_stream_requests_total",
    "capi_stream_request_duration_seconds_bucket",
    "capi_stream_concurrency_limit",
    "capi_stream_inflight_requests",
    "capi_stream_buffered_events",
    "capi_stream_paused_partitions",
    "capi_stream_consumer_lag",
    "capi_stream_delivery_latency_seconds_bucket",
    "capi_stream_late_events_total",
    "capi_stream_identifier_coverage_ratio",
    "capi_stream_pinterest_warnings_total",
    "capi_stream_dead_letters_truncated_total",
    "capi_stream_setup_error",
    "capi_stream_signal_share_ratio",
    "capi_stream_quality_status",
    "capi_stream_quality_coverage_ratio",
    "capi_stream_quality_issues",
    "capi_stream_quality_poll_errors_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "kube_pod_container_status_restarts_total",
}
# Pinterest's resilience per ad account (the flag and its three criteria), from recording rules.
REQUIRED_RECORDS = {
    "capi_stream:ad_account_resilient:1h",
    "capi_stream:ad_account_ip_ua_ratio:1h",
    "capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h",
    "capi_stream:ad_account_external_id_ratio:1h",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p.get("targets", [])]


def recorded_names() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


class IdleIdentityState:
    """What the identity metrics read of a forwarder whose sources enrich."""

    changelog_errors = 0
    forgotten = 0
    restores = Restores()

    def stored(self) -> tuple[int, int]:
        return 0, 0


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry).watch_identities(IdentityProfiles(ttl_s=1.0), IdleIdentityState())
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_identity_is_stable() -> None:
    board = dashboard()
    assert board["uid"] == "capi-stream-overview"
    assert board["title"] == "capi-stream"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))


def test_datasource_is_a_variable_everywhere() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_rates_use_rate_interval() -> None:
    for expr in exprs():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", expr


def test_every_query_uses_known_metrics() -> None:
    known = exported_names()
    used = {
        name
        for expr in exprs()
        for pattern in (METRIC_NAME, RUNTIME_METRIC_NAME)
        for name in pattern.findall(expr)
    }
    assert used <= known, used - known
    kube = {name for expr in exprs() for name in KUBE_METRIC_NAME.findall(expr)}
    assert kube <= KUBE_STATE_METRICS, kube - KUBE_STATE_METRICS
    assert used | kube >= REQUIRED_METRICS, REQUIRED_METRICS - used - kube
    recorded = {name for expr in exprs() for name in RECORDED_NAME.findall(expr)}
    assert recorded <= recorded_names(), recorded - recorded_names()
    assert recorded >= REQUIRED_RECORDS, REQUIRED_RECORDS - recorded


def test_process_metrics_are_exported() -> None:
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    } <= exported_names()


def test_namespace_job_pod_and_ad_account_variables_chain() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "pod", "ad_account"]
    assert 'namespace=~"$namespace"' in variables["job"]["definition"]
    assert 'job=~"$job"' in variables["pod"]["definition"]
    assert 'job=~"$job"' in variables["ad_account"]["definition"]
    for name in ("namespace", "pod", "ad_account"):
        # Outside Kubernetes the label is missing altogether: "All" must still match.
        assert variables[name]["allValue"] == ".*", name
        assert variables[name]["includeAll"] is True


def test_every_query_follows_the_variables() -> None:
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            if KUBE_METRIC_NAME.search(expr):
                assert 'namespace=~"$namespace",pod=~"$pod"' in expr, expr
                assert "kube-state-metrics" in panel["description"], panel["title"]
                continue
            for selector in re.findall(r"([a-z_:][a-z0-9_:]*)\{([^}]*)\}", expr):
                metric, matchers = selector
                if RECORDED_NAME.fullmatch(metric):
                    # A pod filter would hide figures no single pod has.
                    assert RECORDED_SCOPE in matchers, expr
                    assert "pod=" not in matchers, expr
                    assert "pod filter does not apply" in panel["description"], panel["title"]
                    continue
                assert SCOPE in matchers, expr
                if metric in ACCOUNT_METRICS:
                    assert ACCOUNT_SCOPE in matchers, expr


def test_every_alert_uses_known_metrics() -> None:
    known, recorded = exported_names(), recorded_names()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", rule.get("record"))
            used = set(METRIC_NAME.findall(rule["expr"]))
            uses_records = set(RECORDED_NAME.findall(rule["expr"]))
            # CapiStreamDown looks at Prometheus's own `up`: the process may not be running.
            assert used or uses_records or "up{" in rule["expr"], name
            assert used <= known, (name, used - known)
            assert uses_records <= recorded, (name, uses_records - recorded)


@pytest.mark.parametrize(
    "panel", [p for p in panels() if p["type"] != "row"], ids=lambda p: p["title"]
)
def test_panel_explains_itself(panel: dict[str, Any]) -> None:
    assert len(panel["description"]) > 30
    assert panel["targets"]


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
