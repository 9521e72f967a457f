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
        ("sources: [{topic: a, enrich: names}]", {}, "sources.0.enrich"),
        ("identity: {ttl_days: 0}", {}, "identity.ttl_days"),
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


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "batching: {max_events: 1001, surprise: 1}\npinterest: {api_base_url: 'ftp://x'}\n"
    )
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config, environ={})
    keys = [key for key, _ in raised.value.problems]
    assert keys == ["pinterest.api_base_url", "batching.max_events", "batching.surprise"]
    assert raised.value.key == "pinterest.api_base_url"
    result = capi_stream("check-config", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert "invalid configuration (3 problems):" in result.stderr
    assert all(f"  {key}: " in result.stderr for key in keys)
    assert "more problem" not in result.stderr


def test_require_runnable_lists_every_missing_piece(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"pinterest: {{ca_file: {tmp_path / 'absent.pem'}}}\n")
    result = capi_stream("check-config", "--config", str(config))
    assert result.returncode == 2
    for key in ("pinterest.access_token", "pinterest.ca_file", "pinterest.ad_account_id"):
        assert f"  {key}: " in result.stderr


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("CAPI_STREAM_KAFKA_BOOTSTRAP_SERVERS", "CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS"),
        ("CAPI_STREAM_PINTEREST__ACCESS_TOKN", "CAPI_STREAM_PINTEREST__ACCESS_TOKEN"),
        ("capi_stream_kafka__groupid", "CAPI_STREAM_KAFKA__GROUP_ID"),
        ("CAPI_STREAM_PINTEREST__QUALITY_ENABLED", "CAPI_STREAM_PINTEREST__QUALITY__ENABLED"),
    ],
)
def test_unknown_variable_is_an_error_naming_the_closest(
    tmp_path: Path, variable: str, closest: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ={variable: "x"})
    assert raised.value.key == variable
    assert f"did you mean {closest}?" in str(raised.value)
    result = capi_stream("check-config", "--offline", env={variable: "x"})
    assert result.returncode == 2
    assert closest in result.stderr


def test_variables_the_settings_read_are_not_unknown() -> None:
    environ = {
        "CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS": "k:9092",
        "capi_stream_metrics__port": "9100",
        "CAPI_STREAM_KAFKA__PROPERTIES__CLIENT_RACK": "a",
        "CAPI_STREAM_PINTEREST__QUALITY__POLL_INTERVAL_S": "60",  # a nested section
        "CAPI_STREAM_SOURCES": '[{"topic": "web"}]',
        "CAPI_STREAM_CACHE": "/tmp/cache",  # the development scripts' own variable
        "KAFKA_BOOTSTRAP_SERVERS": "elsewhere",
    }
    settings = load_settings(environ=environ)
    assert settings.kafka.bootstrap_servers == "k:9092"
    assert settings.metrics.port == 9100
    assert settings.pinterest.quality.poll_interval_s == 60
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ={**environ, "CAPI_STREAM_NONSENSE": "1"})
    assert raised.value.key == "CAPI_STREAM_NONSENSE"
    assert "CAPI_STREAM_<SECTION>__<KEY>" in str(raised.value)


@pytest.mark.parametrize(
    ("yaml_text", "key", "hint"),
    [
        (
            "pinterest: {ad_account_id: 549755885175}",
            "pinterest.ad_account_id",
            'ad_account_id: "549755885175"',
        ),
        (
            "sources: [{topic: a, ad_account_id: 12}]",
            "sources.0.ad_account_id",
            'ad_account_id: "12"',
        ),
        ("pinterest: {allowed_ad_accounts: [7]}", "pinterest.allowed_ad_accounts.0", '["7"]'),
        (
            "pinterest: {ad_account_id: 1234567890123456789012}",
            "pinterest.ad_account_id",
            "a number of 22 digits: an ad account id is a string of 1 to 18 digits",
        ),
        ("kafka: {group_id: 42}", "kafka.group_id", 'quote the value in YAML (group_id: "...")'),
        ("kafka: {group_id: yes}", "kafka.group_id", "a boolean, not a string"),
    ],
)
def test_unquoted_number_gets_a_quoting_hint(
    tmp_path: Path, yaml_text: str, key: str, hint: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config, environ={})
    assert raised.value.key == key
    assert hint in str(raised.value)
    assert "Input should be a valid string" not in str(raised.value)


def test_bare_command_prints_the_commands_and_exits_2() -> None:
    result = capi_stream()
    assert result.returncode == 2
    assert "usage: capi-stream" in result.stderr
    for command in ("run", "transform", "verify", "dlq", "check-config"):
        assert f"\n  {command} " in result.stderr
    assert "required" not in result.stderr


def test_identity_enrichment_needs_a_segment_source(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources: [{topic: crm, format: pinterest, enrich: identity}]")
    result = capi_stream("check-config", "--offline", "--config", str(config))
    assert result.returncode == 2
    assert "sources.crm.enrich" in result.stderr
