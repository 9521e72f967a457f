"""Identity enrichment on the real broker: identities survive kill -9 and rebalances (restored
from the changelog), a forgotten user is forgotten, and nothing raw reaches the changelog."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stream.identity.rocks import RocksResources, RocksStore
from tests.forwarder.harness import (
    REPO_ROOT,
    Forwarder,
    forwarder_config,
    running_forwarder,
    wait_until,
)
from tests.forwarder.scenario import all_committed, new_group
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess

USERS = 120
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def _iso(age_s: float) -> str:
    moment = time.gmtime(time.time() - age_s)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)


def email(user: int) -> str:
    return f"person.{user}@example.com"


def identify(user: int) -> tuple[bytes, bytes]:
    message = {
        "type": "identify",
        "messageId": f"identify-{user}",
        "userId": f"user-{user}",
        "anonymousId": f"anon-{user}",
        "timestamp": _iso(300),
        "traits": {"email": email(user), "firstName": "Canaryname"},
    }
    return f"anon-{user}".encode(), orjson.dumps(message)


def order(user: int, round_: str) -> tuple[bytes, bytes]:
    """A server-side Order Completed naming the user by anonymousId only."""
    message = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"order-{round_}-{user}",
        "anonymousId": f"anon-{user}",
        "timestamp": _iso(60),
        "context": {"ip": "203.0.113.7", "userAgent": "Mozilla/5.0"},
        "properties": {"order_id": f"o-{round_}-{user}", "total": 12.5, "currency": "USD"},
    }
    return f"anon-{user}".encode(), orjson.dumps(message)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def emails_by_order(sandbox: SandboxProcess, round_: str) -> dict[int, list[str] | None]:
    found: dict[int, list[str] | None] = {}
    for record in sandbox.events():
        event = record["event"]
        if event["event_id"].startswith(f"order-{round_}-"):
            found[int(event["event_id"].rsplit("-", 1)[1])] = event["user_data"].get("em")
    return found


class Run:
    def __init__(self, kafka: Broker, new_topic: Any, sandbox: SandboxProcess, tmp: Path) -> None:
        self.kafka = kafka
        self.topic = new_topic(partitions=2)
        self.dlq = new_topic()
        self.group = new_group()
        self.sandbox = sandbox
        self.tmp = tmp

    def config(self, state: str) -> dict[str, Any]:
        return forwarder_config(
            self.kafka.bootstrap,
            self.sandbox,
            group_id=self.group,
            dead_letter_topic=self.dlq,
            sources=[{"topic": self.topic, "enrich": "identity"}],
            kafka={"properties": FAST_GROUP},
            identity={"state_dir": str(self.tmp / state)},
        )

    def committed(self) -> bool:
        return all_committed(self.kafka, self.group, self.topic)

    @property
    def changelog(self) -> str:
        return f"{self.group}-{self.topic}-identity-changelog"


def assigned(forwarder: Forwarder) -> float:
    return forwarder.metric("capi_stream_assigned_partitions")


@pytest.mark.timeout(300)
def test_identities_survive_kill_9_restored_from_the_changelog(
    kafka: Broker, new_topic: Any, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = Run(kafka, new_topic, sandbox, tmp_path)
    kafka.produce(run.topic, [identify(user) for user in range(USERS)])
    with running_forwarder(run.config("pod-a"), tmp_path, "first") as forwarder:
        wait_until(run.committed, 90, "identify calls committed")
        forwarder.kill()
    # A rescheduled pod: an empty state directory, so only the changelog can know the users.
    kafka.produce(run.topic, [order(user, "one") for user in range(USERS)])
    with running_forwarder(run.config("pod-b"), tmp_path, "second") as forwarder:
        wait_until(run.committed, 90, "orders committed")
        assert forwarder.metric("capi_stream_identity_restored_records_total") >= USERS
        assert forwarder.metric("capi_stream_identity_enriched_total", field="em") == USERS
        assert forwarder.terminate() == 0
    found = emails_by_order(sandbox, "one")
    assert found == {user: [sha256(email(user))] for user in range(USERS)}
    # The killed pod's own directory, restarted: its store plus the changelog's newer records.
    kafka.produce(run.topic, [order(user, "two") for user in range(USERS)])
    with running_forwarder(run.config("pod-a"), tmp_path, "third") as forwarder:
        wait_until(run.committed, 90, "second orders committed")
        assert forwarder.terminate() == 0
    assert emails_by_order(sandbox, "two") == found
    # Only hashes on the changelog and in the stores: no e-mail, name or id in a key or value.
    records = kafka.read_all(run.changelog)
    assert records
    dump = b"".join((r.key() or b"") + (r.value() or b"") for r in records)  # type: ignore[attr-defined]
    stored = b""
    for directory in sorted((tmp_path / "pod-b" / run.group).iterdir()):
        store = RocksStore(directory, RocksResources(), 86_400)
        stored += b"".join(key + (store.get(key) or b"") for key in store.entry_keys())
        store.close()
    assert stored.count(b'"em"') == USERS
    for canary in (b"example.com", b"Canaryname", b"canaryname", b"user-1", b"anon-1"):
        assert canary not in dump
        assert canary not in stored


@pytest.mark.timeout(300)
def test_a_rebalance_hands_identities_to_the_next_owner_and_forget_forgets(
    kafka: Broker, new_topic: Any, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = Run(kafka, new_topic, sandbox, tmp_path)
    kafka.produce(run.topic, [identify(user) for user in range(USERS)])
    with running_forwarder(run.config("pod-a"), tmp_path, "first") as first:
        wait_until(run.committed, 90, "identify calls committed")
        with running_forwarder(run.config("pod-b"), tmp_path, "second") as second:
            wait_until(lambda: assigned(second) == 1, 60, "the second member owns a partition")
            assert first.terminate() == 0
            wait_until(lambda: assigned(second) == 2, 60, "the second member owns both")
            assert second.metric("capi_stream_identity_restores_total") == 2
            kafka.produce(run.topic, [order(user, "one") for user in range(USERS)])
            wait_until(run.committed, 90, "orders committed")
            assert emails_by_order(sandbox, "one") == {
                user: [sha256(email(user))] for user in range(USERS)
            }
            config_file = tmp_path / "forget.yaml"
            config_file.write_text(yaml.safe_dump(run.config("unused")))
            forgot = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "stream",
                    "identity",
                    "forget",
                    "--config",
                    str(config_file),
                    "--user-id",
                    "user-0",
                ],
                capture_output=True,
                cwd=REPO_ROOT,
                timeout=60,
                check=False,
            )
            assert forgot.returncode == 0, forgot.stderr
            assert b"user-0" not in forgot.stdout + forgot.stderr
            # One tombstone per changelog partition: the one owning user-0 applies it.
            wait_until(
                lambda: second.metric("capi_stream_identity_forgotten_total") == 2,
                30,
                "the tombstones applied",
            )
            kafka.produce(run.topic, [order(user, "two") for user in (0, 1)])
            wait_until(run.committed, 90, "the last orders committed")
            assert second.terminate() == 0
    assert emails_by_order(sandbox, "two") == {0: None, 1: [sha256(email(1))]}
