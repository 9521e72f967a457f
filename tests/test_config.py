"""Configuration: example files, environment overrides, errors naming the key, the reference doc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.config_reference import REFERENCE, render
from stream.errors import ConfigurationError
from stream.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config").glob("*.yaml"))
SECRET = "tok-do-not-print-4f1d"


def capi_stream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"minimal.yaml", "multi-source.yaml", "production.yaml"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_check_config(example: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    password_file = tmp_path / "password"
    password_file.write_text("kafka-secret\n")
    result = capi_stream(
        "check-config",
        "--config",
        str(example),
        env={
            "CAPI_STREAM_PINTEREST__ACCESS_TOKEN_FILE": str(token_file),
            "CAPI_STREAM_KAFKA__SASL_PASSWORD_FILE": str(password_file),
        },
    )
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "kafka-secret" not in result.stdout + result.stderr


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('kafka: {group_id: from-file}\npinterest: {ad_account_id: "123"}\n')
    settings = load_settings(
        config,
        environ={
            "CAPI_STREAM_KAFKA__GROUP_ID": "from-env",
            "CAPI_STREAM_KAFKA__TOPICS": "web, app",
            "CAPI_STREAM_METRICS__PORT": "9999",
        },
    )
    assert settings.kafka.group_id == "from-env"
    assert settings.pinterest.ad_account_id == "123"
    assert [s.topic for s in settings.sources] == ["web", "app"]
    assert settings.metrics.port == 9999


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        ("batching: {max_events: 1001}", {}, "batching.max_events"),
        ("batching: {surprise: 1}", {}, "batching.surprise"),
        ("pinterest: {api_base_url: 'http://api.example.com'}", {}, "pinterest.api_base_url"),
        ("pinterest: {ad_account_id: 'acct-1'}", {}, "pinterest.ad_account_id"),
        ("", {"CAPI_STREAM_METRICS__PORT": "not-a-port"}, "metrics.port"),
        ("sources: [{topic: a, format: csv}]", {}, "sources.0.format"),
    ],
)
def test_invalid_configuration_names_the_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], key: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config, environ=env)
    assert raised.value.key == key
    result = capi_stream("check-config", "--offline", "--config", str(config), env=env)
    assert result.returncode == 2
    assert key in result.stderr


def test_missing_token_exits_2_and_never_prints_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('pinterest: {ad_account_id: "123"}\n')
    result = capi_stream("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "pinterest.access_token" in result.stderr
    shown = capi_stream(
        "check-config",
        "--config",
        str(config),
        env={"CAPI_STREAM_PINTEREST__ACCESS_TOKEN": SECRET},
    )
    assert shown.returncode == 0
    assert SECRET not in shown.stdout
    assert "access_token: '***'" in shown.stdout


def test_configuration_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), "run: python scripts/config_reference.py"


def test_yaml_syntax_error_names_the_position_but_never_echoes_the_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"pinterest:\n  access_token: {SECRET}\n  ad_account_id: [123\n")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)
    assert raised.value.key == "--config"
    assert "line " in str(raised.value)
    assert SECRET not in str(raised.value)
    result = capi_stream("check-config", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr


def test_check_config_masks_oauth_config_and_url_passwords(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "kafka:\n"
        "  properties:\n"
        f"    sasl.oauthbearer.config: 'clientId=capi clientSecret={SECRET}'\n"
        "pinterest:\n"
        f"  api_base_url: 'https://proxyuser:{SECRET}@api.example.com'\n"
    )
    result = capi_stream("check-config", "--offline", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "https://proxyuser:***@api.example.com" in result.stdout
    assert "sasl.oauthbearer.config: '***'" in result.stdout


@pytest.mark.parametrize(
    ("kafka", "warned"),
    [
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "SASL_PLAINTEXT"),
        ({"properties": {"enable.ssl.certificate.verification": "false"}}, "not verified"),
        ({"properties": {"ssl.endpoint.identification.algorithm": "none"}}, "not verified"),
    ],
)
def test_weakened_transport_security_is_warned_about(
    tmp_path: Path, kafka: dict[str, object], warned: str
) -> None:
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"kafka": kafka}))
    assert any(warned in w for w in load_settings(config).security_warnings())
    result = capi_stream("check-config", "--offline", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr
    assert warned in result.stderr


def test_default_transport_raises_no_security_warning() -> None:
    assert load_settings(environ={}).security_warnings() == []


def test_configured_ad_accounts_are_the_default_the_sources_and_the_allow_list(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "pinterest: {ad_account_id: '1', allowed_ad_accounts: ['3', '4']}\n"
        "sources: [{topic: web}, {topic: crm, format: pinterest, ad_account_id: '2'}]\n"
    )
    assert load_settings(config).configured_ad_accounts() == {"1", "2", "3", "4"}
    config.write_text("pinterest: {allowed_ad_accounts: ['12a']}\n")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)
    assert raised.value.key == "pinterest.allowed_ad_accounts.0"


def test_secret_values_feed_log_redaction(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"pinterest: {{access_token: tok-1, api_base_url: 'https://u:pw-2@h.example'}}\n"
        f"kafka: {{sasl_password: pw-3, properties: {{sasl.oauthbearer.config: 'x={SECRET}'}}}}\n"
    )
    assert set(load_settings(config).secret_values()) == {"tok-1", "pw-2", "pw-3", f"x={SECRET}"}
