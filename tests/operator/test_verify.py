"""`capi-stream verify` against the sandbox: good and bad token, wrong account, failed event."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from stream.cli import main
from stream.commands.verify import TEST_EMAIL, synthetic_event
from stream.validate import check_event
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

OTHER_ACCOUNT = "549764106779"


def write_config(
    tmp_path: Path, url: str, token: str, *accounts: str, timeout_s: float = 10
) -> Path:
    """Sources on the given accounts: the first as the default, the rest per source."""
    sources: list[dict[str, str]] = [{"topic": "web"}]
    sources += [{"topic": f"t{i}", "ad_account_id": a} for i, a in enumerate(accounts[1:])]
    config = tmp_path / "verify.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pinterest": {
                    "api_base_url": url,
                    "access_token": token,
                    "ad_account_id": accounts[0],
                },
                "sources": sources,
                "sending": {"request_timeout_s": timeout_s},
            }
        )
    )
    return config


def verify(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify", "--config", str(config), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_good_token_and_account(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 0, out
    assert f"ad account {DEFAULT_AD_ACCOUNT}" in out
    assert "HTTP 200" in out
    assert "token: OK" in out
    assert "ad account: OK" in out
    assert "event 0: processed" in out
    assert re.search(r"x-ratelimit-limit: \d+, x-ratelimit-remaining: \d+", out)
    assert "result: OK (1 of 1" in out
    assert sandbox.token not in out
    stats = sandbox.stats()
    # Test mode: evaluated but never recorded as a real conversion.
    assert stats["requests"]["by_status"] == {"200": 1}
    assert stats["events"]["test"] == 1
    assert stats["events"]["processed"] == 0


def test_bad_token(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "not-the-sandbox-token-s3cret"
    config = write_config(tmp_path, sandbox.url, wrong, DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "HTTP 401" in out
    assert "token rejected" in out
    assert "result: FAILED (0 of 1" in out
    assert wrong not in out


def test_wrong_and_malformed_accounts_among_good_ones(
    sandbox_factory: Callable[..., SandboxProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = sandbox_factory("--ad-account", DEFAULT_AD_ACCOUNT)
    config = write_config(
        tmp_path, sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT, OTHER_ACCOUNT, DEFAULT_AD_ACCOUNT
    )
    code, out = verify(config, capsys)
    assert code == 1
    # Two sources share the default account: it is verified once.
    assert out.count(f"ad account {DEFAULT_AD_ACCOUNT} ") == 1
    other = out.split(f"ad account {OTHER_ACCOUNT}", 1)[1]
    assert "HTTP 403" in other
    assert "ad account refused" in other
    assert "Pinterest says: code 29" in other
    assert "result: FAILED (1 of 2" in out

    code, out = verify(config, capsys, "--ad-account", "not-an-id")
    assert code == 1
    assert "HTTP 404" in out
    assert "ad account not found" in out


def test_reports_failed_event_and_warnings(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_faults(reject_event_ids="^capi-stream-verify-")
    config = write_config(tmp_path, sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "HTTP 422" in out
    assert "event 0: failed" in out
    assert "error: Event rejected by the sandbox's reject_event_ids fault." in out


def test_unreachable_api_and_missing_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    config = write_config(tmp_path, "http://127.0.0.1:9", "t", DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "no answer after" in out
    assert "(connection)" in out

    config.write_text(yaml.safe_dump({"pinterest": {"ad_account_id": DEFAULT_AD_ACCOUNT}}))
    code, out = verify(config, capsys)
    assert code == 2
    assert "pinterest.access_token" in out


def test_hanging_api_times_out(
    sandbox: SandboxProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_faults(hang=1.0)
    config = write_config(tmp_path, sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT, timeout_s=1)
    code, out = verify(config, capsys)
    assert code == 1
    assert "(timeout)" in out
    assert "result: FAILED (0 of 1" in out


def test_synthetic_event_is_valid_and_marked() -> None:
    event = synthetic_event(1_700_000_000)
    assert check_event(event) is None
    assert event["event_id"].startswith("capi-stream-verify-")
    assert event["user_data"]["em"] == [hashlib.sha256(TEST_EMAIL.encode()).hexdigest()]
    assert TEST_EMAIL.endswith("@example.com")
    assert synthetic_event(1)["event_id"] != synthetic_event(1)["event_id"]
