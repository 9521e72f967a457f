"""What the rendered objects do: hardening, probes, secrets as files, config, scaling, alerts."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.conftest import CHART, REPO_ROOT, VALUE_SETS, Rendered

CI_VALUES = {p.stem: yaml.safe_load(p.read_text()) for p in (CHART / "ci").glob("*.yaml")}
SECRET_VALUES = [
    ("keda-values", "ci-token-keda-0123456789"),
    ("keda-values", "ci-quality-token-keda-0123456789"),
    ("sasl-values", "ci-token-sasl-0123456789"),
    ("sasl-values", "ci-sasl-password-0123456789"),
    ("monitoring-off-values", "ci-token-plain-0123456789"),
]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_is_hardened(render: Callable[..., Rendered], value_set: str) -> None:
    rendered = render(value_set)
    pod = rendered.pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = rendered.container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # With a read-only root, /tmp must be a writable emptyDir.
    tmp = next(m for m in rendered.container()["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_and_metrics_port_agree_with_the_config(
    render: Callable[..., Rendered], value_set: str
) -> None:
    rendered = render(value_set)
    container = rendered.container()
    (port,) = container["ports"]
    assert port["name"] == "metrics"
    assert port["containerPort"] == rendered.config()["metrics"]["port"] == 9108
    probes = {
        name: (container[name]["httpGet"]["path"], container[name]["httpGet"]["port"])
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/healthz", "metrics"),
        "livenessProbe": ("/healthz", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }
    service = rendered.one("Service", "-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= (
        rendered.deployment()["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_resources_have_requests_and_a_memory_limit(
    render: Callable[..., Rendered], value_set: str
) -> None:
    resources = render(value_set).container()["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rollout_keeps_every_consumer_and_outlasts_the_drain(
    render: Callable[..., Rendered], value_set: str
) -> None:
    rendered = render(value_set)
    deployment = rendered.deployment()
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] >= 1
    grace = rendered.config()["shutdown"]["grace_period_s"]
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    assert "helm.sh/chart" not in deployment["spec"]["selector"]["matchLabels"]


def test_replicas_are_left_to_the_autoscaler(render: Callable[..., Rendered]) -> None:
    assert render("monitoring-off-values").deployment()["spec"]["replicas"] == 3
    assert "replicas" not in render("keda-values").deployment()["spec"]
    assert "replicas" not in render("existing-secret-values").deployment()["spec"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_secret_reaches_env_or_config_maps(
    render: Callable[..., Rendered], value_set: str
) -> None:
    rendered = render(value_set)
    for container in rendered.pod_spec()["containers"]:
        assert "envFrom" not in container
        for env in container.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {}), env["name"]
            assert "TOKEN" not in env["name"]
            assert "PASSWORD" not in env["name"]
    config = rendered.config()
    assert "access_token" not in config["pinterest"]
    assert "access_token" not in config["pinterest"].get("quality", {})
    assert "sasl_password" not in config["kafka"]


@pytest.mark.parametrize(("value_set", "secret"), SECRET_VALUES)
def test_secret_values_appear_only_in_secrets(
    render: Callable[..., Rendered], value_set: str, secret: str
) -> None:
    rendered = render(value_set)
    encoded = base64.b64encode(secret.encode()).decode()
    holders = [d for d in rendered.docs if encoded in json.dumps(d)]
    assert [d["kind"] for d in holders] == ["Secret"]
    for doc in rendered.docs:
        assert secret not in json.dumps(doc), doc["kind"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_secret_files_named_in_the_config_are_mounted(
    render: Callable[..., Rendered], value_set: str
) -> None:
    rendered = render(value_set)
    config = rendered.config()
    files = [Path(config["pinterest"]["access_token_file"])]
    if "access_token_file" in config["pinterest"].get("quality", {}):
        files.append(Path(config["pinterest"]["quality"]["access_token_file"]))
    if "sasl_password_file" in config["kafka"]:
        files.append(Path(config["kafka"]["sasl_password_file"]))
    if "ssl_ca_location" in config["kafka"]:
        files.append(Path(config["kafka"]["ssl_ca_location"]))
    pinterest = CI_VALUES.get(value_set, {}).get("pinterest", {})
    external = {
        pinterest.get("existingSecret"),
        pinterest.get("quality", {}).get("existingSecret"),
        CI_VALUES.get(value_set, {}).get("kafka", {}).get("tls", {}).get("caSecret"),
    }
    for file in files:
        name, key, secret = rendered.mounted_secret(str(file))
        if name in external:
            assert secret is None, f"the chart renders the operator's Secret {name}"
            continue
        assert secret is not None, f"{file} comes from Secret {name}, which nothing renders"
        assert key in secret["data"], f"{file} comes from no key of Secret {name}"


def test_existing_secret_replaces_the_chart_secret(render: Callable[..., Rendered]) -> None:
    rendered = render("existing-secret-values")
    assert rendered.of_kind("Secret") == []
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    assert volumes["pinterest-token"]["secret"]["secretName"] == "pinterest-capi"
    assert volumes["pinterest-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    quality = volumes["pinterest-quality-token"]["secret"]
    assert quality["secretName"] == "pinterest-ads-read"
    assert quality["items"] == [{"key": "ads-read-token", "path": "ads-read-token"}]


def test_checksum_annotation_follows_the_config(render: Callable[..., Rendered]) -> None:
    def checksum(rendered: Rendered) -> str:
        annotations = rendered.deployment()["spec"]["template"]["metadata"]["annotations"]
        value = annotations["checksum/config"]
        assert isinstance(value, str)
        return value

    base = render()
    config_text = base.config_map()["data"]["config.yaml"]
    assert checksum(base) == hashlib.sha256(config_text.rstrip("\n").encode()).hexdigest()
    changed = render("default", "--set", "batching.max_events=10")
    assert checksum(changed) != checksum(base)
    unrelated = render("default", "--set", "podAnnotations.team=growth")
    assert checksum(unrelated) == checksum(base)


def check_config(config: dict[str, Any], tmp_path: Path, *flags: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "stream", "check-config", "--config", str(path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_default_config_passes_check_config_offline(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    check_config(render().config(), tmp_path, "--offline")


@pytest.mark.parametrize("value_set", sorted(CI_VALUES))
def test_config_passes_check_config(
    render: Callable[..., Rendered], value_set: str, tmp_path: Path
) -> None:
    rendered = render(value_set)
    config = rendered.config()
    secrets = {d["metadata"]["name"]: d for d in rendered.of_kind("Secret")}
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    # Stand the mounted Secret files up locally with what the pod would see.
    for section, key, volume in (
        (config["pinterest"], "access_token_file", "pinterest-token"),
        (config["pinterest"].get("quality", {}), "access_token_file", "pinterest-quality-token"),
        (config["kafka"], "sasl_password_file", "kafka-sasl"),
        (config["kafka"], "ssl_ca_location", "kafka-ca"),
    ):
        if key not in section:
            continue
        source = volumes[volume]["secret"]
        item = source["items"][0]["key"]
        chart_secret = secrets.get(source["secretName"])
        content = (
            base64.b64decode(chart_secret["data"][item]).decode()
            if chart_secret
            else f"operator-managed-{item}"
        )
        local = tmp_path / f"{volume}-{item}"
        local.write_text(content + "\n")
        section[key] = str(local)
    output = check_config(config, tmp_path)
    masked = yaml.safe_load(output)
    assert masked["kafka"]["group_id"] == CI_VALUES[value_set]["kafka"].get(
        "groupId", "capi-stream"
    )
    for _, secret in SECRET_VALUES:
        assert secret not in output


def test_ad_account_id_stays_an_exact_string(render: Callable[..., Rendered]) -> None:
    # ci/sasl-values.yaml gives it unquoted, as `--set` would: still digits, not 5.49e+11.
    assert render("sasl-values").config()["pinterest"]["ad_account_id"] == "549755885175"
    via_set = render("default", "--set", "pinterest.adAccountId=549755885175")
    assert via_set.config()["pinterest"]["ad_account_id"] == "549755885175"


def test_keda_scales_on_group_lag_up_to_the_partition_count(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("keda-values")
    scaled = rendered.one("ScaledObject")
    config = rendered.config()
    assert scaled["spec"]["scaleTargetRef"]["name"] == rendered.deployment()["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 2
    assert scaled["spec"]["maxReplicaCount"] == CI_VALUES["keda-values"]["kafka"]["partitions"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == config["kafka"]["group_id"]
    assert metadata["bootstrapServers"] == config["kafka"]["bootstrap_servers"]
    assert metadata["lagThreshold"] == "500"
    # Two sources: the scaler follows every topic the group consumes.
    assert "topic" not in metadata
    assert "authenticationRef" not in trigger


def test_keda_authenticates_like_the_forwarder(render: Callable[..., Rendered]) -> None:
    rendered = render("sasl-values")
    scaled = rendered.one("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["topic"] == "clickstream"
    assert scaled["spec"]["maxReplicaCount"] == 6
    auth = rendered.one("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    keda_secret = rendered.one("Secret", "-keda")
    plain = {k: base64.b64decode(v).decode() for k, v in keda_secret["data"].items()}
    assert plain == {"tls": "enable", "sasl": "scram_sha512", "username": "capi-stream"}
    assert refs["password"] == (
        rendered.one("Secret", "-kafka-sasl")["metadata"]["name"],
        "password",
    )
    assert refs["ca"] == ("kafka-ca", "ca.crt")


def test_hpa_is_capped(render: Callable[..., Rendered]) -> None:
    hpa = render("existing-secret-values").one("HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 4
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"


def test_pdb_selects_the_pods(render: Callable[..., Rendered]) -> None:
    rendered = render()
    pdb = rendered.one("PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    deployment = rendered.deployment()["spec"]
    # The deployment's pods, and only them: never the bare `helm test` pod.
    assert deployment["selector"]["matchLabels"].items() <= selector.items()
    assert selector.items() <= deployment["template"]["metadata"]["labels"].items()
    assert not selector.items() <= rendered.one("Pod")["metadata"]["labels"].items()
    assert render("monitoring-off-values").of_kind("PodDisruptionBudget") == []


def test_monitoring_objects_follow_their_switches(render: Callable[..., Rendered]) -> None:
    off = render("monitoring-off-values")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert off.of_kind(kind) == []
    assert [d["metadata"]["name"] for d in off.of_kind("ConfigMap")] == ["capi-capi-stream"]
    on = render("keda-values")
    monitor = on.one("ServiceMonitor")
    service = on.one("Service", "-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_config_map_holds_the_repository_dashboard(
    render: Callable[..., Rendered],
) -> None:
    config_map = render("keda-values").one("ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "Conversions"
    dashboard = (CHART / "dashboards" / "capi-stream.json").read_text()
    assert json.loads(config_map["data"]["capi-stream.json"]) == json.loads(dashboard)


def test_network_policy_allows_only_dns_kafka_and_https(render: Callable[..., Rendered]) -> None:
    policy = render("sasl-values").one("NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    egress_ports = sorted(
        (port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (9096, "TCP")]
    https = next(rule for rule in policy["egress"] if rule["ports"][0]["port"] == 443)
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]
