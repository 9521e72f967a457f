"""NOTES.txt renders and warns about what is missing (helm renders it only on a real install)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import CHART, REQUIRED, values_args

# Wraps the notes in a ConfigMap so `helm template` renders them with the chart's own helpers.
WRAPPER = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | quote }}
"""


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("chart") / "capi-stream"
    shutil.copytree(CHART, chart)
    (chart / "notes").mkdir()
    (chart / "templates" / "NOTES.txt").rename(chart / "notes" / "NOTES.txt")
    (chart / "templates" / "notes-wrapper.yaml").write_text(WRAPPER)
    return chart


def notes(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], chart: Path, *args: str
) -> str:
    result = run_helm(
        "template", "capi", str(chart), "--show-only", "templates/notes-wrapper.yaml", *args
    )
    assert result.returncode == 0, result.stderr
    text = yaml.safe_load(result.stdout)["data"]["notes"]
    assert isinstance(text, str)
    return text


def test_notes_warn_when_the_defaults_are_not_enough(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], notes_chart: Path
) -> None:
    text = notes(run_helm, notes_chart, "--namespace", "conversions", *REQUIRED)
    assert "no access token" in text
    assert "a source has no ad account" in text
    assert "rollout status deployment/capi-capi-stream" in text


def test_notes_are_quiet_when_configured(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], notes_chart: Path
) -> None:
    text = notes(run_helm, notes_chart, *values_args("keda-values"))
    assert "WARNING" not in text
    assert "port-forward svc/capi-capi-stream-metrics 9108" in text
    assert "helm test capi --namespace default --logs" in text


def test_notes_point_out_idle_replicas(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], notes_chart: Path
) -> None:
    text = notes(run_helm, notes_chart, *REQUIRED, "--set", "replicaCount=8")
    assert "replicaCount (8) exceeds kafka.partitions (6)" in text
    # Idle replicas are ready (DESIGN §5): they cost resources but never hold up a rollout.
    assert "2 consumers stay idle (ready, without partitions)" in text


def test_notes_do_not_warn_when_replicas_equal_partitions(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], notes_chart: Path
) -> None:
    # A rollout's surge pod is ready without a partition, so a full group is fine.
    text = notes(run_helm, notes_chart, *REQUIRED, "--set", "replicaCount=6")
    assert "NOTE" not in text


def test_notes_warn_when_a_quality_token_is_given_without_enabling_the_poller(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], notes_chart: Path
) -> None:
    # A token alone renders nothing: without the warning the operator would wait for metrics.
    args = (*values_args("keda-values"), "--set", "pinterest.quality.enabled=false")
    text = notes(run_helm, notes_chart, *args)
    assert "pinterest.quality has a token but is not enabled" in text
    enabled = notes(run_helm, notes_chart, *values_args("keda-values"))
    assert "pinterest.quality" not in enabled
