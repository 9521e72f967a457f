"""The chart's alert rules: the repository's rule file is their plain-Prometheus rendering, and each
alert is scoped to its release, linked to its runbook section, and tunable per alert."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.helm.conftest import CHART, REPO_ROOT, Rendered

RULE_FILE = CHART / "rules" / "capi-stream-alerts.yaml"
VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
PROMETHEUS_RULE = VALUES["metrics"]["prometheusRule"]
RELEASE_SCOPE = 'namespace="conversions",job="capi-capi-stream-metrics"'
# Alerts about one ad account: they keep `ad_account` so each account's owner is told.
ACCOUNT_ALERTS = {
    "CapiStreamSetupError",
    "CapiStreamRateLimited",
    "CapiStreamResilienceLow",
    "CapiStreamEventQualityNeedsImprovement",
}
RECORDED = re.compile(r"\bcapi_stream:[a-z0-9_:]+")


def rules_by_name(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """The alert rules by name."""
    groups = rendered.one("PrometheusRule")["spec"]["groups"]
    return {r["alert"]: r for group in groups for r in group["rules"] if "alert" in r}


def records_by_name(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """The recording rules by the series they record."""
    groups = rendered.one("PrometheusRule")["spec"]["groups"]
    return {r["record"]: r for group in groups for r in group["rules"] if "record" in r}


def test_repository_rule_file_is_the_chart_rendered_for_plain_prometheus(helm: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "render_alert_rules.sh")],
        env={**os.environ, "HELM": str(helm)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == RULE_FILE.read_text(), "rules file is stale: run `make rules`"
    plain = yaml.safe_load(RULE_FILE.read_text())
    for group in plain["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", rule.get("record"))
            assert 'job="capi-stream"' in rule["expr"], name
            assert "namespace=" not in rule["expr"], name


def test_every_alert_is_scoped_to_the_release_scrape_job(render: Callable[..., Rendered]) -> None:
    rendered = render("keda-values")
    rules = rules_by_name(rendered)
    assert rules.keys() == PROMETHEUS_RULE["alerts"].keys()
    for name, rule in rules.items():
        assert RELEASE_SCOPE in rule["expr"], name
    # Every selector, of scraped and of recorded series alike: other releases record the same
    # names in the same Prometheus.
    for name, rule in {**rules, **records_by_name(rendered)}.items():
        for selector in re.findall(r"\b[a-z_:0-9]+\{([^}]*)\}", rule["expr"]):
            assert RELEASE_SCOPE in selector, (name, selector)
    # The ServiceMonitor's job label is the Service's name.
    assert rendered.one("Service", "-metrics")["metadata"]["name"] == "capi-capi-stream-metrics"
    assert rendered.one("ServiceMonitor")["spec"].get("jobLabel") is None


def test_aggregations_keep_namespace_and_ad_account(render: Callable[..., Rendered]) -> None:
    rendered = render("keda-values")
    for name, rule in rules_by_name(rendered).items():
        for clause in rule["expr"].split("by (")[1:]:
            grouping = clause.split(")", 1)[0]
            assert "namespace" in grouping, (name, grouping)
            if name in ACCOUNT_ALERTS:
                assert "ad_account" in grouping, (name, grouping)
    # Recorded per ad account across replicas: no instance or pod, but namespace and job, which
    # the rules' own selector matches on.
    for name, rule in records_by_name(rendered).items():
        for clause in rule["expr"].split("by (")[1:]:
            grouping = [label.strip() for label in clause.split(")", 1)[0].split(",")]
            assert {"namespace", "job", "ad_account"} <= set(grouping), (name, grouping)
            assert not {"instance", "pod"} & set(grouping), (name, grouping)


def test_resilience_is_judged_per_ad_account_on_the_recorded_criteria(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("keda-values")
    records = records_by_name(rendered)
    assert set(records) == {
        "capi_stream:ad_account_resilience_events:increase1h",
        "capi_stream:ad_account_web_app_resilience_events:increase1h",
        "capi_stream:ad_account_ip_ua_ratio:1h",
        "capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h",
        "capi_stream:ad_account_external_id_ratio:1h",
        "capi_stream:ad_account_resilient:1h",
    }
    # IP + user agent is rated over web and app events only: offline events never carry them.
    web_app = records["capi_stream:ad_account_web_app_resilience_events:increase1h"]["expr"]
    assert 'action_source!="offline"' in web_app
    ip_ua = records["capi_stream:ad_account_ip_ua_ratio:1h"]["expr"]
    assert "capi_stream:ad_account_web_app_resilience_events" in ip_ua
    alert = rules_by_name(rendered)["CapiStreamResilienceLow"]
    used = set(RECORDED.findall(alert["expr"]))
    assert used <= records.keys()
    assert {
        "capi_stream:ad_account_ip_ua_ratio:1h",
        "capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h",
        "capi_stream:ad_account_external_id_ratio:1h",
    } <= used
    assert "capi_stream_resilience_good" not in alert["expr"]
    assert "$labels.ad_account" in alert["annotations"]["summary"]
    assert "$labels.ad_account" in alert["annotations"]["description"]
    # The dashboard reads the recording rules even when the alert is switched off.
    quiet = render("extended-values")
    assert "CapiStreamResilienceLow" not in rules_by_name(quiet)
    assert records_by_name(quiet).keys() == records.keys()


def test_runbook_links_are_absolute_and_point_at_each_alerts_section(
    render: Callable[..., Rendered],
) -> None:
    base = PROMETHEUS_RULE["runbookUrl"]
    assert base.startswith("https://")
    assert base.endswith("/docs/runbook.md")
    for name, rule in rules_by_name(render("keda-values")).items():
        assert rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}"
    own = render("keda-values", "--set", "metrics.prometheusRule.runbookUrl=https://wiki/x")
    for name, rule in rules_by_name(own).items():
        assert rule["annotations"]["runbook_url"] == f"https://wiki/x#{name.lower()}"


def test_each_alert_can_be_disabled_retimed_relabelled_and_rethresholded(
    render: Callable[..., Rendered],
) -> None:
    rules = rules_by_name(render("extended-values"))
    assert "CapiStreamResilienceLow" not in rules
    limited = rules["CapiStreamRateLimited"]
    assert limited["for"] == "30m"
    assert ") > 0.25" in limited["expr"]
    assert "for 30m" in limited["annotations"]["description"]
    # Per-alert labels win over additionalRuleLabels, which win over nothing.
    assert limited["labels"] == {"severity": "critical", "team": "conversions"}
    assert rules["CapiStreamDown"]["labels"] == {"severity": "critical", "team": "conversions"}
    assert rules["CapiStreamNotReady"]["labels"] == {"severity": "warning", "team": "conversions"}
    tuned = rules_by_name(
        render(
            "keda-values",
            "--set", "metrics.prometheusRule.alerts.CapiStreamConsumerLagGrowing.minLag=50000",
            "--set", "metrics.prometheusRule.alerts.CapiStreamDeadLetterRateHigh.ratio=0.2",
            "--set", "metrics.prometheusRule.alerts.CapiStreamDeadLetterRateHigh.minRate=1",
            "--set", "metrics.prometheusRule.alerts.CapiStreamResilienceLow.minWindowEvents=500",
            "--set", "metrics.prometheusRule.alerts.CapiStreamSetupError.severity=warning",
        )
    )  # fmt: skip
    assert "> 50000\n" in tuned["CapiStreamConsumerLagGrowing"]["expr"]
    assert ") > 0.2\n" in tuned["CapiStreamDeadLetterRateHigh"]["expr"]
    assert "[10m])) > 1\n" in tuned["CapiStreamDeadLetterRateHigh"]["expr"]
    assert ">= 500\n" in tuned["CapiStreamResilienceLow"]["expr"]
    assert tuned["CapiStreamSetupError"]["labels"]["severity"] == "warning"


def test_a_custom_selector_scopes_every_rule(render: Callable[..., Rendered]) -> None:
    rules = rules_by_name(
        render("keda-values", "--set-string", 'metrics.prometheusRule.selector=job="pods"')
    )
    for name, rule in rules.items():
        assert 'job="pods"' in rule["expr"], name
        assert "namespace=" not in rule["expr"], name
