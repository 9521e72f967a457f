"""The chart lints, renders and every manifest is a valid Kubernetes (or CRD) object."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from tests.helm.conftest import CHART, VALUE_SETS, Rendered, values_args

# The chart's floor (Chart.yaml kubeVersion) and the newest release kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]

DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": STRING_MAP},
}

# Required fields and types of the custom resources, transcribed from the upstream CRDs
# (prometheus-operator monitoring.coreos.com/v1, KEDA keda.sh/v1alpha1): no cluster here to
# install them into, so these hand-kept subsets stand in for their openAPIV3Schema.
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {
                        "type": "object",
                        "minProperties": 1,
                        "properties": {"matchLabels": STRING_MAP},
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "matchNames": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": DURATION},
                                "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": {"type": "string", "pattern": DURATION},
                                "rules": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "properties": {
                                            "alert": {"type": "string", "minLength": 1},
                                            "record": {"type": "string", "minLength": 1},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": {"type": "string", "pattern": DURATION},
                                            "labels": STRING_MAP,
                                            "annotations": STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "minLength": 1}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "fallback": {
                        "type": "object",
                        "required": ["failureThreshold", "replicas"],
                        "properties": {
                            "failureThreshold": {"type": "integer", "minimum": 0},
                            "replicas": {"type": "integer", "minimum": 0},
                        },
                    },
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string", "minLength": 1},
                                "metadata": STRING_MAP,
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string", "minLength": 1}},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object",
        "required": ["metadata", "spec"],
        "properties": {
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string", "minLength": 1},
                                "name": {"type": "string", "minLength": 1},
                                "key": {"type": "string", "minLength": 1},
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_passes_strictly(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], value_set: str
) -> None:
    result = run_helm("lint", str(CHART), "--strict", *values_args(value_set))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_every_manifest_validates(
    render: Callable[..., Rendered], value_set: str, k8s_version: str
) -> None:
    rendered = render(value_set)
    assert rendered.docs
    for doc in rendered.docs:
        crd_schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd_schema is not None:
            jsonschema.validate(doc, crd_schema)
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except SchemaNotFoundError:
            pytest.fail(
                f"{doc['apiVersion']} {doc['kind']} is neither core Kubernetes nor a known CRD"
            )


def test_value_sets_cover_every_optional_object(render: Callable[..., Rendered]) -> None:
    kinds = {doc["kind"] for value_set in VALUE_SETS for doc in render(value_set).docs}
    assert kinds >= {
        "Deployment",
        "ConfigMap",
        "Secret",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Pod",
    }


def test_crd_checks_catch_missing_required_fields(render: Callable[..., Rendered]) -> None:
    scaled = render("keda-values").one("ScaledObject")
    broken = {**scaled, "spec": {k: v for k, v in scaled["spec"].items() if k != "triggers"}}
    with pytest.raises(jsonschema.ValidationError, match="triggers"):
        jsonschema.validate(broken, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


def test_kubernetes_validation_catches_a_bad_field(render: Callable[..., Rendered]) -> None:
    deployment = render().deployment()
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_object_is_namespaced_and_labelled(render: Callable[..., Rendered]) -> None:
    for value_set in VALUE_SETS:
        for doc in render(value_set).docs:
            metadata = doc["metadata"]
            assert metadata["namespace"] == "conversions", (value_set, doc["kind"])
            assert metadata["labels"]["app.kubernetes.io/instance"] == "capi"
            assert metadata["labels"]["app.kubernetes.io/name"] == "capi-stream"
