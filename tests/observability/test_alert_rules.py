"""The rule file is valid, every alert and recording rule is unit-tested, and each alert has a
runbook section."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.observability.conftest import REPO

RULES_DIR = REPO / "helm" / "capi-stream" / "rules"
RULES = RULES_DIR / "capi-stream-alerts.yaml"
RULE_TESTS = RULES_DIR / "capi-stream-alerts.test.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"
REQUIRED_ALERTS = {
    "CapiStreamDown",
    "CapiStreamConsumerLagGrowing",
    "CapiStreamDeadLetterRateHigh",
    "CapiStreamSetupError",
    "CapiStreamRateLimited",
    "CapiStreamNoDeliveries",
    "CapiStreamResilienceLow",
    "CapiStreamNotReady",
    "CapiStreamEventQualityNeedsImprovement",
}
# Pinterest's resilience criteria per ad account across replicas (DESIGN §6).
REQUIRED_RECORDS = {
    "capi_stream:ad_account_resilience_events:increase1h",
    "capi_stream:ad_account_web_app_resilience_events:increase1h",
    "capi_stream:ad_account_ip_ua_ratio:1h",
    "capi_stream:ad_account_bottom_funnel_em_or_maid_ratio:1h",
    "capi_stream:ad_account_external_id_ratio:1h",
    "capi_stream:ad_account_resilient:1h",
}


def all_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_rules() -> list[dict[str, object]]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rules() -> list[dict[str, object]]:
    return [rule for rule in all_rules() if "record" in rule]


def test_promtool_check_rules(prometheus_bin: Path) -> None:
    result = subprocess.run(
        [str(prometheus_bin / "promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(prometheus_bin: Path) -> None:
    result = subprocess.run(
        [str(prometheus_bin / "promtool"), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists_and_is_unit_tested() -> None:
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names == REQUIRED_ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == names


def test_every_recording_rule_exists_and_is_unit_tested() -> None:
    records = {str(rule["record"]) for rule in recording_rules()}
    assert records == REQUIRED_RECORDS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checked = "\n".join(
        str(case["expr"])
        for test in tests
        for case in test.get("promql_expr_test", [])
        if case.get("exp_samples")
    )
    assert {r for r in records if r in checked} == records


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_is_documented(rule: dict[str, object]) -> None:
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert {"summary", "description", "runbook_url"} <= annotations.keys()
    labels = rule["labels"]
    assert isinstance(labels, dict)
    assert labels["severity"] in {"critical", "warning", "info"}
    # Absolute, so Alertmanager, chat and pager links open it.
    assert annotations["runbook_url"].startswith("https://"), annotations["runbook_url"]
    anchor = annotations["runbook_url"].split("#", 1)[1]
    headings = re.findall(r"^## (\S+)", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert anchor in {h.lower() for h in headings}
    section = RUNBOOK.read_text().split(f"## {rule['alert']}", 1)[1].split("\n## ", 1)[0]
    for part in ("Meaning", "Impact", "Diagnosis", "Fix"):
        assert f"**{part}.**" in section, f"{rule['alert']} runbook lacks {part}"


@pytest.mark.parametrize(
    "rule", all_rules(), ids=lambda rule: str(rule.get("alert", rule.get("record")))
)
def test_aggregations_keep_namespace(rule: dict[str, object]) -> None:
    groupings = re.findall(r"\bby \(([^)]*)\)", str(rule["expr"]))
    for grouping in groupings:
        assert "namespace" in grouping, (rule.get("alert", rule.get("record")), grouping)


def test_rules_the_chart_renders_with_tuned_values_pass_promtool(prometheus_bin: Path) -> None:
    helm = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=True,
    ).stdout.split()[-1]
    prefix = "metrics.prometheusRule"
    rendered = subprocess.run(
        [
            helm, "template", "capi", str(REPO / "helm" / "capi-stream"),
            "--namespace", "conversions",
            "--show-only", "templates/prometheusrule.yaml",
            "--set", "kafka.bootstrapServers=kafka:9092",
            "--set", f"{prefix}.enabled=true",
            "--set", f"{prefix}.alerts.CapiStreamNotReady.enabled=false",
            "--set", f"{prefix}.alerts.CapiStreamConsumerLagGrowing.minLag=25000",
            "--set", f"{prefix}.alerts.CapiStreamDeadLetterRateHigh.ratio=0.2",
            "--set", f"{prefix}.alerts.CapiStreamDeadLetterRateHigh.for=1h",
            "--set-string", f"{prefix}.additionalRuleLabels.team=conversions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout  # fmt: skip
    spec = yaml.safe_load(rendered)["spec"]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "rules.yaml"
        path.write_text(yaml.safe_dump(spec))
        result = subprocess.run(
            [str(prometheus_bin / "promtool"), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = len(REQUIRED_ALERTS) - 1 + len(REQUIRED_RECORDS)
    assert f"SUCCESS: {rules} rules found" in result.stdout
