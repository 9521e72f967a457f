"""End to end through the real `capi-stream run`: delivery, dead letters, offsets."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson

from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.forwarder.scenario import (
    all_committed,
    assert_delivered_exactly_once,
    delivered_keys,
    new_group,
    produce,
    scenario,
)
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess
from traffic.generator import ClickstreamGenerator


def test_20000_events_over_3_partitions_are_delivered_exactly_once(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=5, count=20_000, partitions=3)
    with running_forwarder(run.config(sandbox), tmp_path) as forwarder:
        wait_until(run.committed, 90, "all offsets committed")
        assert forwarder.terminate() == 0
    assert_delivered_exactly_once(sandbox, [(m.event_id, m.event_name) for m in run.valid])
    assert sandbox.stats()["events"]["duplicate"] == 0
    assert kafka.read_all(run.dlq) == []


def test_poison_messages_are_dead_lettered_with_reason_headers_and_original_bytes(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=11, count=4000, partitions=2, poison_ratio=0.05)
    poison = [m for m in run.messages if m.kind == "poison"]
    assert {m.reason for m in poison} == {
        "decode_error",
        "invalid_event",
        "too_old",
        "mapping_error",
    }
    reason_of = {m.value: m.reason for m in poison}
    with running_forwarder(run.config(sandbox), tmp_path) as forwarder:
        wait_until(run.committed, 60, "all offsets committed")
        assert forwarder.metric("capi_stream_dead_letters_total") == len(poison)
    letters = kafka.read_all(run.dlq)
    assert Counter(headers_of(m)["capi.error.reason"] for m in letters) == Counter(
        m.reason for m in poison
    )
    sources = {(m.partition(), m.offset()): m for m in kafka.read_all(run.topic)}
    for letter in letters:
        headers = headers_of(letter)
        original = sources[
            (int(headers["capi.source.partition"]), int(headers["capi.source.offset"]))
        ]
        assert original.value() == letter.value()
        assert original.key() == letter.key()
        assert headers["capi.error.reason"] == reason_of[letter.value()]
        assert headers["capi.error.message"]
        assert headers["capi.source.topic"] == run.topic
        assert headers["capi.attempts"] == "0"
        assert "capi.http.status" not in headers
        assert headers["capi.failed_at"].endswith("+00:00")
    assert set(delivered_keys(sandbox)) == run.expected


def test_partially_failed_batches_dead_letter_only_the_rejected_events_once(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=21, count=3000, partitions=2)
    valid = run.valid
    rejected = {m.event_id for m in valid if m.event_id and m.event_id[0] in "0123"}
    assert 0 < len(rejected) < len(valid)
    sandbox.set_faults(reject_event_ids="^[0-3]")
    with running_forwarder(run.config(sandbox), tmp_path):
        wait_until(run.committed, 60, "all offsets committed")
    letters = kafka.read_all(run.dlq)
    by_id = {m.value: m for m in valid}
    assert sorted(by_id[letter.value()].event_id for letter in letters) == sorted(
        m.event_id for m in valid if m.event_id in rejected
    )
    for letter in letters:
        headers = headers_of(letter)
        assert headers["capi.error.reason"] == "rejected_by_pinterest"
        assert headers["capi.http.status"] in ("200", "422")
        assert headers["capi.attempts"] == "1"
        assert headers["capi.error.message"]
    stats = sandbox.stats()["events"]
    # Each distinct event was sent exactly once: nothing processed was re-sent, nothing retried.
    assert stats["received"] == len(run.expected)
    assert stats["duplicate"] == 0
    delivered = {r["event"]["event_id"] for r in sandbox.events()}
    assert delivered == {m.event_id for m in valid} - rejected


def test_all_failed_422_dead_letters_every_event(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=3, count=500)
    sandbox.set_faults(reject_event_ids=".")
    with running_forwarder(run.config(sandbox), tmp_path):
        wait_until(run.committed, 60, "all offsets committed")
    letters = kafka.read_all(run.dlq)
    assert len(letters) == len(run.valid)
    assert {headers_of(m)["capi.http.status"] for m in letters} == {"422"}
    assert {headers_of(m)["capi.error.reason"] for m in letters} == {"rejected_by_pinterest"}
    assert sandbox.stats()["requests"]["by_status"].get("200", 0) == 0
    assert sandbox.events() == []


def test_segment_web_and_pinterest_offline_sources_reach_their_own_accounts(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    web, offline, dlq = new_topic(partitions=2), new_topic(), new_topic()
    group = new_group()
    offline_account = "111122223333"
    clicks = [
        m for m in ClickstreamGenerator(seed=8, poison_ratio=0.0).messages(600) if m.kind == "valid"
    ]
    produce(kafka, web, clicks)
    now = int(time.time())
    orders = [
        orjson.dumps(
            {
                "event_name": "checkout",
                "action_source": "offline",
                "event_time": now - 3600,
                "event_id": f"pos-{n}",
                "user_data": {"em": [f"buyer{n}@example.com"], "ph": ["+1 650 555 0100"]},
                "custom_data": {"currency": "EUR", "value": "19.90", "order_id": f"pos-{n}"},
            }
        )
        for n in range(200)
    ]
    kafka.produce(offline, orders)
    config = forwarder_config(
        kafka.bootstrap,
        sandbox,
        group_id=group,
        dead_letter_topic=dlq,
        sources=[
            {"topic": web, "format": "segment"},
            {
                "topic": offline,
                "format": "pinterest",
                "ad_account_id": offline_account,
                "action_source": "offline",
            },
        ],
    )
    with running_forwarder(config, tmp_path):
        wait_until(
            lambda: all_committed(kafka, group, web) and all_committed(kafka, group, offline),
            60,
            "both topics committed",
        )
    recorded = sandbox.events()
    by_account = Counter(r["ad_account_id"] for r in recorded)
    assert by_account == {DEFAULT_AD_ACCOUNT: len(clicks), offline_account: len(orders)}
    for r in recorded:
        if r["ad_account_id"] == offline_account:
            assert r["event"]["action_source"] == "offline"
            assert r["event"]["event_id"].startswith("pos-")
            # Raw identifiers were hashed before leaving the process.
            assert all(len(h) == 64 for h in r["event"]["user_data"]["em"])
        else:
            assert r["event"]["action_source"] in ("web", "app_ios", "app_android")
    assert kafka.read_all(dlq) == []
