"""What operators extend: env, volumes, extra containers, security contexts (OpenShift), probes,
labels, registry, autoscaling tuning, extra egress, the PDB's eviction policy and `helm test`."""

from __future__ import annotations

from collections.abc import Callable

import kubernetes_validate
import pytest

from tests.helm.conftest import VALUE_SETS, Rendered

KUBERNETES_VERSION = "1.29.0"
FIXED_IDS = {"runAsUser", "runAsGroup", "fsGroup"}


def validate(rendered: Rendered, kind: str) -> None:
    for doc in rendered.of_kind(kind):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_extended_values_reach_the_capi_stream_container(render: Callable[..., Rendered]) -> None:
    rendered = render("extended-values")
    container = rendered.container()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy.egress.svc:3128"
    assert env["CAPI_STREAM_LOGGING__LEVEL"] == "DEBUG"
    # Extra values are templates: they can name the release's objects.
    assert env["CAPI_STREAM_RELEASE"] == "capi-capi-stream"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["corporate-ca"]["mountPath"] == "/etc/capi-stream-ca"
    # The chart's own mounts stay.
    assert {"config", "pinterest-token", "tmp"} <= mounts.keys()
    volumes = {v["name"]: v for v in rendered.pod_spec()["volumes"]}
    assert volumes["corporate-ca"]["configMap"] == {"name": "corporate-ca"}
    pod = rendered.pod_spec()
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-proxy"]
    assert [c["name"] for c in pod["containers"]] == ["capi-stream", "proxy-probe"]


def test_env_from_sources_are_added(render: Callable[..., Rendered]) -> None:
    rendered = render(
        "default",
        "--set", "envFrom[0].configMapRef.name=capi-stream-overrides",
        "--set", "envFrom[1].secretRef.name=capi-stream-proxy-credentials",
    )  # fmt: skip
    assert rendered.container()["envFrom"] == [
        {"configMapRef": {"name": "capi-stream-overrides"}},
        {"secretRef": {"name": "capi-stream-proxy-credentials"}},
    ]
    validate(rendered, "Deployment")


def test_without_extensions_the_pod_has_only_the_charts_own(
    render: Callable[..., Rendered],
) -> None:
    pod = render().pod_spec()
    assert "initContainers" not in pod
    assert [c["name"] for c in pod["containers"]] == ["capi-stream"]
    assert "env" not in render().container()
    assert "envFrom" not in render().container()


def test_global_image_registry_wins_over_image_registry(render: Callable[..., Rendered]) -> None:
    version = render().deployment()["metadata"]["labels"]["app.kubernetes.io/version"]
    assert render().container()["image"] == f"capi-stream:{version}"
    own = render("default", "--set", "image.registry=ghcr.io/acme")
    assert own.container()["image"] == f"ghcr.io/acme/capi-stream:{version}"
    both = render(
        "default",
        "--set", "image.registry=ghcr.io/acme",
        "--set", "global.imageRegistry=mirror:5000/",
    )  # fmt: skip
    assert both.container()["image"] == f"mirror:5000/capi-stream:{version}"
    assert render("extended-values").container()["image"].startswith("registry.example.com/")
    assert (
        render("extended-values")
        .one("Pod")["spec"]["containers"][0]["image"]
        .startswith("registry.example.com/")
    )


def test_common_labels_and_annotations_are_on_every_object(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("extended-values")
    assert {d["kind"] for d in rendered.docs} >= {"Deployment", "Service", "PrometheusRule", "Pod"}
    for doc in rendered.docs:
        assert doc["metadata"]["labels"]["team"] == "conversions", doc["kind"]
        assert doc["metadata"]["annotations"]["owner"] == "growth-engineering", doc["kind"]
    template = rendered.deployment()["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "conversions"
    assert template["annotations"]["owner"] == "growth-engineering"
    # Never in selectors: they are immutable, and adding a label must not orphan the pods.
    assert "team" not in rendered.deployment()["spec"]["selector"]["matchLabels"]
    assert "team" not in rendered.one("Service", "-metrics")["spec"]["selector"]


def test_object_annotations_merge_with_common_ones(render: Callable[..., Rendered]) -> None:
    rendered = render(
        "default",
        "--set", "commonAnnotations.owner=growth",
        "--set", "metrics.service.annotations.scrape=yes",
    )  # fmt: skip
    service = rendered.one("Service", "-metrics")
    assert service["metadata"]["annotations"] == {"owner": "growth", "scrape": "yes"}


def test_security_contexts_are_values(render: Callable[..., Rendered]) -> None:
    rendered = render(
        "default",
        "--set", "podSecurityContext.runAsUser=20000",
        "--set", "podSecurityContext.fsGroup=null",
        "--set", "securityContext.readOnlyRootFilesystem=true",
        "--set", "securityContext.runAsUser=20000",
    )  # fmt: skip
    pod = rendered.pod_spec()["securityContext"]
    assert pod["runAsUser"] == 20000
    assert "fsGroup" not in pod
    assert pod["runAsNonRoot"] is True
    assert rendered.container()["securityContext"]["runAsUser"] == 20000
    validate(rendered, "Deployment")


@pytest.mark.parametrize(
    "args",
    [
        ["--api-versions", "security.openshift.io/v1"],
        ["--set", "global.compatibility.openshift.adaptSecurityContext=force"],
    ],
    ids=["detected", "forced"],
)
def test_openshift_leaves_uid_gid_and_fs_group_to_the_scc(
    render: Callable[..., Rendered], args: list[str]
) -> None:
    rendered = render("default", *args)
    for pod in (rendered.pod_spec(), rendered.one("Pod")["spec"]):
        context = pod["securityContext"]
        assert not FIXED_IDS & context.keys()
        # Everything restricted-v2 allows stays.
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    container = rendered.container()["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    validate(rendered, "Deployment")
    validate(rendered, "Pod")


def test_openshift_adaptation_can_be_disabled(render: Callable[..., Rendered]) -> None:
    rendered = render(
        "default",
        "--api-versions", "security.openshift.io/v1",
        "--set", "global.compatibility.openshift.adaptSecurityContext=disabled",
    )  # fmt: skip
    assert rendered.pod_spec()["securityContext"].keys() >= FIXED_IDS
    assert render().pod_spec()["securityContext"].keys() >= FIXED_IDS


def test_a_whole_probe_replaces_the_charts(render: Callable[..., Rendered]) -> None:
    container = render("extended-values").container()
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }
    # The others keep the chart's, timed by `probes.*`.
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "metrics"},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    exec_probe = render("default", "--set", "startupProbe.exec.command[0]=/bin/true")
    assert exec_probe.container()["startupProbe"] == {"exec": {"command": ["/bin/true"]}}


def test_hpa_behavior_is_passed_through(render: Callable[..., Rendered]) -> None:
    hpa = render("extended-values").one("HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert "behavior" not in render("existing-secret-values").one("HorizontalPodAutoscaler")["spec"]


def test_keda_fallback_activation_and_scale_to_zero(render: Callable[..., Rendered]) -> None:
    scaled = render(
        "keda-values",
        "--set", "autoscaling.keda.fallback.failureThreshold=3",
        "--set", "autoscaling.keda.fallback.replicas=4",
        "--set", "autoscaling.keda.activationLagThreshold=50",
        "--set", "autoscaling.minReplicas=0",
    ).one("ScaledObject")  # fmt: skip
    assert scaled["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 4}
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["activationLagThreshold"] == "50"
    plain = render("keda-values").one("ScaledObject")
    assert "fallback" not in plain["spec"]
    assert "activationLagThreshold" not in plain["spec"]["triggers"][0]["metadata"]


def test_extra_egress_lets_the_pods_reach_a_proxy(render: Callable[..., Rendered]) -> None:
    policy = render("extended-values").one("NetworkPolicy")["spec"]
    proxy = policy["egress"][-1]
    assert proxy == {
        "to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
        "ports": [{"port": 3128, "protocol": "TCP"}],
    }
    # The chart's own rules stay in front of it.
    chart_rules = render("sasl-values").one("NetworkPolicy")["spec"]["egress"]
    assert policy["egress"][0] == chart_rules[0]  # DNS
    assert len(policy["egress"]) == len(chart_rules) + 1


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pdb_never_blocks_a_drain_on_unready_pods(
    render: Callable[..., Rendered], value_set: str
) -> None:
    for pdb in render(value_set).of_kind("PodDisruptionBudget"):
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_helm_test_pod_runs_verify_with_the_pods_configuration(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("extended-values")
    pod = rendered.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    (verify,) = spec["containers"]
    assert verify["command"] == [
        "capi-stream",
        "verify",
        "--config",
        "/etc/capi-stream/config.yaml",
    ]
    forwarder = rendered.container()
    # What `run` sees, `verify` sees: config, secrets, extra mounts, env and image.
    assert verify["image"] == forwarder["image"]
    assert verify["volumeMounts"] == forwarder["volumeMounts"]
    assert verify["env"] == forwarder["env"]
    assert verify["securityContext"] == forwarder["securityContext"]
    assert spec["volumes"] == rendered.pod_spec()["volumes"]
    assert spec["securityContext"] == rendered.pod_spec()["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    # Selected by the NetworkPolicy (it must reach Kafka and Pinterest), not by the metrics Service.
    labels = pod["metadata"]["labels"]
    selector = rendered.one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert not rendered.one("Service", "-metrics")["spec"]["selector"].items() <= labels.items()
    validate(rendered, "Pod")


def test_helm_test_pod_mounts_sasl_and_ca_secrets_too(render: Callable[..., Rendered]) -> None:
    rendered = render("sasl-values")
    mounts = {m["name"] for m in rendered.one("Pod")["spec"]["containers"][0]["volumeMounts"]}
    assert {"kafka-sasl", "kafka-ca", "pinterest-token", "config"} <= mounts


def test_helm_test_pod_can_be_left_out(render: Callable[..., Rendered]) -> None:
    assert render("default", "--set", "tests.verify.enabled=false").of_kind("Pod") == []
