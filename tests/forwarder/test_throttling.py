"""The forwarder against a slow or throttling API: adaptive concurrency and honoured rate limits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.forwarder.harness import Forwarder, running_forwarder, wait_until
from tests.forwarder.scenario import (
    assert_delivered_exactly_once,
    delivered_keys,
    produce,
    scenario,
    valid_keys,
)
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess
from traffic.generator import ClickstreamGenerator


@contextmanager
def sampling(
    forwarder: Forwarder, read: Callable[[dict[str, float]], float], every_s: float = 0.2
) -> Iterator[list[float]]:
    """Samples `read(metrics)` in the background for the duration of the block."""
    samples: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            samples.append(read(forwarder.metrics()))
            stop.wait(every_s)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()


def limit_of(metrics: dict[str, float]) -> float:
    return metrics.get(f'capi_stream_concurrency_limit{{ad_account="{DEFAULT_AD_ACCOUNT}"}}', 0.0)


def most_in_flight(answered_at: list[float], latency_s: float) -> int:
    """A lower bound on the requests in the sandbox at once, from the times they were answered.

    Each request waited `latency_s` inside the sandbox before its answer, so requests answered
    less than `latency_s` apart were all there at the same moment; half of it leaves a margin
    for timers that fire a little early.
    """
    times = sorted(set(answered_at))
    most, first = 0, 0
    for last, time in enumerate(times):
        while time - times[first] >= latency_s / 2:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_a_slow_api_is_answered_by_raising_concurrency(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=21, count=20_000, partitions=3)
    latency_s, initial, maximum = 0.2, 2, 32
    sandbox.set_faults(latency_ms=latency_s * 1000)
    config = run.config(
        sandbox,
        batching={"max_events": 100, "linger_ms": 100},
        sending={"initial_concurrency": initial, "max_concurrency": maximum},
    )
    with (
        running_forwarder(config, tmp_path) as forwarder,
        sampling(forwarder, limit_of) as limits,
    ):
        wait_until(run.committed, 90, "all offsets committed")
    assert set(delivered_keys(sandbox)) == run.expected
    requests = sandbox.stats()["requests"]["by_status"]["200"]
    arrivals = [r["received_at"] for r in sandbox.events()]
    took = max(arrivals) - min(arrivals) + latency_s
    at_initial = requests * latency_s / initial
    in_flight = most_in_flight(arrivals, latency_s)
    print(
        f"latency {latency_s * 1000:.0f} ms: {requests} requests in {took:.1f}s, concurrency "
        f"limit {initial} → max {max(limits):.0f}, {in_flight} seen in flight at once; "
        f"at {initial} it would take {at_initial:.1f}s"
    )
    assert max(limits) > initial
    assert max(limits) <= maximum
    # Many requests were in flight at once (how fast the run went depends on the machine).
    assert in_flight > initial


def test_a_429_storm_loses_nothing_and_holds_the_account_for_the_reset(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=22, count=3000, partitions=2)
    # Half of all requests get a 429 with x-ratelimit-reset: 1 (seconds).
    sandbox.set_faults(throttle_429=0.5)
    config = run.config(
        sandbox,
        batching={"max_events": 100, "linger_ms": 100},
        sending={"max_concurrency": 8, "backoff_initial_s": 0.05},
    )
    with (
        running_forwarder(config, tmp_path) as forwarder,
        sampling(forwarder, limit_of) as limits,
    ):
        wait_until(run.committed, 120, "all offsets committed")
        retried = forwarder.metric("capi_stream_retries_total", reason="rate_limited")
    by_status = sandbox.stats()["requests"]["by_status"]
    throttled, accepted = by_status.get("429", 0), by_status["200"]
    arrivals = sorted({r["received_at"] for r in sandbox.events()})
    print(
        f"429 storm: {throttled} throttled, {accepted} accepted, {retried:.0f} retries, "
        f"{arrivals[-1] - arrivals[0]:.1f}s"
    )
    assert kafka.read_all(run.dlq) == []
    assert_delivered_exactly_once(sandbox, run.expected)
    assert throttled > 0
    assert retried == throttled
    # Each 429 holds the whole account for its one-second reset. At most `max_concurrency` (8)
    # requests share one hold, so the run spans at least throttled / 8 - 1 disjoint seconds;
    # resending on the 50 ms jittered backoff instead would finish in about one second.
    spanned = arrivals[-1] - arrivals[0]
    assert spanned >= throttled / 8 - 1, (spanned, throttled)
    # 429s are congestion: the concurrency limit went down from its start at some point.
    assert min(limits) < 4


def test_a_strict_per_minute_limit_is_learnt_from_the_headers(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=23, count=1500)
    per_minute = 8
    # The forwarder believes in the default 5,000/min: only the answers tell it otherwise.
    sandbox.set_faults(rate_limit=per_minute)
    config = run.config(
        sandbox,
        batching={"max_events": 100, "linger_ms": 100},
        sending={"initial_concurrency": 4, "max_concurrency": 4, "backoff_initial_s": 0.05},
    )
    with running_forwarder(config, tmp_path):
        wait_until(run.committed, 150, "all offsets committed")
    by_status = sandbox.stats()["requests"]["by_status"]
    accepted, throttled = by_status["200"], by_status.get("429", 0)
    arrivals = sorted({r["received_at"] for r in sandbox.events()})
    print(f"{per_minute}/min limit: {accepted} accepted, {throttled} throttled")
    assert accepted > per_minute, "the run needed a second window"
    assert arrivals[-1] - arrivals[0] >= 55, "the second window waited for the reset"
    assert kafka.read_all(run.dlq) == []
    assert_delivered_exactly_once(sandbox, run.expected)
    # x-ratelimit-remaining: 0 on the last allowed request stops the account until the reset;
    # only requests already in flight at that moment can still meet a 429 (one per slot).
    assert throttled <= 4, throttled


def test_two_replicas_share_one_per_minute_budget_without_429s(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    per_minute = 20
    sandbox.set_faults(rate_limit=per_minute)
    # Both members join before anything is produced, so each counts half the budget from its
    # first request: together never more than the limit in any minute, hence no 429 at all.
    # (Each on its own would allow itself all 20, and the second would meet a 429.)
    run = scenario(kafka, new_topic, seed=24, count=0, partitions=2)
    config = run.config(
        sandbox,
        pinterest={"requests_per_minute": per_minute},
        batching={"max_events": 25, "linger_ms": 100},
        sending={"initial_concurrency": 1, "max_concurrency": 1},
    )
    with (
        running_forwarder(config, tmp_path / "a", "a") as first,
        running_forwarder(config, tmp_path / "b", "b") as second,
    ):
        members = (first, second)
        wait_until(
            lambda: [m.metric("capi_stream_assigned_partitions") for m in members] == [1, 1],
            60,
            "one partition each",
        )
        messages = list(ClickstreamGenerator(seed=24, poison_ratio=0.0).messages(750))
        produce(kafka, run.topic, messages)
        expected = valid_keys(messages)
        wait_until(lambda: set(delivered_keys(sandbox)) == expected, 180, "all delivered")
    by_status = sandbox.stats()["requests"]["by_status"]
    print(f"two replicas, {per_minute}/min: {by_status}")
    assert by_status["200"] > per_minute, "the run needed a second window"
    assert by_status.get("429", 0) == 0
    assert kafka.read_all(run.dlq) == []
