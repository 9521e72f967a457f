"""kill -9 and SIGTERM of the real forwarder mid-run: nothing lost, nothing acked re-sent."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import (
    Scenario,
    delivered_keys,
    new_group,
    produce,
    scenario,
)
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import SandboxProcess
from traffic.generator import ClickstreamGenerator

# A killed member is only replaced once its session expires; keep that short for the test.
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def received(sandbox: SandboxProcess) -> int:
    count: int = sandbox.stats()["events"]["received"]
    return count


@pytest.mark.timeout(420)  # four runs, each waiting up to 90-120 s
def test_kill_9_three_times_loses_nothing_and_duplicates_keep_their_event_id(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=99, count=50_000, partitions=3, poison_ratio=0.01)
    expected = run.expected
    poison = sum(1 for m in run.messages if m.kind == "poison")
    # Slow requests keep work in flight, so every kill lands mid-batch.
    sandbox.set_faults(latency_ms=20, jitter_ms=30)
    config = run.config(
        sandbox,
        kafka={"properties": FAST_GROUP},
        batching={"max_events": 200, "linger_ms": 100},
    )
    rng = random.Random(7)
    kills = 0
    for fraction in sorted(rng.uniform(0.1, 0.8) for _ in range(3)):
        with running_forwarder(config, tmp_path, f"run-{kills}") as forwarder:
            target = int(len(expected) * fraction)
            wait_until(lambda t=target: received(sandbox) >= t, 90, f"{target} events received")
            time.sleep(rng.uniform(0, 0.5))  # a random moment, not a synchronisation point
            forwarder.kill()
            kills += 1
    with running_forwarder(config, tmp_path, "final") as forwarder:
        wait_until(run.committed, 120, "all offsets committed")
        assert forwarder.terminate() == 0
    assert kills == 3

    copies: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
    for record in sandbox.events():
        event = record["event"]
        copies[(event["event_id"], event["event_name"])].append(event)
    assert set(copies) == expected, "every valid event delivered, nothing unexpected"
    duplicates = sum(len(c) - 1 for c in copies.values())
    for same in copies.values():
        assert all(event == same[0] for event in same), "a redelivery is the identical event"
    print(f"kill -9 x3: {duplicates} duplicate deliveries of {len(expected)} events")
    letters = kafka.read_all(run.dlq)
    # Dead letters may repeat too (at-least-once), but every poison message is there.
    assert (
        len(
            {
                (headers["capi.source.partition"], headers["capi.source.offset"])
                for headers in map(headers_of, letters)
            }
        )
        == poison
    )


def test_sigterm_exits_0_within_grace_and_restart_resends_nothing_acked(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # Only the first half is on the topic while the first forwarder runs, so it is stopped
    # mid-run however fast it delivers; the second half arrives before the restart.
    messages = list(ClickstreamGenerator(seed=42).messages(20_000))
    first_half, second_half = messages[:10_000], messages[10_000:]
    run = Scenario(kafka, new_topic(partitions=3), new_topic(), new_group(), messages)
    produce(kafka, run.topic, first_half)
    expected = run.expected
    sandbox.set_faults(latency_ms=50)
    grace = 10.0
    config = run.config(
        sandbox,
        batching={"max_events": 100, "linger_ms": 200},
        shutdown={"grace_period_s": grace},
    )
    with running_forwarder(config, tmp_path, "first") as forwarder:
        wait_until(lambda: received(sandbox) >= 3000, 60, "3000 events received")
        started = time.monotonic()
        assert forwarder.terminate(timeout=grace + 15) == 0
        took = time.monotonic() - started
    assert took < grace + 5, f"shutdown took {took:.1f}s"
    before = sandbox.stats()["events"]
    assert before["received"] < len(expected), "stopped mid-run"
    assert "stopped" in forwarder.log()
    produce(kafka, run.topic, second_half)
    sandbox.set_faults(latency_ms=0)
    with running_forwarder(config, tmp_path, "second"):
        wait_until(run.committed, 60, "all offsets committed")
    after = sandbox.stats()["events"]
    assert after["duplicate"] == 0, "nothing acked before SIGTERM was sent again"
    assert after["received"] == len(expected)
    assert set(delivered_keys(sandbox)) == expected


@pytest.mark.timeout(300)  # four waits of up to 270 s together
def test_members_joining_and_leaving_mid_run_lose_nothing(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=77, count=30_000, partitions=6)
    sandbox.set_faults(latency_ms=30)
    config = run.config(
        sandbox,
        kafka={"properties": FAST_GROUP},
        batching={"max_events": 200, "linger_ms": 100},
    )
    with running_forwarder(config, tmp_path, "first") as first:
        wait_until(lambda: received(sandbox) >= 3000, 60, "first member working")
        with running_forwarder(config, tmp_path, "second") as second:
            with running_forwarder(config, tmp_path, "third") as third:
                wait_until(lambda: "assigned" in third.log(), 30, "third member assigned")
                wait_until(lambda: received(sandbox) >= 12_000, 60, "work shared")
                assert second.terminate() == 0
                third.kill()
            wait_until(run.committed, 120, "all committed")
        assert first.terminate() == 0
        assert "revoking" in first.log()
    copies = Counter(delivered_keys(sandbox))
    assert set(copies) == run.expected
    print(f"rebalance: {sum(copies.values()) - len(copies)} duplicate deliveries")
