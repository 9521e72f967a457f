"""The Dockerfile's structure (parsed with BuildKit's own parser) and hadolint's verdict on it."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
import yaml

from stream.settings import MetricsSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = dockerfile.parse_file(str(REPO_ROOT / "Dockerfile"))
CONFIG_PATH = "/etc/capi-stream/config.yaml"
CHART = REPO_ROOT / "helm" / "capi-stream"
CHART_TEMPLATES = CHART / "templates"


def chart_templates_text() -> str:
    """Every template of the chart: the pod's mounts live in a helper the test pod shares."""
    return "\n".join(p.read_text() for p in sorted(CHART_TEMPLATES.rglob("*")) if p.is_file())


def stages() -> list[list[dockerfile.Command]]:
    found: list[list[dockerfile.Command]] = []
    for command in COMMANDS:
        if command.cmd == "FROM":
            found.append([])
        if found:
            found[-1].append(command)
    return found


def base_image() -> str:
    (arg,) = [c for c in COMMANDS if c.cmd == "ARG" and c.value[0].startswith("PYTHON_IMAGE=")]
    return arg.value[0].split("=", 1)[1]


def final_stage() -> list[dockerfile.Command]:
    return stages()[-1]


def lock_pins(path: Path) -> dict[str, tuple[str, set[str]]]:
    """name → (version, hashes) of a `uv pip compile --generate-hashes` lock file."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if pin:
            current = pin.group(1).lower().replace("_", "-")
            pins[current] = (pin.group(2), set())
        for digest in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
            pins[current][1].add(digest)
    return pins


def test_multi_stage_on_one_pinned_slim_python() -> None:
    names = [stage[0].value[-1] for stage in stages()]
    assert names == ["build", "runtime"]
    assert all(stage[0].value[0] == "${PYTHON_IMAGE}" for stage in stages())
    image = base_image()
    # An exact patch-level tag or a digest: never a floating `3.11-slim` or `latest`.
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert requires["requires-python"] == ">=3.11"


def test_final_stage_runs_as_the_charts_non_root_user() -> None:
    users = [c.value[0] for c in final_stage() if c.cmd == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    pod_security = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert pod_security["runAsUser"] == int(uid)
    assert pod_security["runAsGroup"] == int(gid)
    last_user = max(i for i, c in enumerate(final_stage()) if c.cmd == "USER")
    assert all(c.cmd != "RUN" for c in final_stage()[last_user:])


def test_final_stage_has_no_build_tools_or_sources() -> None:
    runs = " ".join(" ".join(c.value) for c in final_stage() if c.cmd == "RUN")
    for tool in ("apt-get", "apk", "gcc", "build-essential", "pip install", "make", "uv "):
        assert tool not in runs, tool
    copies = [c for c in final_stage() if c.cmd in ("COPY", "ADD")]
    assert copies
    # Everything the runtime gets comes from the build stage's virtualenv.
    assert all(c.cmd == "COPY" and "--from=build" in c.flags for c in copies)


def test_build_stage_installs_hash_checked_wheels_only() -> None:
    runs = [" ".join(c.value) for c in stages()[0] if c.cmd == "RUN"]
    install = next(r for r in runs if "requirements-runtime.lock" in r)
    assert "--require-hashes" in install
    assert "--only-binary=:all:" in install
    assert any("--no-deps ." in r for r in runs), "the package itself is installed without deps"


def test_entrypoint_runs_the_forwarder_with_config_in_etc() -> None:
    (entrypoint,) = [c for c in final_stage() if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json
    assert list(entrypoint.value) == ["capi-stream", "run"]
    (cmd,) = [c for c in final_stage() if c.cmd == "CMD"]
    assert cmd.json
    assert list(cmd.value) == ["--config", CONFIG_PATH]
    # The chart overrides CMD with the same arguments and mounts its ConfigMap there.
    deployment = (CHART_TEMPLATES / "deployment.yaml").read_text()
    assert f'args: ["--config", "{CONFIG_PATH}"]' in deployment
    assert "mountPath: /etc/capi-stream\n" in chart_templates_text()


def test_exposes_the_metrics_port_with_a_healthcheck() -> None:
    port = MetricsSettings().port
    (expose,) = [c for c in final_stage() if c.cmd == "EXPOSE"]
    assert list(expose.value) == [str(port)]
    (health,) = [c for c in final_stage() if c.cmd == "HEALTHCHECK"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(health.value)


def test_runtime_lock_agrees_with_the_development_lock() -> None:
    runtime = lock_pins(REPO_ROOT / "requirements-runtime.lock")
    development = lock_pins(REPO_ROOT / "requirements.lock")
    regenerate = (
        "regenerate: uv pip compile pyproject.toml --generate-hashes --python-version 3.11 "
        "--python-platform x86_64-manylinux_2_28 -c requirements.lock -o requirements-runtime.lock"
    )
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in runtime, f"{name} missing from requirements-runtime.lock; {regenerate}"
    for name, (version, hashes) in runtime.items():
        assert name in development, f"{name} is not in requirements.lock; {regenerate}"
        assert version == development[name][0], f"{name} {version}: {regenerate}"
        assert hashes, f"{name} has no hashes; {regenerate}"
        assert hashes <= development[name][1], f"{name} hashes differ; {regenerate}"
    assert "pytest" not in runtime
    assert "mypy" not in runtime


def docker_context_includes(path: str) -> bool:
    """Docker's rule: the last matching .dockerignore pattern decides; `!` re-includes."""
    included = True
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/").replace("**/", "*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negate
    return included


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "requirements-runtime.lock", "stream/cli.py", "stream/spec"],
)
def test_build_context_holds_what_the_build_copies(path: str) -> None:
    assert docker_context_includes(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".local/kafka.env",
        "tests/conftest.py",
        "stream/__pycache__/cli.cpython-311.pyc",
        "helm/capi-stream/values.yaml",
    ],
)
def test_build_context_leaves_out_the_rest(path: str) -> None:
    assert not docker_context_includes(path)


def test_every_context_copy_is_allowed_by_dockerignore() -> None:
    for command in COMMANDS:
        if command.cmd == "COPY" and not command.flags:
            for source in command.value[:-1]:
                assert docker_context_includes(source), source
                assert (REPO_ROOT / source).exists(), source


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(REPO_ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    # One release number: `make chart` packages capi-stream-<version>.tgz for image <version>.
    assert chart["version"] == project["version"]


def make(target: str, path: str, *variables: str) -> subprocess.CompletedProcess[str]:
    make_bin = shutil.which("make")
    assert make_bin is not None
    return subprocess.run(
        [make_bin, "--no-print-directory", target, *variables],
        cwd=REPO_ROOT,
        env={"PATH": path, "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tools_dir(directory: Path, *tools: str) -> Path:
    """A PATH holding only `tools` (symlinks to the real ones): no container engine by accident."""
    directory.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (directory / tool).symlink_to(found)
    return directory


@pytest.mark.parametrize("engine", ["docker", "podman", "buildah"])
def test_make_image_builds_this_dockerfile_with_the_first_engine_found(
    tmp_path: Path, engine: str
) -> None:
    path = tools_dir(tmp_path / "bin", "sed")
    log = tmp_path / "calls"
    fake = path / engine
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    result = make("image", str(path), "IMAGE=registry.example.com/capi-stream")
    assert result.returncode == 0, result.stderr
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    build = "bud" if engine == "buildah" else "build"
    image = f"registry.example.com/capi-stream:{version}"
    assert log.read_text() == f"{build} -t {image} -f Dockerfile .\n"


def test_make_image_says_clearly_when_no_engine_is_installed(tmp_path: Path) -> None:
    result = make("image", str(tools_dir(tmp_path / "bin", "sed")))
    assert result.returncode != 0
    assert "no container engine found (docker, podman or buildah)" in result.stderr
