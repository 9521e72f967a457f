"""The forwarder under pressure: setup errors, outages with bounded memory, whole-request 400s."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.forwarder.harness import forwarder_config, running_forwarder, wait_until
from tests.forwarder.scenario import (
    all_committed,
    delivered_keys,
    new_group,
    produce,
    scenario,
    valid_keys,
)
from tests.kafka_helpers import Broker, headers_of
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess
from traffic.generator import ClickstreamGenerator


def test_revoked_token_pauses_the_account_without_dead_letters_then_resumes(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=4, count=2000, partitions=2)
    sandbox.set_faults(token_revoked=True)
    config = run.config(
        sandbox,
        # Small enough that the paused account's partitions are paused on their own, and must
        # be resumed when it heals.
        buffer={"max_events": 1000},
        sending={"setup_error_probe_s": 1.0},
    )
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(lambda: "setup error" in forwarder.readyz()[1], 30, "readyz naming the error")
        # DESIGN §5: a setup error is a metric, a log line and an alert, never unreadiness.
        assert forwarder.readyz()[0] == 200
        assert "degraded" in forwarder.readyz()[1]
        assert DEFAULT_AD_ACCOUNT in forwarder.readyz()[1]
        assert sandbox.token not in forwarder.log()
        assert forwarder.metric("capi_stream_setup_error", ad_account=DEFAULT_AD_ACCOUNT) == 1
        # Only the probe is sent while paused (one a second), not every batch in a retry storm.
        unauthorized = sandbox.stats()["requests"]["by_status"].get("401", 0)
        started = time.monotonic()
        time.sleep(3)  # let probes happen: this measures a rate, it synchronises nothing
        probes = sandbox.stats()["requests"]["by_status"]["401"] - unauthorized
        # Per second actually slept, which a busy machine stretches.
        assert probes <= (time.monotonic() - started) + 3
        assert not run.committed()
        wait_until(lambda: "pausing the 2 partitions" in forwarder.log(), 30, "its partitions")
        sandbox.set_faults(token_revoked=False)
        wait_until(run.committed, 60, "all offsets committed")
        assert "resuming its partitions" in forwarder.log()
        wait_until(lambda: forwarder.readyz() == (200, "ready\n"), 10, "no longer degraded")
        assert forwarder.metric("capi_stream_setup_error", ad_account=DEFAULT_AD_ACCOUNT) == 0
    assert kafka.read_all(run.dlq) == []
    assert set(delivered_keys(sandbox)) == run.expected


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


OUTAGE_S = 90
OUTAGE_EVENTS = 100_000
OUTAGE_BUFFER_EVENTS = 20_000
# A 512 MiB pod with room to spare: the buffer's share plus the interpreter and libraries.
RSS_BOUND_BYTES = 384 * 1024 * 1024


@pytest.mark.timeout(300)  # a 90 s outage, then up to 120 s to deliver 100,000 events
def test_outage_pauses_consumption_with_bounded_memory_and_delivers_after_recovery(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=6, count=OUTAGE_EVENTS, partitions=3)
    cap = OUTAGE_BUFFER_EVENTS
    # The sandbox's clock (wall time) for its outage and for each processed event's arrival.
    outage_from = time.time()
    sandbox.set_faults(outage_seconds=OUTAGE_S)
    outage_ends = time.monotonic() + OUTAGE_S
    config = run.config(
        sandbox,
        buffer={"max_events": cap, "resume_ratio": 0.5},
        sending={"backoff_max_s": 5.0},
    )
    samples: list[tuple[float, float, float, int]] = []
    with running_forwarder(config, tmp_path) as forwarder:
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                metrics = forwarder.metrics()
                samples.append(
                    (
                        time.monotonic(),
                        metrics.get("capi_stream_buffered_events", 0.0),
                        metrics.get("capi_stream_paused_partitions", 0.0),
                        rss_bytes(forwarder.process.pid),
                    )
                )
                stop.wait(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wait_until(lambda: time.monotonic() > outage_ends, OUTAGE_S + 5, "the outage")
            wait_until(run.committed, 120, "all offsets committed")
        finally:
            stop.set()
            sampler.join()
    during = [s for s in samples if s[0] < outage_ends]
    rss = [s[3] for s in samples]
    print(
        f"outage {OUTAGE_S}s, {OUTAGE_EVENTS} events: peak RSS {max(rss) / 2**20:.0f} MiB, "
        f"peak buffered {max(s[1] for s in samples):.0f} of cap {cap}"
    )
    # One poll (1,000 messages) may land after the cap is crossed, never more.
    assert max(s[1] for s in samples) <= cap + 1000
    assert max(s[2] for s in during) == 3, "every partition paused during the outage"
    assert max(rss) < RSS_BOUND_BYTES
    # Memory does not grow with the outage's length: its second half is no higher than its
    # first (beyond allocator noise).
    half = len(during) // 2
    assert max(s[3] for s in during[half:]) <= max(s[3] for s in during[:half]) + 16 * 2**20
    assert sandbox.stats()["requests"]["by_status"].get("503", 0) > 0
    # Nothing was delivered before the outage ended: read from the arrival times, not from a
    # look at the commits that races the recovery's first seconds.
    first_arrival = min(record["received_at"] for record in sandbox.events())
    assert first_arrival >= outage_from + OUTAGE_S
    assert kafka.read_all(run.dlq) == []
    assert set(delivered_keys(sandbox)) == run.expected


def test_a_whole_request_400_is_bisected_to_the_offending_events(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=12, count=3000)
    valid = run.valid
    bad = {m.event_id for m in valid if m.event_id and m.event_id.startswith("0")}
    assert bad
    sandbox.set_faults(invalid_request_event_ids="^0")
    with running_forwarder(run.config(sandbox), tmp_path):
        wait_until(run.committed, 60, "all offsets committed")
    letters = kafka.read_all(run.dlq)
    event_id_of = {m.value: m.event_id for m in valid}
    assert sorted(event_id_of[letter.value()] for letter in letters) == sorted(
        m.event_id for m in valid if m.event_id in bad
    )
    assert {headers_of(letter)["capi.error.reason"] for letter in letters} == {"request_invalid"}
    assert {headers_of(letter)["capi.http.status"] for letter in letters} == {"400"}
    assert set(delivered_keys(sandbox)) == run.expected - valid_keys(
        m for m in valid if m.event_id in bad
    )


def test_a_setup_error_on_one_account_does_not_stall_the_others(
    kafka: Broker, new_topic, sandbox_factory, tmp_path: Path
) -> None:
    healthy, refused = DEFAULT_AD_ACCOUNT, "111111111111"
    # The sandbox knows only the healthy account: the other gets 403, a setup error.
    sandbox = sandbox_factory("--ad-account", healthy)
    topic_ok, topic_refused, dlq = new_topic(partitions=2), new_topic(partitions=2), new_topic()
    group = new_group()
    ok = list(ClickstreamGenerator(seed=13, poison_ratio=0.0).messages(15_000))
    stuck = list(ClickstreamGenerator(seed=14, poison_ratio=0.0).messages(15_000))
    produce(kafka, topic_refused, stuck)
    produce(kafka, topic_ok, ok)
    cap = 4000
    config = forwarder_config(
        kafka.bootstrap,
        sandbox,
        group_id=group,
        dead_letter_topic=dlq,
        sources=[
            {"topic": topic_ok, "ad_account_id": healthy},
            {"topic": topic_refused, "ad_account_id": refused},
        ],
        buffer={"max_events": cap, "resume_ratio": 0.5},
        sending={"setup_error_probe_s": 1.0},
    )
    with running_forwarder(config, tmp_path) as forwarder:
        # The refused account's events would fill the whole buffer many times over.
        wait_until(lambda: all_committed(kafka, group, topic_ok), 90, "healthy topic committed")
        assert forwarder.readyz()[0] == 200
        assert refused in forwarder.readyz()[1]
        assert forwarder.metric("capi_stream_setup_error", ad_account=refused) == 1
        assert forwarder.metric("capi_stream_paused_partitions") == 2
        buffered = forwarder.metric("capi_stream_buffered_events")
        print(f"setup error on one account: {buffered:.0f} events held, cap {cap}")
        assert buffered <= cap + 1000
        assert all(o < 0 for o in kafka.committed_offsets(group, topic_refused).values())
    assert kafka.read_all(dlq) == []
    assert set(delivered_keys(sandbox)) == valid_keys(ok)


def test_a_rotated_token_file_heals_the_account_without_a_restart(
    kafka: Broker, new_topic, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=15, count=2000)
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text("expired-token\n")
    config = run.config(sandbox, sending={"setup_error_probe_s": 1.0})
    del config["pinterest"]["access_token"]
    config["pinterest"]["access_token_file"] = str(token_file)
    with running_forwarder(config, tmp_path) as forwarder:
        wait_until(lambda: "setup error" in forwarder.readyz()[1], 30, "the expired token refused")
        # As Kubernetes updates a Secret volume: a new file swapped in atomically.
        fresh = token_file.with_name("token.new")
        fresh.write_text(sandbox.token + "\n")
        fresh.replace(token_file)
        wait_until(run.committed, 60, "all offsets committed")
        wait_until(lambda: forwarder.readyz() == (200, "ready\n"), 10, "no longer degraded")
        assert "expired-token" not in forwarder.log()
        assert sandbox.token not in forwarder.log()
    assert kafka.read_all(run.dlq) == []
    assert set(delivered_keys(sandbox)) == run.expected
