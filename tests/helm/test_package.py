"""The release path: `make chart` packages the chart under the package's version, and the
package installs (renders) like the source tree."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helm.conftest import REPO_ROOT, REQUIRED

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def package(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    make = shutil.which("make")
    assert make is not None
    result = subprocess.run(
        [make, "--no-print-directory", "chart", f"DIST={dist}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    packaged = dist / f"capi-stream-{VERSION}.tgz"
    assert packaged.is_file(), list(dist.iterdir())
    return packaged


def test_package_carries_the_package_version(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], package: Path
) -> None:
    result = run_helm("show", "chart", str(package))
    assert result.returncode == 0, result.stderr
    chart = yaml.safe_load(result.stdout)
    assert chart["version"] == chart["appVersion"] == VERSION


def test_package_holds_the_chart_without_ci_values_or_plain_rules(package: Path) -> None:
    with tarfile.open(package) as archive:
        names = set(archive.getnames())
    assert "capi-stream/values.schema.json" in names
    assert "capi-stream/dashboards/capi-stream.json" in names
    assert "capi-stream/templates/tests/verify-pod.yaml" in names
    assert not any(name.startswith(("capi-stream/ci/", "capi-stream/rules/")) for name in names)


def test_package_renders_the_versioned_image_and_its_alerts(
    run_helm: Callable[..., subprocess.CompletedProcess[str]], package: Path
) -> None:
    result = run_helm(
        "template", "capi", str(package), *REQUIRED,
        "--set", "metrics.prometheusRule.enabled=true",
        "--set", "grafana.dashboard.enabled=true",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = {d["kind"] + "/" + d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout)}
    deployment = docs["Deployment/capi-capi-stream"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"capi-stream:{VERSION}"
    assert docs["PrometheusRule/capi-capi-stream"]["spec"]["groups"]
    assert "ConfigMap/capi-capi-stream-dashboard" in docs
