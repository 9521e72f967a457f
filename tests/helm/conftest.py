"""Fixtures for the Helm chart tests: the pinned `helm` binary and a cached renderer."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "capi-stream"
INSTALL_HELM = REPO_ROOT / "scripts" / "install_helm.sh"
RELEASE = "capi"
NAMESPACE = "conversions"

# The value sets every structural test runs over: the defaults plus each ci/*.yaml.
VALUE_SETS = ["default", *sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))]
# The one value without a default: the chart refuses to render without it.
REQUIRED = ["--set", "kafka.bootstrapServers=kafka.kafka.svc:9092"]


def values_args(value_set: str) -> list[str]:
    return REQUIRED if value_set == "default" else ["-f", str(CHART / "ci" / f"{value_set}.yaml")]


@dataclass(frozen=True, slots=True)
class Rendered:
    """The manifests `helm template` produced for one set of values."""

    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
        return found[0]

    def config_map(self) -> dict[str, Any]:
        return self.one("ConfigMap", "capi-stream")

    def config(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.config_map()["data"]["config.yaml"])
        assert isinstance(loaded, dict)
        return loaded

    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    def pod_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment()["spec"]["template"]["spec"]
        return spec

    def container(self) -> dict[str, Any]:
        """The capi-stream container (sidecars may sit next to it)."""
        (container,) = [c for c in self.pod_spec()["containers"] if c["name"] == "capi-stream"]
        assert isinstance(container, dict)
        return container

    def mounted_secret(self, path: str) -> tuple[str, str, dict[str, Any] | None]:
        """The Secret behind a file the config names, followed through the container's mount
        and the pod's volume: its name, its key, and the Secret itself when the chart renders
        it (None for one the operator manages). The file is the volume's only item."""
        file = PurePosixPath(path)
        mount = {m["mountPath"]: m["name"] for m in self.container()["volumeMounts"]}[
            str(file.parent)
        ]
        assert mount != "config", f"{path} would come from the ConfigMap"
        source = {v["name"]: v for v in self.pod_spec()["volumes"]}[mount]["secret"]
        (item,) = source["items"]
        assert item["path"] == file.name
        name = source["secretName"]
        rendered = {d["metadata"]["name"]: d for d in self.of_kind("Secret")}.get(name)
        return name, item["key"], rendered


@pytest.fixture(scope="session")
def helm() -> Path:
    """Builds helm from the Go module proxy on first use; later sessions reuse the cached binary."""
    result = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=1200, check=False
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
        )

    return run


@pytest.fixture(scope="session")
def render(
    run_helm: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., Rendered]:
    """`render("keda-values", "--set", "x=1")` → the parsed manifests (cached per arguments)."""
    cache: dict[tuple[str, ...], Rendered] = {}

    def do_render(value_set: str = "default", *extra: str) -> Rendered:
        key = (value_set, *extra)
        if key not in cache:
            result = run_helm(*template_args(value_set, extra))
            assert result.returncode == 0, result.stderr
            docs = [d for d in yaml.safe_load_all(result.stdout) if d]
            cache[key] = Rendered(docs)
        return cache[key]

    return do_render


def template_args(value_set: str, extra: Sequence[str]) -> list[str]:
    return [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *values_args(value_set),
        *extra,
    ]
