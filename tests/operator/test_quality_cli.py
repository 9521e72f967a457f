"""`capi-stream quality` against the sandbox: text and JSON output, exit codes 0, 1 and 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.cli import main
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess, valid_event


def write_config(tmp_path: Path, url: str, token: str, **quality: Any) -> Path:
    config = tmp_path / "quality.yaml"
    pinterest: dict[str, Any] = {
        "api_base_url": url,
        "access_token": token,
        "ad_account_id": DEFAULT_AD_ACCOUNT,
    }
    if quality:
        pinterest["quality"] = quality
    config.write_text(yaml.safe_dump({"pinterest": pinterest}))
    return config


def quality(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["quality", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_text_output_shows_status_components_and_issues(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sandbox.send([valid_event("a"), valid_event("b")]).status == 200
    config = write_config(tmp_path, sandbox.url, sandbox.token)
    code, out, _ = quality(capsys, "--config", str(config))
    assert code == 0, out
    assert f"ad account {DEFAULT_AD_ACCOUNT}" in out
    assert "CONVERSIONS_API / WEB, last 1d: FAIR" in out
    assert "CONVERSIONS_API / WEB, last 14d: FAIR" in out
    assert "hashed_email" in out
    assert "issue source_url/checkout: Missing source_url (missing_source_url)" in out
    assert out.rstrip().endswith("result: OK")


def test_json_output_parses_and_keeps_pinterests_shape(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sandbox.send([valid_event("a")]).status == 200
    config = write_config(tmp_path, sandbox.url, sandbox.token)
    code, out, _ = quality(capsys, "--config", str(config), "--json")
    assert code == 0
    (account,) = json.loads(out)["ad_accounts"]
    assert account["ad_account_id"] == DEFAULT_AD_ACCOUNT
    assert account["errors"] == []
    assert [s["lookback_period"] for s in account["scores"]] == ["1d", "14d"]
    email = account["scores"][0]["quality_components"]["hashed_email"]["checkout"]
    assert email == {"coverage": 100.0, "issues": []}


def test_a_refused_read_token_is_a_runtime_failure(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The conversions token works; the separate ads:read token is the one used, and refused.
    config = write_config(tmp_path, sandbox.url, sandbox.token, access_token="not-ads-read")
    code, out, _ = quality(capsys, "--config", str(config))
    assert code == 1
    assert "last 1d: not read: HTTP 401: Authentication failed." in out
    assert "ads:read" in out
    assert "not-ads-read" not in out
    code, out, _ = quality(capsys, "--config", str(config), "--json")
    assert code == 1
    errors = json.loads(out)["ad_accounts"][0]["errors"]
    assert {(e["lookback_period"], e["reason"], e["status"]) for e in errors} == {
        ("1d", "unauthorized", 401),
        ("14d", "unauthorized", 401),
    }


def test_an_account_the_token_may_not_read_fails_only_that_account(
    sandbox_factory: Callable[..., SandboxProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = sandbox_factory("--ad-account", DEFAULT_AD_ACCOUNT)
    config = write_config(tmp_path, sandbox.url, sandbox.token)
    code, out, _ = quality(
        capsys, "--config", str(config), "--ad-account", DEFAULT_AD_ACCOUNT, "--ad-account", "111"
    )
    assert code == 1
    assert "last 1d: no events scored yet" in out
    assert "HTTP 403" in out
    assert "result: FAILED (1 of 2 ad accounts not fully read)" in out


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--ad-account", "12ab"], {}, "--ad-account"),
        ([], {"CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID": ""}, "pinterest.ad_account_id"),
        ([], {"CAPI_STREAM_PINTEREST__QUALITY__POLL_INTERVAL_S": "0"}, "poll_interval_s"),
    ],
)
def test_configuration_and_usage_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    for key, value in {"CAPI_STREAM_PINTEREST__ACCESS_TOKEN": "t", **environ}.items():
        monkeypatch.setenv(key, value)
    code, out, err = quality(capsys, *args)
    assert code == 2
    assert out == ""
    assert message in err


def test_no_token_at_all_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID", DEFAULT_AD_ACCOUNT)
    code, _, err = quality(capsys)
    assert code == 2
    assert "pinterest.quality.access_token" in err
