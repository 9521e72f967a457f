"""values.yaml and values.schema.json: documented, contract names present, bad values rejected."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.settings import (
    BatchingSettings,
    BufferSettings,
    LoggingSettings,
    SendingSettings,
    ShutdownSettings,
    SourceSettings,
)
from tests.helm.conftest import CHART, template_args

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)

# Value names operators and docs rely on (issue 8): never rename.
CONTRACT_VALUES = [
    "pinterest.adAccountId",
    "pinterest.accessToken",
    "pinterest.existingSecret",
    "kafka.bootstrapServers",
    "kafka.groupId",
    "kafka.deadLetterTopic",
    "sources",
    "image.repository",
    "image.tag",
    "autoscaling.keda.enabled",
    "metrics.serviceMonitor.enabled",
    "metrics.prometheusRule.enabled",
    "grafana.dashboard.enabled",
]

# Values copied verbatim into the config file: their keys must be the settings model's fields.
CONFIG_SECTIONS = {
    "batching": BatchingSettings,
    "sending": SendingSettings,
    "buffer": BufferSettings,
    "shutdown": ShutdownSettings,
    "logging": LoggingSettings,
}


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        assert isinstance(node, dict), f"{dotted}: not a mapping above {part}"
        assert part in node, f"{dotted} missing at {part}"
        node = node[part]
    return node


def value_at(tree: Any, path: list[str]) -> Any:
    # None inside lists (the sources items), which the comment on `sources` documents.
    for part in path:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def schema_node(dotted: str) -> dict[str, Any]:
    node = SCHEMA
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("name", CONTRACT_VALUES)
def test_contract_value_names_exist_in_values_schema_and_readme(name: str) -> None:
    lookup(VALUES, name)
    assert schema_node(name)["description"]
    assert f"`{name}`" in (CHART / "README.md").read_text()


def test_schema_rejects_unknown_keys_at_every_level() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if path.startswith("global"):
            # Helm hands a parent chart's globals to every subchart: they must pass through.
            assert node.get("additionalProperties") is not False, path
            return
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'root'} accepts any key"
            for key, child in node["properties"].items():
                assert child.get("description"), f"{path}.{key} undocumented"
                walk(child, f"{path}.{key}".lstrip("."))
        if "items" in node and isinstance(node["items"], dict):
            walk(node["items"], f"{path}[]")

    walk(SCHEMA, "")


@pytest.mark.parametrize(("section", "model"), CONFIG_SECTIONS.items())
def test_config_sections_match_the_settings_models(section: str, model: type[Any]) -> None:
    assert set(schema_node(section)["properties"]) == set(model.model_fields), (
        f"values.schema.json `{section}` drifted from stream/settings.py"
    )


def test_sources_items_match_the_settings_model() -> None:
    items = SCHEMA["properties"]["sources"]["items"]
    assert set(items["properties"]) == set(SourceSettings.model_fields)
    assert items["additionalProperties"] is False


def test_every_values_key_is_documented() -> None:
    # A leaf counts as documented when a comment sits directly above it or above an ancestor;
    # parent mappings (image:, kafka:…) need none of their own.
    stack: list[tuple[int, str, bool]] = []
    previous = ""
    undocumented = []
    for line in VALUES_TEXT.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_]\w*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.lstrip().startswith("#") or any(doc for *_, doc in stack)
            stack.append((indent, match.group(2), documented))
            value = value_at(VALUES, [key for _, key, _ in stack])
            if not documented and not (isinstance(value, dict) and value):
                undocumented.append(".".join(key for _, key, _ in stack))
        if line.strip():
            previous = line
    assert not undocumented


BAD_VALUES = [
    (["--set", "replicaCount=two"], "replicaCount"),
    (["--set", "unknownKey=1"], "unknownKey"),
    (["--set", "kafka.bootstrapServer=kafka:9092"], "bootstrapServer"),
    (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    (["--set-string", "pinterest.adAccountId=12ab"], "adAccountId"),
    (["--set", "batching.max_events=5000"], "max_events"),
    (["--set", "batching.maxEvents=500"], "maxEvents"),
    (["--set", "sources[0].topic=t", "--set", "sources[0].formatt=segment"], "formatt"),
    (["--set", "sources[0].topic=t", "--set", "sources[0].format=avro"], "format"),
    (["--set", "metrics.serviceMonitor.enabled=yes please"], "enabled"),
    (["--set", "kafka.sasl.mechanism=GSSAPI"], "mechanism"),
    (["--set", "logging.level=TRACE"], "level"),
    (["--set", "kafka.bootstrapServers="], "bootstrapServers"),
    (["--set", "metrics.prometheusRule.alerts.CapiStreamTypo.enabled=false"], "CapiStreamTypo"),
    (["--set", "metrics.prometheusRule.alerts.CapiStreamDown.for=5 minutes"], "for"),
    (["--set", "metrics.prometheusRule.alerts.CapiStreamDown.severity=page"], "severity"),
    (["--set", "metrics.prometheusRule.alerts.CapiStreamRateLimited.ratio=10"], "ratio"),
    (["--set", "metrics.prometheusRule.runbookUrl=docs/runbook.md"], "runbookUrl"),
    (["--set", "global.compatibility.openshift.adaptSecurityContext=yes"], "adaptSecurityContext"),
    (["--set", "podDisruptionBudget.unhealthyPodEvictionPolicy=Never"], "EvictionPolicy"),
    (["--set", "autoscaling.keda.fallback.replicas=2"], "failureThreshold"),
    (["--set", "extraEnv.HTTPS_PROXY=http://proxy:3128"], "extraEnv"),
    (["--set", "tests.verify.enabeld=false"], "enabeld"),
    (["--set", "pinterest.quality.poll_interval_s=600"], "poll_interval_s"),
    (["--set", "pinterest.quality.pollIntervalSeconds=0"], "pollIntervalSeconds"),
    (["--set", "pinterest.quality.requestTimeoutSeconds=0"], "requestTimeoutSeconds"),
    (["--set", "pinterest.quality.existingSecret=Ads_Read"], "existingSecret"),
]


@pytest.mark.parametrize(("args", "key"), BAD_VALUES)
def test_schema_rejects_bad_values(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], args: list[str], key: str
) -> None:
    result = run_helm(*template_args("default", args))
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert key in result.stderr


INCONSISTENT_VALUES = [
    (
        ["--set", "pinterest.accessToken=t", "--set", "pinterest.existingSecret=s"],
        "pinterest.accessToken and pinterest.existingSecret are exclusive",
    ),
    (
        ["--set", "pinterest.quality.accessToken=t", "--set", "pinterest.quality.existingSecret=s"],
        "pinterest.quality.accessToken and pinterest.quality.existingSecret are exclusive",
    ),
    (["--set", "terminationGracePeriodSeconds=25"], "terminationGracePeriodSeconds must be above"),
    (
        ["--set", "autoscaling.keda.enabled=true", "--set", "autoscaling.hpa.enabled=true"],
        "are exclusive",
    ),
    (
        ["--set", "autoscaling.keda.enabled=true", "--set", "autoscaling.maxReplicas=7"],
        "must not exceed kafka.partitions",
    ),
    (["--set", "kafka.sasl.mechanism=PLAIN"], "needs kafka.securityProtocol SASL_PLAINTEXT"),
    (["--set", "kafka.securityProtocol=SASL_SSL"], "needs kafka.sasl.mechanism"),
    (
        ["--set", "autoscaling.hpa.enabled=true", "--set", "autoscaling.minReplicas=0"],
        "autoscaling.minReplicas 0 needs KEDA",
    ),
    # Without the schema (--skip-schema-validation) the template still refuses, naming the key.
    (
        ["--skip-schema-validation", "--set", "kafka.bootstrapServers="],
        "kafka.bootstrapServers is required: set it, e.g. --set kafka.bootstrapServers=",
    ),
]


@pytest.mark.parametrize(("args", "message"), INCONSISTENT_VALUES)
def test_inconsistent_values_fail_with_the_key_named(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], args: list[str], message: str
) -> None:
    result = run_helm(*template_args("default", args))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_defaults_alone_fail_naming_the_missing_bootstrap_servers(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # Before, the pods quietly tried 127.0.0.1:9092; now the install stops at once.
    result = run_helm("template", "capi", str(CHART))
    assert result.returncode != 0
    assert "bootstrapServers" in result.stderr
    assert VALUES["kafka"]["bootstrapServers"] == ""
    assert schema_node("kafka.bootstrapServers")["minLength"] == 1


def test_ci_value_sets_exist_for_the_required_scenarios() -> None:
    names = {p.name for p in Path(CHART / "ci").glob("*.yaml")}
    assert names >= {
        "keda-values.yaml",
        "existing-secret-values.yaml",
        "sasl-values.yaml",
        "monitoring-off-values.yaml",
    }
