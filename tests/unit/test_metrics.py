"""Each metric moves as its method promises, on an isolated registry."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.dlq.contract import DEAD_LETTER_REASONS
from stream.metrics import AGE_BUCKETS, OUTCOMES, HistogramChild, Metrics
from stream.models import PinterestEvent, Signal
from stream.retry import RETRY_LABELS

NOW = 1_800_000_000.0
# The reason labels of retries_total that dashboards and alerts rely on (a contract).
RETRY_LABEL_VALUES = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection_error",
    "dead_letter_unacked",
)


def deliver(
    metrics: Metrics,
    account: str,
    event_name: str,
    action_source: str,
    signals: Signal,
    event_time: int,
    kafka_timestamp_ms: int | None,
) -> None:
    """One delivered event, as an answer of one event settles it."""
    event = PinterestEvent("e", event_name, action_source, event_time, None, b"{}", signals)
    metrics.events_delivered(account, [event], [kafka_timestamp_ms], NOW)


def event_at(event_time: int) -> PinterestEvent:
    return PinterestEvent("e", "checkout", "web", event_time, None, b"{}", Signal.NONE)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, clock=FakeClock(NOW))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name}{labels}"
    return sample


def test_known_label_sets_exist_at_zero(registry: CollectorRegistry, metrics: Metrics) -> None:
    for reason in DEAD_LETTER_REASONS:
        assert value(registry, "capi_stream_dead_letters_total", reason=reason) == 0
    for label in RETRY_LABEL_VALUES:
        assert value(registry, "capi_stream_retries_total", reason=label) == 0
    for outcome in OUTCOMES:
        assert (
            value(
                registry,
                "capi_stream_events_total",
                event_name="unknown",
                action_source="unknown",
                outcome=outcome,
            )
            == 0
        )
    for name in (
        "inflight_requests",
        "buffered_events",
        "paused_partitions",
        "late_events_total",
        "resilience_good",
    ):
        assert value(registry, f"capi_stream_{name}") == 0


def test_consumed_counts_per_topic(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.events_consumed_from("web", 3)
    metrics.events_consumed_from("web")
    metrics.events_consumed_from("crm", 2)
    assert value(registry, "capi_stream_events_consumed_total", topic="web") == 4
    assert value(registry, "capi_stream_events_consumed_total", topic="crm") == 2


def test_delivered_event_counts_latency_and_signals(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    kafka_ms = int((NOW - 2.0) * 1000)
    deliver(metrics, "1", "checkout", "web", Signal.IP_AND_USER_AGENT, int(NOW) - 10, kafka_ms)
    labels = {"event_name": "checkout", "action_source": "web"}
    assert value(registry, "capi_stream_events_total", outcome="delivered", **labels) == 1
    assert value(registry, "capi_stream_delivery_latency_seconds_sum") == pytest.approx(2.0)
    assert value(registry, "capi_stream_delivery_latency_seconds_bucket", le="2.5") == 1
    assert value(registry, "capi_stream_delivery_latency_seconds_bucket", le="1.0") == 0
    assert value(registry, "capi_stream_late_events_total") == 0
    assert value(registry, "capi_stream_resilience_window_events") == 1
    assert value(registry, "capi_stream_identifier_coverage_ratio", signal="ip_and_user_agent") == 1


def test_an_answer_settles_in_one_call_as_its_events_would_one_by_one() -> None:
    shapes = [
        ("checkout", "web", Signal.EMAIL, int(NOW) - 7200, int((NOW - 0.2) * 1000)),
        ("checkout", "web", Signal.EMAIL, int(NOW) - 10, int((NOW - 3.0) * 1000)),
        ("page_visit", "web", Signal.NONE, int(NOW) - 3601, None),
        ("lead", "offline", Signal.HASHED_MAIDS, int(NOW), int((NOW + 5.0) * 1000)),
        ("checkout", "web", Signal.EMAIL, int(NOW), int((NOW - 40.0) * 1000)),
    ]
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    single = Metrics(one_by_one, clock=lambda: NOW)
    for name, source, signals, event_time, kafka_ms in shapes:
        deliver(single, "1", name, source, signals, event_time, kafka_ms)
    events = [PinterestEvent("e", n, a, t, None, b"{}", s) for n, a, s, t, _ in shapes]
    Metrics(at_once, clock=lambda: NOW).events_delivered(
        "1", events, [kafka_ms for *_, kafka_ms in shapes], NOW
    )

    def ours(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        # The process and platform collectors' figures change between two scrapes.
        text = generate_latest(registry).decode()
        return {
            (sample.name, str(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("capi_stream_")
        }

    # Equal but for the rounding of the latency sum (added in another order).
    assert ours(at_once) == pytest.approx(ours(one_by_one), rel=1e-12, abs=1e-6, nan_ok=True)
    assert len(ours(at_once)) > 100
    assert value(at_once, "capi_stream_late_events_total") == 2
    assert value(at_once, "capi_stream_delivery_latency_seconds_count") == 4
    assert (
        value(
            at_once,
            "capi_stream_events_total",
            outcome="delivered",
            event_name="checkout",
            action_source="web",
        )
        == 3
    )


def test_delivery_more_than_an_hour_late_is_counted(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    deliver(metrics, "1", "page_visit", "web", Signal.NONE, int(NOW) - 3599, None)
    assert value(registry, "capi_stream_late_events_total") == 0
    deliver(metrics, "1", "page_visit", "web", Signal.NONE, int(NOW) - 3601, None)
    assert value(registry, "capi_stream_late_events_total") == 1
    # Without a Kafka timestamp there is no latency to observe.
    assert value(registry, "capi_stream_delivery_latency_seconds_count") == 0


@pytest.mark.parametrize("reason", DEAD_LETTER_REASONS)
def test_dead_letter_counts_reason_and_outcome(
    registry: CollectorRegistry, metrics: Metrics, reason: str
) -> None:
    metrics.event_dead_lettered(reason, "lead", "offline")  # type: ignore[arg-type]
    assert value(registry, "capi_stream_dead_letters_total", reason=reason) == 1
    assert (
        value(
            registry,
            "capi_stream_events_total",
            event_name="lead",
            action_source="offline",
            outcome="dead_lettered",
        )
        == 1
    )
    others = [r for r in DEAD_LETTER_REASONS if r != reason]
    assert all(value(registry, "capi_stream_dead_letters_total", reason=r) == 0 for r in others)


def test_undecodable_dead_letter_and_skip_use_unknown_labels(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.event_dead_lettered("decode_error")
    metrics.event_skipped()
    unknown = {"event_name": "unknown", "action_source": "unknown"}
    assert value(registry, "capi_stream_events_total", outcome="dead_lettered", **unknown) == 1
    assert value(registry, "capi_stream_events_total", outcome="skipped", **unknown) == 1
    assert value(registry, "capi_stream_events_total", outcome="delivered", **unknown) == 0


def test_unbounded_label_values_are_folded(registry: CollectorRegistry, metrics: Metrics) -> None:
    for i in range(50):
        metrics.event_settled(f"customer-typo-{i}", f"source-{i}", "skipped")
    assert (
        value(
            registry,
            "capi_stream_events_total",
            event_name="other",
            action_source="unknown",
            outcome="skipped",
        )
        == 50
    )
    assert b"customer-typo" not in generate_latest(registry)


def test_request_lifecycle(registry: CollectorRegistry, metrics: Metrics) -> None:
    for _ in range(3):
        metrics.request_started()
    assert value(registry, "capi_stream_inflight_requests") == 3
    metrics.request_done("549755885175", 200, 0.2)
    metrics.request_done("549755885175", 429, 0.02)
    assert value(registry, "capi_stream_inflight_requests") == 1
    metrics.request_done("549755885175", "timeout", 30.0)
    assert value(registry, "capi_stream_inflight_requests") == 0
    account = {"ad_account": "549755885175"}
    assert value(registry, "capi_stream_requests_total", code="200", **account) == 1
    assert value(registry, "capi_stream_requests_total", code="429", **account) == 1
    assert value(registry, "capi_stream_requests_total", code="timeout", **account) == 1
    assert value(registry, "capi_stream_request_duration_seconds_count", code="200") == 1
    assert value(registry, "capi_stream_request_duration_seconds_bucket", code="429", le="0.025")
    assert value(registry, "capi_stream_request_duration_seconds_bucket", code="timeout", le="30.0")


def test_batch_sent_records_size_and_event_ages(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.batch_sent([event_at(int(NOW) - 1), event_at(int(NOW) - 7200), event_at(int(NOW) + 5)])
    assert value(registry, "capi_stream_batch_events_count") == 1
    assert value(registry, "capi_stream_batch_events_sum") == 3
    assert value(registry, "capi_stream_event_age_seconds_count") == 3
    # A clock-skewed future event counts as age 0, not negative.
    assert value(registry, "capi_stream_event_age_seconds_bucket", le="0.1") == 1
    assert value(registry, "capi_stream_event_age_seconds_bucket", le="3600.0") == 2
    assert value(registry, "capi_stream_event_age_seconds_bucket", le="7200.0") == 3
    assert value(registry, "capi_stream_event_age_seconds_sum") == pytest.approx(7201.0)


@settings(max_examples=300)
@given(
    # Up to a request's 1,000 events: the sum's rounding then stays well under abs below.
    offsets=st.lists(
        st.one_of(st.sampled_from(AGE_BUCKETS), st.floats(-60.0, 10_000.0)), max_size=1000
    ),
    per_second=st.sampled_from([1.0, 1000.0]),
)
def test_ages_observed_at_once_land_as_one_by_one(offsets: list[float], per_second: float) -> None:
    # Ages exactly on a bound (`le` is inclusive), beyond the last one and ahead of now
    # (counted as 0) included.
    times = [int((NOW - offset) * per_second) for offset in offsets]
    at_once, one_by_one = HistogramChild(AGE_BUCKETS), HistogramChild(AGE_BUCKETS)
    at_once.observe_ages(NOW, list(times), per_second)
    for time in times:
        one_by_one.observe(max(NOW - time / per_second, 0.0))
    assert at_once.counts == one_by_one.counts
    assert at_once.sum == pytest.approx(one_by_one.sum, rel=1e-9, abs=1e-3)


@pytest.mark.parametrize("reason", RETRY_LABEL_VALUES)
def test_retry_counts_by_reason(registry: CollectorRegistry, metrics: Metrics, reason: str) -> None:
    metrics.retry_scheduled(reason, 3)  # type: ignore[arg-type]
    assert value(registry, "capi_stream_retries_total", reason=reason) == 3


def test_every_retry_reason_is_exported_under_a_contract_label() -> None:
    assert set(RETRY_LABELS.values()) == set(RETRY_LABEL_VALUES)


def test_an_unreadable_answer_is_retried_as_a_server_error(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.retry_scheduled("bad_response")
    metrics.retry_scheduled("server_error")
    assert value(registry, "capi_stream_retries_total", reason="server_error") == 2
    assert (
        registry.get_sample_value("capi_stream_retries_total", {"reason": "bad_response"}) is None
    )


def test_gauges_follow_state(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.buffer_changed(120, 4096)
    metrics.partitions_paused(2)
    metrics.partitions_assigned(6)
    metrics.ad_account_registered("1", 4)
    metrics.concurrency_limit_changed("1", 9)
    assert value(registry, "capi_stream_buffered_events") == 120
    assert value(registry, "capi_stream_buffered_bytes") == 4096
    assert value(registry, "capi_stream_paused_partitions") == 2
    assert value(registry, "capi_stream_assigned_partitions") == 6
    assert value(registry, "capi_stream_concurrency_limit", ad_account="1") == 9


def test_setup_error_sets_and_clears(registry: CollectorRegistry, metrics: Metrics) -> None:
    metrics.ad_account_registered("7", 4)
    assert value(registry, "capi_stream_setup_error", ad_account="7") == 0
    metrics.setup_error_changed("7", 401)
    assert value(registry, "capi_stream_setup_error", ad_account="7") == 1
    assert value(registry, "capi_stream_setup_error_status", ad_account="7") == 401
    metrics.setup_error_changed("7", None)
    assert value(registry, "capi_stream_setup_error", ad_account="7") == 0
    assert value(registry, "capi_stream_setup_error_status", ad_account="7") == 0


def test_readiness_is_read_at_scrape_time(registry: CollectorRegistry, metrics: Metrics) -> None:
    state = {"ready": False}
    metrics.watch_readiness(lambda: state["ready"])
    assert value(registry, "capi_stream_ready") == 0
    state["ready"] = True
    assert value(registry, "capi_stream_ready") == 1


def test_transformer_counts_are_read_at_scrape_time(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    normalized = {"value_number": 0, "event_time_ms": 0}
    ldp_without_state = [0]
    metrics.watch_transformer(lambda: normalized, lambda: ldp_without_state[0], dict)
    assert value(registry, "capi_stream_normalized_total", what="value_number") == 0
    assert value(registry, "capi_stream_ldp_without_state_total") == 0
    normalized["value_number"] += 2
    ldp_without_state[0] = 5
    assert value(registry, "capi_stream_normalized_total", what="value_number") == 2
    assert value(registry, "capi_stream_normalized_total", what="event_time_ms") == 0
    assert value(registry, "capi_stream_ldp_without_state_total") == 5
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["capi_stream_normalized"].type == "counter"


def _stats(partitions: dict[str, dict[str, object]]) -> bytes:
    return orjson.dumps({"topics": {"web": {"partitions": partitions}}})


def test_consumer_lag_from_librdkafka_statistics(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.kafka_statistics(
        _stats(
            {
                "0": {"consumer_lag": 42, "fetch_state": "active"},
                "1": {"consumer_lag": 0, "fetch_state": "active"},
                "2": {"consumer_lag": -1, "fetch_state": "active"},
                "-1": {"consumer_lag": -1, "fetch_state": "none"},
            }
        )
    )
    assert value(registry, "capi_stream_consumer_lag", topic="web", partition="0") == 42
    assert value(registry, "capi_stream_consumer_lag", topic="web", partition="1") == 0
    assert (
        registry.get_sample_value("capi_stream_consumer_lag", {"topic": "web", "partition": "2"})
        is None
    )

    # Partition 0 moved to another consumer: its series must go, not freeze at 42.
    metrics.kafka_statistics(
        _stats(
            {
                "0": {"consumer_lag": 42, "fetch_state": "none"},
                "1": {"consumer_lag": 5, "fetch_state": "active"},
            }
        )
    )
    assert (
        registry.get_sample_value("capi_stream_consumer_lag", {"topic": "web", "partition": "0"})
        is None
    )
    assert value(registry, "capi_stream_consumer_lag", topic="web", partition="1") == 5

    metrics.partitions_revoked([("web", 1)])
    assert (
        registry.get_sample_value("capi_stream_consumer_lag", {"topic": "web", "partition": "1"})
        is None
    )


def test_resilience_ratios_are_nan_without_events(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    ratio = value(registry, "capi_stream_identifier_coverage_ratio", signal="external_id")
    share = value(registry, "capi_stream_signal_share_ratio", signal="click_id")
    assert math.isnan(ratio)
    assert math.isnan(share)
    assert value(registry, "capi_stream_resilience_good") == 0


def test_resilience_gauges_follow_delivered_events(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    full = Signal.IP_AND_USER_AGENT | Signal.EMAIL | Signal.EXTERNAL_ID
    for _ in range(9):
        deliver(metrics, "1", "checkout", "web", full, int(NOW), None)
    deliver(metrics, "1", "page_visit", "web", Signal.CLICK_ID, int(NOW), None)
    assert value(registry, "capi_stream_resilience_good") == 1
    assert value(
        registry, "capi_stream_identifier_coverage_ratio", signal="ip_and_user_agent"
    ) == pytest.approx(0.9)
    assert value(registry, "capi_stream_signal_share_ratio", signal="click_id") == pytest.approx(
        0.1
    )
    deliver(metrics, "1", "page_visit", "web", Signal.NONE, int(NOW), None)
    assert value(registry, "capi_stream_resilience_good") == 0


def test_no_pii_in_exposition(registry: CollectorRegistry, metrics: Metrics) -> None:
    # Metric methods take only bounded values; this guards the folding of free-form names.
    metrics.event_settled("jane.doe@example.com", "web", "delivered")
    assert b"jane.doe" not in generate_latest(registry)


def test_histogram_buckets_are_cumulative_and_inclusive(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.request_started()
    metrics.request_done("1", 200, 0.1)  # exactly on a bound: counted in le="0.1"
    metrics.request_started()
    metrics.request_done("1", 200, 45.0)  # beyond the last bound: only +Inf
    bucket = "capi_stream_request_duration_seconds_bucket"
    assert value(registry, bucket, code="200", le="0.05") == 0
    assert value(registry, bucket, code="200", le="0.1") == 1
    assert value(registry, bucket, code="200", le="30.0") == 1
    assert value(registry, bucket, code="200", le="+Inf") == 2
    assert value(registry, "capi_stream_request_duration_seconds_sum", code="200") == 45.1


def test_exposition_parses_as_prometheus_text(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    deliver(metrics, "1", "checkout", "web", Signal.EMAIL, int(NOW), int(NOW * 1000))
    metrics.batch_sent([event_at(int(NOW))])
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["capi_stream_events"].type == "counter"
    assert families["capi_stream_delivery_latency_seconds"].type == "histogram"
    assert families["capi_stream_batch_events"].type == "histogram"


def test_resilience_counters_per_ad_account_and_action_source(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    web_full = Signal.IP_AND_USER_AGENT | Signal.EXTERNAL_ID | Signal.EMAIL
    for _ in range(3):
        deliver(metrics, "1", "checkout", "web", web_full, int(NOW), None)
    deliver(metrics, "1", "page_visit", "web", Signal.IP_AND_USER_AGENT, int(NOW), None)
    deliver(metrics, "2", "checkout", "offline", Signal.HASHED_MAIDS, int(NOW), None)
    deliver(metrics, "2", "lead", "offline", Signal.NONE, int(NOW), None)

    def counted(account: str, action_source: str, signal: str) -> float:
        return value(
            registry,
            "capi_stream_resilience_events_total",
            ad_account=account,
            action_source=action_source,
            signal=signal,
        )

    assert [
        counted("1", "web", s)
        for s in ("all", "ip_ua", "external_id", "bottom_funnel", "bottom_funnel_em_or_maid")
    ] == [4, 4, 3, 3, 3]
    assert [
        counted("2", "offline", s)
        for s in ("all", "ip_ua", "external_id", "bottom_funnel", "bottom_funnel_em_or_maid")
    ] == [2, 0, 0, 2, 1]
