"""`pinterest.quality`: the Event Quality Score poller's values. Its ads:read token is a Secret
mounted as a file, like the conversions token, and the forwarder accepts the rendered config."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.quality import quality_token
from stream.settings import load_settings
from tests.helm.conftest import Rendered

CONVERSIONS_TOKEN = "ci-conversions-token-0123456789"
QUALITY_TOKEN = "ci-ads-read-token-0123456789"
QUALITY_DIR = "/var/run/secrets/capi-stream/pinterest-quality"
QUALITY_SECRET = "capi-capi-stream-pinterest-quality"
ENABLED = ["--set", "pinterest.quality.enabled=true"]
CONVERSIONS = ["--set", f"pinterest.accessToken={CONVERSIONS_TOKEN}"]
OWN_TOKEN = [*ENABLED, *CONVERSIONS, "--set", f"pinterest.quality.accessToken={QUALITY_TOKEN}"]
EXISTING_SECRET = [
    *ENABLED,
    *CONVERSIONS,
    "--set", "pinterest.quality.existingSecret=ads-read",
    "--set", "pinterest.quality.existingSecretKey=token",
]  # fmt: skip


def quality_volume(pod_spec: dict[str, Any]) -> dict[str, Any] | None:
    return next((v for v in pod_spec["volumes"] if v["name"] == "pinterest-quality-token"), None)


def stage_token_files(rendered: Rendered, config: dict[str, Any], tmp_path: Path) -> None:
    """Points each `access_token_file` at a local copy of what the kubelet would mount there."""
    for section in (config["pinterest"], config["pinterest"].get("quality", {})):
        if "access_token_file" not in section:
            continue
        name, key, secret = rendered.mounted_secret(section["access_token_file"])
        content = (
            base64.b64decode(secret["data"][key]).decode() if secret else f"operator-managed-{name}"
        )
        local = tmp_path / name
        local.write_text(content + "\n")
        section["access_token_file"] = str(local)


def test_quality_is_off_by_default_and_adds_nothing(render: Callable[..., Rendered]) -> None:
    # A token alone does not switch polling on: the operator enables it explicitly.
    for rendered in (render(), render("default", "--set", "pinterest.quality.accessToken=t")):
        assert "quality" not in rendered.config()["pinterest"]
        assert [s["metadata"]["name"] for s in rendered.of_kind("Secret")] == [
            "capi-capi-stream-pinterest"
        ]
        assert quality_volume(rendered.pod_spec()) is None


def test_quality_token_is_a_secret_mounted_where_the_config_points(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("default", *OWN_TOKEN)
    assert rendered.config()["pinterest"]["quality"] == {
        "enabled": True,
        "poll_interval_s": 1800,
        "request_timeout_s": 10,
        "access_token_file": f"{QUALITY_DIR}/access-token",
    }
    secret = rendered.one("Secret", "-pinterest-quality")
    assert secret["metadata"]["name"] == QUALITY_SECRET
    assert base64.b64decode(secret["data"]["access-token"]).decode() == QUALITY_TOKEN
    mount = {"name": "pinterest-quality-token", "mountPath": QUALITY_DIR, "readOnly": True}
    source = {
        "secretName": QUALITY_SECRET,
        "defaultMode": 0o440,
        "items": [{"key": "access-token", "path": "access-token"}],
    }
    # The `helm test` pod runs `verify` with the forwarder's mounts, so it sees the file too.
    verify = rendered.one("Pod")["spec"]
    for pod_spec, container in (
        (rendered.pod_spec(), rendered.container()),
        (verify, verify["containers"][0]),
    ):
        assert mount in container["volumeMounts"]
        volume = quality_volume(pod_spec)
        assert volume is not None
        assert volume["secret"] == source


def test_quality_token_never_reaches_the_config_map_or_env(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("default", *OWN_TOKEN)
    encoded = base64.b64encode(QUALITY_TOKEN.encode()).decode()
    holders = [d["metadata"]["name"] for d in rendered.docs if encoded in json.dumps(d)]
    assert holders == [QUALITY_SECRET]
    for doc in rendered.docs:
        assert QUALITY_TOKEN not in json.dumps(doc), doc["kind"]
    assert "access_token" not in rendered.config()["pinterest"]["quality"]
    assert "env" not in rendered.container()


def test_quality_existing_secret_replaces_the_chart_secret(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("default", *EXISTING_SECRET)
    config = rendered.config()["pinterest"]["quality"]
    assert config["access_token_file"] == f"{QUALITY_DIR}/token"
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == QUALITY_SECRET]
    volume = quality_volume(rendered.pod_spec())
    assert volume is not None
    assert volume["secret"]["secretName"] == "ads-read"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]


def test_without_its_own_token_quality_mounts_nothing_more(
    render: Callable[..., Rendered],
) -> None:
    rendered = render("default", *ENABLED, *CONVERSIONS)
    assert rendered.config()["pinterest"]["quality"] == {
        "enabled": True,
        "poll_interval_s": 1800,
        "request_timeout_s": 10,
    }
    assert quality_volume(rendered.pod_spec()) is None
    assert not [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == QUALITY_SECRET]


@pytest.mark.parametrize(
    ("args", "token"),
    [
        (OWN_TOKEN, QUALITY_TOKEN),
        (EXISTING_SECRET, "operator-managed-ads-read"),
        # No token of its own: the poller falls back to the conversions token.
        ([*ENABLED, *CONVERSIONS], CONVERSIONS_TOKEN),
    ],
    ids=["own-token", "existing-secret", "conversions-token"],
)
def test_rendered_quality_config_is_what_the_forwarder_reads(
    render: Callable[..., Rendered], tmp_path: Path, args: list[str], token: str
) -> None:
    # Distinct numbers, so a value landing under the other key is caught.
    timing = [
        "--set", "pinterest.quality.pollIntervalSeconds=600",
        "--set", "pinterest.quality.requestTimeoutSeconds=5",
    ]  # fmt: skip
    account = ["--set-string", "pinterest.adAccountId=549755885175"]
    rendered = render("default", *account, *args, *timing)
    config = rendered.config()
    stage_token_files(rendered, config, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # The settings model forbids unknown keys, so a misnamed key fails here.
    settings = load_settings(path, environ={})
    settings.require_runnable()
    quality = settings.pinterest.quality
    assert quality.enabled is True
    assert quality.poll_interval_s == 600
    assert quality.request_timeout_s == 5
    assert quality_token(settings) == token
