"""The forwarder on a SASL_SSL (SCRAM-SHA-512) listener with credentials from files, identity
enrichment's changelog included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.forwarder.harness import REPO_ROOT, forwarder_config, running_forwarder, wait_until
from tests.forwarder.scenario import (
    all_committed,
    delivered_keys,
    new_group,
    produce,
    valid_keys,
)
from tests.forwarder.test_identity import email, emails_by_order, identify, order, sha256
from tests.sandbox_helpers import SandboxProcess
from tests.test_kafka_security import SaslBroker, sasl_kafka  # noqa: F401 - the module fixture
from traffic.generator import ClickstreamGenerator


def sasl_config(
    broker: SaslBroker, sandbox: SandboxProcess, topic: str, password_file: Path
) -> dict[str, Any]:
    return forwarder_config(
        broker.bootstrap,
        sandbox,
        [topic],
        group_id=new_group(),
        dead_letter_topic=broker.plain.create_topic(),
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": broker.username,
            "sasl_password_file": str(password_file),
            "ssl_ca_location": str(broker.ca_file),
        },
    )


def test_forwarder_consumes_dead_letters_and_commits_over_sasl_ssl(
    sasl_kafka: SaslBroker,  # noqa: F811
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    broker = sasl_kafka.plain
    topic = broker.create_topic(partitions=2)
    messages = list(ClickstreamGenerator(seed=21, poison_ratio=0.02).messages(2000))
    produce(broker, topic, messages)
    config = sasl_config(sasl_kafka, sandbox, topic, sasl_kafka.password_file)
    group, dlq = config["kafka"]["group_id"], config["kafka"]["dead_letter_topic"]
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(
            lambda: broker.committed_offsets(group, topic) == broker.end_offsets(topic),
            60,
            "all offsets committed over SASL_SSL",
        )
        assert forwarder.terminate() == 0
    assert set(delivered_keys(sandbox)) == valid_keys(messages)
    poison = sum(1 for m in messages if m.kind == "poison")
    assert poison > 0
    assert len(broker.read_all(dlq)) >= poison, "dead letters produced over SASL_SSL too"
    password = sasl_kafka.password_file.read_text().strip()
    assert password not in forwarder.log()


def test_wrong_password_exits_non_zero_with_a_clear_error_and_commits_nothing(
    sasl_kafka: SaslBroker,  # noqa: F811
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    broker = sasl_kafka.plain
    topic = broker.create_topic()
    broker.produce(topic, [m.value for m in ClickstreamGenerator(seed=2).messages(50)])
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    config = sasl_config(sasl_kafka, sandbox, topic, wrong)
    config_file = tmp_path / "forwarder.yaml"
    config_file.write_text(yaml.safe_dump(config))
    # subprocess.run kills the process if it outlives the timeout.
    result = subprocess.run(
        [sys.executable, "-m", "stream", "run", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")},
    )
    assert result.returncode == 1
    log = result.stdout + result.stderr
    assert "kept refusing the credentials" in log, log[-2000:]
    assert "not-the-password" not in log
    assert broker.committed_offsets(config["kafka"]["group_id"], topic) == {0: -1001}
    assert sandbox.stats()["events"]["received"] == 0


def test_a_rotated_password_file_reconnects_without_a_restart(
    sasl_kafka: SaslBroker,  # noqa: F811
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    broker = sasl_kafka.plain
    topic = broker.create_topic()
    # Poison too: the dead-letter producer started with the old password as well.
    messages = list(ClickstreamGenerator(seed=22, poison_ratio=0.05).messages(200))
    produce(broker, topic, messages)
    password_file = tmp_path / "secret" / "password"
    password_file.parent.mkdir()
    password_file.write_text("the-old-password\n")
    config = sasl_config(sasl_kafka, sandbox, topic, password_file)
    group, dlq = config["kafka"]["group_id"], config["kafka"]["dead_letter_topic"]
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(lambda: "refused the credentials" in forwarder.log(), 60, "the old one refused")
        # As Kubernetes updates a Secret volume: a new file swapped in atomically.
        fresh = password_file.with_name("password.new")
        fresh.write_text(sasl_kafka.password_file.read_text())
        fresh.replace(password_file)
        wait_until(
            lambda: broker.committed_offsets(group, topic) == broker.end_offsets(topic),
            90,
            "all offsets committed with the new password",
        )
        assert "sasl_password_file changed: reconnecting" in forwarder.log()
        assert "the dead-letter producer uses the new password" in forwarder.log()
        assert forwarder.terminate() == 0
    assert set(delivered_keys(sandbox)) == valid_keys(messages)
    poison = sum(1 for m in messages if m.kind == "poison")
    assert poison > 0
    assert len(broker.read_all(dlq)) >= poison
    assert "the-old-password" not in forwarder.log()


@pytest.mark.timeout(300)
def test_identities_restore_from_a_changelog_written_and_read_over_sasl_ssl(
    sasl_kafka: SaslBroker,  # noqa: F811
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    broker = sasl_kafka.plain
    topic = broker.create_topic(partitions=2)
    users = 40
    broker.produce(topic, [identify(user) for user in range(users)])
    config = sasl_config(sasl_kafka, sandbox, topic, sasl_kafka.password_file)
    config["sources"] = [{"topic": topic, "enrich": "identity"}]
    group = config["kafka"]["group_id"]

    def pod(state: str) -> dict[str, Any]:
        return {**config, "identity": {"state_dir": str(tmp_path / state)}}

    with running_forwarder(pod("pod-a"), tmp_path, "first") as forwarder:
        wait_until(lambda: all_committed(broker, group, topic), 90, "identify calls committed")
        assert forwarder.terminate() == 0
    # A rescheduled pod: an empty state directory, so only the changelog (written by the first
    # pod's changelog producer, read by this one's restore consumer, both over SASL_SSL) knows
    # the users.
    broker.produce(topic, [order(user, "sasl") for user in range(users)])
    with running_forwarder(pod("pod-b"), tmp_path, "second") as second:
        wait_until(lambda: all_committed(broker, group, topic), 90, "orders committed")
        assert second.metric("capi_stream_identity_restored_records_total") >= users
        assert second.terminate() == 0
    expected = {user: [sha256(email(user))] for user in range(users)}
    assert emails_by_order(sandbox, "sasl") == expected
    password = sasl_kafka.password_file.read_text().strip()
    assert password not in forwarder.log() + second.log()
