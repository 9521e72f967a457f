"""Transport faults and an unwritable dead-letter topic: retried, nothing lost, nothing skipped."""

from __future__ import annotations

import uuid
from pathlib import Path

from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import delivered_keys, scenario
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import SandboxProcess


def test_connection_resets_and_hangs_are_retried_and_every_partition_completes(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=31, count=10_000, partitions=3)
    sandbox.set_faults(reset=0.15, hang=0.1)
    config = run.config(
        sandbox,
        batching={"max_events": 200, "linger_ms": 100},
        sending={"request_timeout_s": 1.5, "backoff_initial_s": 0.1, "backoff_max_s": 1.0},
    )
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(run.committed, 120, "all offsets committed")
        timeouts = forwarder.metric("capi_stream_retries_total", reason="timeout")
        resets = forwarder.metric("capi_stream_retries_total", reason="connection_error")
        assert forwarder.terminate() == 0
    by_status = sandbox.stats()["requests"]["by_status"]
    print(f"resets/hangs: {by_status}; retried {timeouts:.0f} timeouts, {resets:.0f} resets")
    assert by_status["reset"] > 0
    assert by_status["hang"] > 0
    assert timeouts >= by_status["hang"]
    assert resets > 0
    assert kafka.read_all(run.dlq) == []
    # A reset can hide an answer the sandbox did process, so duplicates are allowed; loss is not.
    assert set(delivered_keys(sandbox)) == run.expected


def create_unwritable_topic(kafka: Broker) -> str:
    """A topic whose max.message.bytes refuses any real record, as a broken DLQ would."""
    name = f"dlq-{uuid.uuid4().hex[:12]}"
    admin = kafka.admin()
    topic = NewTopic(
        name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "8"}
    )
    admin.create_topics([topic])[name].result(timeout=30)
    kafka.wait_for_topic(name, 1)
    return name


def make_writable(kafka: Broker, topic: str) -> None:
    admin = kafka.admin()
    entry = ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def test_an_unwritable_dead_letter_topic_holds_commits_and_readiness_until_it_heals(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(
        kafka, new_topic, seed=32, count=3000, poison_ratio=0.02, dlq=create_unwritable_topic(kafka)
    )
    # A replayed dead letter that fails again: its own headers carry over, its old error
    # headers are replaced.
    replayed_headers = [("trace", b"t-1"), ("capi.replayed", b"2"), ("capi.error.reason", b"x")]
    producer = kafka.producer()
    producer.produce(run.topic, value=b"{not json", headers=replayed_headers)
    assert producer.flush(30) == 0
    valid = run.expected
    poison_offsets = {offset for offset, m in enumerate(run.messages) if m.kind == "poison"}
    poison_offsets.add(len(run.messages))
    first_poison = min(poison_offsets)
    with running_forwarder(run.config(sandbox), tmp_path) as forwarder:
        wait_until(lambda: "dead-letter" in forwarder.readyz()[1], 60, "readyz naming the DLQ")
        assert forwarder.readyz()[0] == 200, "degraded, not unready: rollouts must not hang"
        # The refusal that turned readiness off was counted in the same delivery callback.
        assert forwarder.metric("capi_stream_retries_total", reason="dead_letter_unacked") >= 1
        # Everything deliverable is delivered meanwhile, but no commit passes the first poison.
        wait_until(lambda: set(delivered_keys(sandbox)) == valid, 60, "valid events delivered")
        committed = kafka.committed_offsets(run.group, run.topic)[0]
        assert committed <= first_poison, (committed, first_poison)
        assert forwarder.process.poll() is None, "still running, still retrying"
        make_writable(kafka, run.dlq)
        wait_until(run.committed, 60, "all offsets committed")
        wait_until(lambda: forwarder.readyz() == (200, "ready\n"), 10, "no longer degraded")
        assert forwarder.terminate() == 0
    log = forwarder.log()
    # Every refused dead letter is produced again each second; the log says so only now and then.
    assert log.count("not acknowledged") <= 2 * len(poison_offsets), log.count("not acknowledged")
    skipped = sum(1 for m in run.messages if m.kind == "skipped")
    assert (
        f"stopped: {len(valid)} events delivered, {len(poison_offsets)} dead-lettered (" in log
    ), log[-500:]
    assert f", {skipped} skipped" in log
    letters = kafka.read_all(run.dlq)
    assert {int(headers_of(letter)["capi.source.offset"]) for letter in letters} == poison_offsets
    replayed = next(
        letter.headers()
        for letter in letters
        if headers_of(letter)["capi.source.offset"] == str(len(run.messages))
    )
    assert replayed[:2] == replayed_headers[:2]
    assert [value for name, value in replayed if name == "capi.error.reason"] == [b"decode_error"]
    assert set(delivered_keys(sandbox)) == valid
