"""`capi-stream verify` against the sandbox and the real broker: good and bad token, wrong
account, failed event; missing topics, an unwritable dead-letter topic, an unreachable cluster."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from confluent_kafka.admin import NewTopic

from stream.cli import main
from stream.commands.verify import TEST_EMAIL, synthetic_event
from stream.validate import check_event
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

OTHER_ACCOUNT = "549764106779"


class ConfigWriter(Protocol):
    def __call__(
        self, url: str, token: str, *accounts: str, timeout_s: float = 10, **kafka: Any
    ) -> Path: ...


@pytest.fixture
def write_config(kafka: Broker, new_topic: Callable[..., str], tmp_path: Path) -> ConfigWriter:
    """Sources on the given accounts (the first as the default, the rest per source), each on a
    fresh topic of the real broker, with a fresh dead-letter topic: Kafka passes unless keyword
    arguments replace some of its settings."""

    def write(
        url: str, token: str, *accounts: str, timeout_s: float = 10, **kafka_settings: Any
    ) -> Path:
        sources: list[dict[str, str]] = [{"topic": new_topic()}]
        sources += [{"topic": new_topic(), "ad_account_id": a} for a in accounts[1:]]
        config = tmp_path / "verify.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "kafka": {
                        "bootstrap_servers": kafka.bootstrap,
                        "group_id": f"verify-{uuid.uuid4().hex[:8]}",
                        "dead_letter_topic": new_topic(),
                        **kafka_settings,
                    },
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

    return write


def verify(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify", "--config", str(config), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_good_token_and_account(
    sandbox: SandboxProcess, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT)
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
    sandbox: SandboxProcess, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "not-the-sandbox-token-s3cret"
    config = write_config(sandbox.url, wrong, DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "HTTP 401" in out
    assert "token rejected" in out
    assert "result: FAILED (0 of 1" in out
    assert wrong not in out


def test_wrong_and_malformed_accounts_among_good_ones(
    sandbox_factory: Callable[..., SandboxProcess],
    write_config: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = sandbox_factory("--ad-account", DEFAULT_AD_ACCOUNT)
    config = write_config(
        sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT, OTHER_ACCOUNT, DEFAULT_AD_ACCOUNT
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
    sandbox: SandboxProcess, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_faults(reject_event_ids="^capi-stream-verify-")
    config = write_config(sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "HTTP 422" in out
    assert "event 0: failed" in out
    assert "error: Event rejected by the sandbox's reject_event_ids fault." in out


def test_unreachable_api_and_missing_token(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    config = write_config("http://127.0.0.1:9", "t", DEFAULT_AD_ACCOUNT)
    code, out = verify(config, capsys)
    assert code == 1
    assert "no answer after" in out
    assert "(connection)" in out

    config.write_text(yaml.safe_dump({"pinterest": {"ad_account_id": DEFAULT_AD_ACCOUNT}}))
    code, out = verify(config, capsys)
    assert code == 2
    assert "pinterest.access_token" in out


def test_hanging_api_times_out(
    sandbox: SandboxProcess, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.set_faults(hang=1.0)
    config = write_config(sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT, timeout_s=1)
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


def topic_with_config(kafka: Broker, **config: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin()
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(timeout=30)
    kafka.wait_for_topic(name, 1)
    return name


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def kafka_lines(out: str) -> dict[str, str]:
    """`subject: state` for each Kafka line of the report."""
    section = out.split("\n\n", 1)[0].splitlines()[1:]
    return dict(line.strip().split(": ", 1) for line in section)


def test_kafka_checks_pass_without_a_token(
    kafka: Broker, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("http://127.0.0.1:9", "unused", DEFAULT_AD_ACCOUNT)
    settings = yaml.safe_load(config.read_text())
    del settings["pinterest"]["access_token"]
    config.write_text(yaml.safe_dump(settings))
    code, out = verify(config, capsys, "--only", "kafka")
    assert code == 0, out
    lines = kafka_lines(out)
    source, dlq = settings["sources"][0]["topic"], settings["kafka"]["dead_letter_topic"]
    assert lines[f"bootstrap {kafka.bootstrap}"] == "OK (1 broker)"
    assert lines[f"source topic {source}"].startswith("OK (1 partition")
    assert lines[f"dead-letter topic {dlq}"].startswith("OK (1 partition, max.message.bytes ")
    assert lines[f"group {settings['kafka']['group_id']}"] == "OK (not used yet)"
    assert "ad account" not in out
    assert out.endswith("result: OK (Kafka: OK)\n")


def test_every_kafka_problem_is_listed_along_with_pinterest(
    kafka: Broker,
    sandbox: SandboxProcess,
    write_config: ConfigWriter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny_dlq = topic_with_config(kafka, **{"max.message.bytes": "2000"})
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    config = write_config(
        sandbox.url, sandbox.token, DEFAULT_AD_ACCOUNT, dead_letter_topic=tiny_dlq
    )
    settings = yaml.safe_load(config.read_text())
    settings["sources"].append({"topic": missing})
    config.write_text(yaml.safe_dump(settings))
    code, out = verify(config, capsys)
    assert code == 1
    lines = kafka_lines(out)
    assert lines[f"source topic {missing}"].startswith("FAILED: does not exist")
    assert lines[f"source topic {settings['sources'][0]['topic']}"].startswith("OK")
    dlq_line = lines[f"dead-letter topic {tiny_dlq}"]
    assert dlq_line.startswith("FAILED: max.message.bytes 2000 is below source topic")
    assert "HTTP 200" in out, "Pinterest is checked too"
    assert "result: FAILED (1 of 1 ad accounts accepted the test event; Kafka: 2 problems)" in out
    # Looking never creates: the broker auto-creates topics, but not for verify.
    assert missing not in kafka.admin().list_topics(timeout=10).topics


def test_missing_dead_letter_topic_and_unreachable_cluster(
    kafka: Broker, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    config = write_config("http://127.0.0.1:9", "t", DEFAULT_AD_ACCOUNT, dead_letter_topic=missing)
    code, out = verify(config, capsys, "--only", "kafka")
    assert code == 1
    assert kafka_lines(out)[f"dead-letter topic {missing}"] == (
        "FAILED: does not exist; create it, or correct kafka.dead_letter_topic"
    )

    unreachable = f"127.0.0.1:{closed_port()}"
    config = write_config(
        "http://127.0.0.1:9", "t", DEFAULT_AD_ACCOUNT, bootstrap_servers=unreachable
    )
    # The timeout is generous on purpose: a refused connection is reported without waiting for it.
    code, out = verify(config, capsys, "--only", "kafka", "--timeout", "120")
    assert code == 1
    line = kafka_lines(out)[f"bootstrap {unreachable}"]
    assert line.startswith("FAILED: unreachable: ")
    assert "Connection refused" in line
    assert "result: FAILED (Kafka: 1 problem)" in out


def test_group_used_with_another_assignor_is_a_problem(
    kafka: Broker, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("http://127.0.0.1:9", "t", DEFAULT_AD_ACCOUNT)
    settings = yaml.safe_load(config.read_text())
    group, topic = settings["kafka"]["group_id"], settings["sources"][0]["topic"]
    other = kafka.consumer(group, **{"partition.assignment.strategy": "range"})
    try:
        other.subscribe([topic])
        deadline = time.monotonic() + 60
        while not other.assignment():
            assert time.monotonic() < deadline, "the other consumer never joined"
            other.poll(0.2)
        code, out = verify(config, capsys, "--only", "kafka")
    finally:
        other.close()
    assert code == 1
    line = kafka_lines(out)[f"group {group}"]
    assert line.startswith("FAILED: its members use the range assignor")
    assert line.endswith("(stable, 1 member)")


def test_identity_changelog_is_checked_for_enriching_sources(
    kafka: Broker, write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("http://127.0.0.1:9", "unused", DEFAULT_AD_ACCOUNT)
    settings = yaml.safe_load(config.read_text())
    source = settings["sources"][0]["topic"]
    settings["sources"][0]["enrich"] = "identity"
    config.write_text(yaml.safe_dump(settings))
    changelog = f"{settings['kafka']['group_id']}-{source}-identity-changelog"
    code, out = verify(config, capsys, "--only", "kafka")
    assert code == 0, out
    assert kafka_lines(out)[f"identity changelog {changelog}"] == (
        "OK (created at start-up (needs CREATE on it))"
    )
    # A changelog whose partitions do not match its source's cannot hold the stores.
    admin = kafka.admin()
    admin.create_topics([NewTopic(changelog, 3, 1)])[changelog].result(timeout=30)
    kafka.wait_for_topic(changelog, 3)
    code, out = verify(config, capsys, "--only", "kafka")
    assert code == 1
    assert kafka_lines(out)[f"identity changelog {changelog}"].startswith(
        "FAILED: has 3 partitions"
    )
