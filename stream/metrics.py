"""Every Prometheus metric of capi-stream, defined once against an injected registry."""

from __future__ import annotations

import math
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Literal, Protocol, TypeVar, cast

import orjson
from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream.dlq.contract import DEAD_LETTER_REASONS, DeadLetterReason
from stream.models import PinterestEvent, Signal
from stream.resilience import COVERAGE_SIGNALS, SHARE_SIGNALS, ResilienceTracker
from stream.retry import RETRY_LABELS, RetryReason
from stream.spec import ACTION_SOURCES, BOTTOM_FUNNEL_EVENTS, EVENT_NAMES

PREFIX = "capi_stream"
_S = TypeVar("_S", bound=str)

Outcome = Literal["delivered", "dead_lettered", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "dead_lettered", "skipped")

UNKNOWN = "unknown"
"""event_name / action_source label of messages that never became an event (decode errors…)."""
OTHER = "other"

LATE_AFTER_S = 3600.0
"""Pinterest reports events received more than an hour after they happened as offline."""
_SHAPE = attrgetter("event_name", "action_source", "signals")
_EVENT_TIME = attrgetter("event_time")

REQUEST_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)
BATCH_EVENTS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 750, 1000)
AGE_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
    259200.0,
    604800.0,
)


class Metrics:
    """The metric set plus cheap, intention-revealing update methods for the hot path.

    Label children are cached in plain dicts so a hot-path update is a dict lookup and an add.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        resilience_window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self._clock = clock
        # The process's own CPU, memory and file descriptors, which the dashboard and runbook use;
        # the custom registry does not get them from prometheus_client's default one.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterFamily:
            return CounterFamily(f"{PREFIX}_{name}", doc, tuple(labels), registry)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labelnames=tuple(labels), registry=registry)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: Iterable[str] = ()
        ) -> HistogramFamily:
            return HistogramFamily(f"{PREFIX}_{name}", doc, buckets, tuple(labels), registry)

        self.events_consumed = counter(
            "events_consumed", "Kafka messages consumed from source topics", ["topic"]
        )
        self.events = counter(
            "events",
            "Messages settled, by outcome (delivered, dead_lettered or skipped)",
            ["event_name", "action_source", "outcome"],
        )
        self.dead_letters = counter(
            "dead_letters", "Messages written to the dead-letter topic", ["reason"]
        )
        self.dead_letters_truncated = counter(
            "dead_letters_truncated",
            "Dead letters whose value was cut to fit the dead-letter topic (capi.value.truncated)",
        )
        self.requests = counter(
            "requests", "Requests to the Conversions API by HTTP status", ["ad_account", "code"]
        )
        self.request_duration = histogram(
            "request_duration_seconds",
            "Duration of one Conversions API request",
            REQUEST_DURATION_BUCKETS,
            ["code"],
        )
        self.batch_events = histogram(
            "batch_events", "Events per request sent", BATCH_EVENTS_BUCKETS
        )
        self.inflight_requests = gauge(
            "inflight_requests", "Conversions API requests currently in flight"
        )
        self.concurrency_limit = gauge(
            "concurrency_limit", "Adaptive in-flight request limit", ["ad_account"]
        )
        self.retries = counter("retries", "Retries scheduled, by reason", ["reason"])
        self.buffered_events = gauge("buffered_events", "Events held in memory, not yet settled")
        self.buffered_bytes = gauge("buffered_bytes", "Bytes of events held in memory")
        self.paused_partitions = gauge("paused_partitions", "Partitions paused for backpressure")
        self.assigned_partitions = gauge(
            "assigned_partitions", "Partitions currently assigned to this consumer"
        )
        self.consumer_lag = gauge(
            "consumer_lag",
            "Messages behind the high watermark, from the committed offset",
            ["topic", "partition"],
        )
        self.delivery_latency = histogram(
            "delivery_latency_seconds",
            "Kafka message timestamp to Pinterest's acknowledgement",
            AGE_BUCKETS,
        )
        self.event_age = histogram(
            "event_age_seconds", "event_time to the request carrying the event", AGE_BUCKETS
        )
        self.late_events = counter(
            "late_events",
            "Events delivered more than an hour after event_time (Pinterest counts them offline)",
        )
        self.identifier_coverage = gauge(
            "identifier_coverage_ratio",
            "Resilience-status ratios over the sliding window (NaN without events)",
            ["signal"],
        )
        self.signal_share = gauge(
            "signal_share_ratio",
            "Share of delivered events carrying each high-weight matching signal",
            ["signal"],
        )
        self.resilience_good = gauge(
            "resilience_good", "1 when Pinterest's resilience thresholds are met, else 0"
        )
        self.resilience_window_events = gauge(
            "resilience_window_events", "Delivered events in the resilience sliding window"
        )
        self.setup_error = gauge(
            "setup_error", "1 while an ad account is paused by a setup error", ["ad_account"]
        )
        self.setup_error_status = gauge(
            "setup_error_status",
            "HTTP status of an ad account's current setup error (0 when none)",
            ["ad_account"],
        )
        self.ready = gauge("ready", "1 when /readyz answers ready, else 0")
        self.pinterest_warnings = counter(
            "pinterest_warnings",
            "Pinterest's per-event warning_message on processed events, by short name",
            ["ad_account", "warning"],
        )
        self.resilience_events = ResilienceCounters(registry)
        self.quality = QualityMetrics(registry)

        self._events: dict[tuple[str, str, str], CounterChild] = {}
        self._consumed: dict[str, CounterChild] = {}
        self._requests: dict[tuple[str, str], CounterChild] = {}
        self._durations: dict[str, HistogramChild] = {}
        self._dead_letters = {r: self.dead_letters.labels(r) for r in DEAD_LETTER_REASONS}
        self._retries = {r: self.retries.labels(label) for r, label in RETRY_LABELS.items()}
        self._lag_series: set[tuple[str, str]] = set()
        self._inflight_inc = self.inflight_requests.inc
        self._inflight_dec = self.inflight_requests.dec
        self._observe_batch = self.batch_events.labels().observe
        self._event_age = self.event_age.labels()
        self._latency = self.delivery_latency.labels()
        self._late_inc = self.late_events.labels().inc
        for outcome in OUTCOMES:
            self._events_child(UNKNOWN, UNKNOWN, outcome)

        self._resilience_shapes = self.resilience_events.shapes
        self.resilience = ResilienceTracker(resilience_window_s, clock=clock)
        self._record_signals = self.resilience.record
        self._watch_resilience()

    # --- consumption ---------------------------------------------------------------------------

    def events_consumed_from(self, topic: str, count: int = 1) -> None:
        child = self._consumed.get(topic)
        if child is None:
            child = self._consumed[topic] = self.events_consumed.labels(topic)
        child.inc(count)

    def partitions_assigned(self, count: int) -> None:
        self.assigned_partitions.set(count)

    def partitions_paused(self, count: int) -> None:
        self.paused_partitions.set(count)

    def buffer_changed(self, events: int, size_bytes: int) -> None:
        self.buffered_events.set(events)
        self.buffered_bytes.set(size_bytes)

    def kafka_statistics(self, stats_json: str | bytes) -> None:
        """Sets `consumer_lag` from a librdkafka statistics callback (`statistics.interval.ms`).

        Partitions that are no longer fetched, or whose lag is unknown (nothing committed yet),
        lose their series so a revoked partition does not report a stale lag forever.
        """
        stats = orjson.loads(stats_json)
        seen: set[tuple[str, str]] = set()
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, p in topic_stats.get("partitions", {}).items():
                lag = p.get("consumer_lag", -1)
                if partition == "-1" or lag < 0 or p.get("fetch_state") == "none":
                    continue
                key = (topic, partition)
                seen.add(key)
                self.consumer_lag.labels(topic, partition).set(lag)
        for topic, partition in self._lag_series - seen:
            self.consumer_lag.remove(topic, partition)
        self._lag_series = seen

    def partitions_revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drops the lag series of partitions this consumer no longer owns."""
        for topic, partition in partitions:
            key = (topic, str(partition))
            if key in self._lag_series:
                self._lag_series.discard(key)
                self.consumer_lag.remove(*key)

    # --- settlement ----------------------------------------------------------------------------

    def event_settled(self, event_name: str, action_source: str, outcome: Outcome) -> None:
        """Counts one settled message in `events_total` (dead letters: use event_dead_lettered)."""
        child = self._events.get((event_name, action_source, outcome))
        if child is None:
            child = self._events_child(event_name, action_source, outcome)
        child.inc()

    def events_delivered(
        self,
        ad_account: str,
        events: Collection[PinterestEvent],
        kafka_timestamps_ms: Iterable[int | None],
        now: float | None = None,
    ) -> None:
        """Pinterest said `processed` for these events of one answer (an event consumed twice is
        in `events` twice): counts them, their latency, lateness and matching signals.

        One call per answer, not per event: the counters are updated once per distinct event
        shape (name, action source, signals), of which an answer holds few.
        """
        if now is None:
            now = self._clock()
        stamps = list(kafka_timestamps_ms)
        if None in stamps:  # a message without a Kafka timestamp has no latency to observe
            stamps = [timestamp_ms for timestamp_ms in stamps if timestamp_ms is not None]
        self._latency.observe_ages(now, cast("list[int]", stamps), 1000.0)
        late_before = now - LATE_AFTER_S
        late = 0
        for event_time in map(_EVENT_TIME, events):
            if event_time < late_before:
                late += 1
        if late:
            self._late_inc(late)
        record_signals = self._record_signals
        resilience = self._resilience_shapes
        for (event_name, action_source, signals), count in Counter(map(_SHAPE, events)).items():
            child = self._events.get((event_name, action_source, "delivered"))
            if child is None:
                child = self._events_child(event_name, action_source, "delivered")
            child.value += count
            record_signals(signals, event_name, now, count)
            key = (ad_account, action_source, signals, event_name)
            resilience[key] = resilience.get(key, 0) + count

    def event_dead_lettered(
        self, reason: DeadLetterReason, event_name: str = UNKNOWN, action_source: str = UNKNOWN
    ) -> None:
        """The dead-letter topic acknowledged the message."""
        self._dead_letters[reason].inc()
        self.event_settled(event_name, action_source, "dead_lettered")

    def dead_letter_truncated(self) -> None:
        self.dead_letters_truncated.labels().inc()

    def event_skipped(self, event_name: str = UNKNOWN, action_source: str = UNKNOWN) -> None:
        self.event_settled(event_name, action_source, "skipped")

    # --- requests ------------------------------------------------------------------------------

    def batch_sent(self, events: Collection[PinterestEvent], now: float | None = None) -> None:
        """A request is going out: records its size and the age of each event in it."""
        if now is None:
            now = self._clock()
        self._event_age.observe_ages(now, list(map(_EVENT_TIME, events)))
        self._observe_batch(len(events))

    def request_started(self) -> None:
        self._inflight_inc()

    def request_done(self, ad_account: str, code: int | str, seconds: float) -> None:
        """Pairs with request_started; `code` is the HTTP status or e.g. "timeout"."""
        self._inflight_dec()
        key = (ad_account, str(code))
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()
        duration = self._durations.get(key[1])
        if duration is None:
            duration = self._durations[key[1]] = self.request_duration.labels(key[1])
        duration.observe(seconds)

    def retry_scheduled(self, reason: RetryReason, count: int = 1) -> None:
        self._retries[reason].inc(count)

    # --- ad accounts and readiness -------------------------------------------------------------

    def ad_account_registered(self, ad_account: str, concurrency_limit: int) -> None:
        """Creates an account's series at startup so dashboards show it before any traffic."""
        self.concurrency_limit.labels(ad_account).set(concurrency_limit)
        self.setup_error_changed(ad_account, None)

    def pinterest_warned(self, ad_account: str, warnings: tuple[str, ...], events: int = 1) -> None:
        """Pinterest processed `events` events with these notes (bounded names, see classify)."""
        for warning in warnings:
            self.pinterest_warnings.labels(ad_account, warning).inc(events)

    def concurrency_limit_changed(self, ad_account: str, limit: float) -> None:
        self.concurrency_limit.labels(ad_account).set(limit)

    def setup_error_changed(self, ad_account: str, status: int | None) -> None:
        """`status` is the HTTP status that paused the account, None once it works again."""
        self.setup_error.labels(ad_account).set(0 if status is None else 1)
        self.setup_error_status.labels(ad_account).set(status or 0)

    def watch_readiness(self, is_ready: Callable[[], bool]) -> None:
        """Evaluates readiness at scrape time, the same way /readyz does."""
        self.ready.set_function(lambda: 1.0 if is_ready() else 0.0)

    def watch_transformer(
        self,
        normalized: Callable[[], Mapping[str, int]],
        ldp_without_state: Callable[[], int],
        truncated: Callable[[], Mapping[str, int]],
    ) -> None:
        """Exports what the transformer counts in plain numbers, read at scrape time."""
        ScrapedCounter(
            f"{PREFIX}_truncated_values",
            "Values dropped by the per-message caps (50 distinct per hashed field, 1,000 contents)",
            ("field",),
            lambda: {(field,): count for field, count in truncated().items()},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_normalized",
            "Messages whose shape was normalized instead of dead-lettered, by kind",
            ("what",),
            lambda: {(what,): count for what, count in normalized().items()},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_ldp_without_state",
            "Events sent flagged LDP without user_data.st (the state of residence)",
            (),
            lambda: {(): ldp_without_state()},
            self.registry,
        )

    def watch_identities(self, profiles: IdentityFigures, state: IdentityStoreFigures) -> None:
        """Exports identity enrichment's figures (sources with `enrich: identity`), read at
        scrape time: identifiers added per field, profiles and disk, restores."""
        ScrapedCounter(
            f"{PREFIX}_identity_enriched",
            "Identifiers added to events from their user's profile, by user_data field",
            ("field",),
            lambda: {(field,): count for field, count in profiles.enriched.items()},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_keys_on_two_partitions",
            "Identity keys seen on another partition than before (messages not keyed by user)",
            (),
            lambda: {(): profiles.keys_on_two_partitions},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_changelog_errors",
            "Identity changelog writes that failed (re-sent; commits wait for them)",
            (),
            lambda: {(): state.changelog_errors},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_forgotten",
            "Tombstones of `capi-stream identity forget` applied to owned stores while running",
            (),
            lambda: {(): state.forgotten},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_restored_records",
            "Changelog records applied while restoring identity stores",
            (),
            lambda: {(): state.restores.records},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_restores",
            "Identity stores restored after an assignment",
            (),
            lambda: {(): len(state.restores.seconds)},
            self.registry,
        )
        ScrapedCounter(
            f"{PREFIX}_identity_restore_seconds",
            "Time spent restoring identity stores after assignments",
            (),
            lambda: {(): sum(state.restores.seconds)},
            self.registry,
        )
        IdentityGauges(state, self.registry)

    # --- internals -----------------------------------------------------------------------------

    def _events_child(self, event_name: str, action_source: str, outcome: Outcome) -> CounterChild:
        name = event_name if event_name in EVENT_NAMES or event_name == UNKNOWN else OTHER
        source = action_source if action_source in ACTION_SOURCES else UNKNOWN
        child = self.events.labels(name, source, outcome)
        if name == event_name and source == action_source:
            # Only well-formed keys are cached, so odd inputs cannot grow the cache.
            self._events[(event_name, action_source, outcome)] = child
        return child

    def _watch_resilience(self) -> None:
        tracker = self.resilience
        for coverage in COVERAGE_SIGNALS:
            self.identifier_coverage.labels(coverage).set_function(
                _reader(tracker.coverage, coverage)
            )
        for share in SHARE_SIGNALS:
            self.signal_share.labels(share).set_function(_reader(tracker.share, share))
        self.resilience_good.set_function(lambda: 1.0 if tracker.good() else 0.0)
        self.resilience_window_events.set_function(lambda: float(tracker.events()))


def _reader(ratio: Callable[[_S], float | None], signal: _S) -> Callable[[], float]:
    """A scrape-time gauge function; NaN says "no events to judge", unlike a misleading 0."""

    def read() -> float:
        value = ratio(signal)
        return math.nan if value is None else value

    return read


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (Prometheus' `le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_ages(self, now: float, times: list[int], per_second: float = 1.0) -> None:
        """`observe(now - time / per_second)` for each time (0 for a time ahead of `now`), with no
        Python per time: `times` (the caller's list, sorted here newest first) gives ascending
        ages, so each bucket's count is one binary search (issue 20: a request's events)."""
        if not times:
            return
        times.sort(reverse=True)

        def age(time: int) -> float:
            return now - time / per_second

        counts = self.counts
        below = 0
        for index, bound in enumerate(self.bounds):
            at_most = bisect_right(times, bound, key=age)
            counts[index] += at_most - below
            below = at_most
        counts[-1] += len(times) - below
        ahead = bisect_right(times, 0.0, key=age)
        self.sum += (len(times) - ahead) * now - sum(times[ahead:]) / per_second


class ResilienceCounters(Collector):
    """`resilience_events_total{ad_account,action_source,signal}` (DESIGN §6): counters that
    sum across replicas, so recording rules can rate each ad account the way Pinterest does.

    The hot path only counts event shapes (account, action source, signals, event name); the
    five signals are derived from them at scrape time.
    """

    NAME = f"{PREFIX}_resilience_events"
    DOC = "Delivered events per ad account and action source that meet each resilience signal"
    LABELS = ("ad_account", "action_source", "signal")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.shapes: dict[tuple[str, str, Signal, str], int] = {}
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self.DOC, labels=self.LABELS)

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, str, str], int] = {}
        for (account, action_source, signals, event_name), count in list(self.shapes.items()):
            bottom_funnel = event_name in BOTTOM_FUNNEL_EVENTS
            for signal, met in (
                ("all", True),
                ("ip_ua", Signal.IP_AND_USER_AGENT in signals),
                ("external_id", Signal.EXTERNAL_ID in signals),
                ("bottom_funnel", bottom_funnel),
                (
                    "bottom_funnel_em_or_maid",
                    bottom_funnel and bool(signals & (Signal.EMAIL | Signal.HASHED_MAIDS)),
                ),
            ):
                key = (account, action_source, signal)
                totals[key] = totals.get(key, 0) + (count if met else 0)
        family = CounterMetricFamily(self.NAME, self.DOC, labels=self.LABELS)
        for labels, value in sorted(totals.items()):
            family.add_metric(labels, value)
        yield family


class IdentityFigures(Protocol):
    @property
    def enriched(self) -> Mapping[str, int]: ...

    @property
    def keys_on_two_partitions(self) -> int: ...


class Restores(Protocol):
    @property
    def records(self) -> int: ...

    @property
    def seconds(self) -> list[float]: ...


class IdentityStoreFigures(Protocol):
    @property
    def changelog_errors(self) -> int: ...

    @property
    def restores(self) -> Restores: ...

    @property
    def forgotten(self) -> int: ...

    def stored(self) -> tuple[int, int]: ...


class IdentityGauges(Collector):
    """Profiles held and disk used by the identity stores of the owned partitions."""

    def __init__(self, state: IdentityStoreFigures, registry: CollectorRegistry) -> None:
        self._state = state
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        profiles, disk = self._state.stored()
        yield GaugeMetricFamily(
            f"{PREFIX}_identity_profiles",
            "Identity profiles and links stored for the owned partitions (RocksDB's estimate)",
            value=profiles,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_identity_store_bytes",
            "Disk used by the identity stores of the owned partitions",
            value=disk,
        )


class ScrapedCounter(Collector):
    """A counter the counting stage keeps as plain numbers, read at scrape time: its hot path
    adds to a dict and never calls into prometheus_client."""

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: tuple[str, ...],
        read: Callable[[], Mapping[tuple[str, ...], float]],
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._doc, self._labelnames, self._read = name, doc, labelnames, read
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._doc, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, count in sorted(self._read().items()):
            family.add_metric(values, count)
        yield family


class CounterFamily(Collector):
    """A counter without prometheus_client's per-update lock.

    prometheus_client takes a mutex on every inc() (~0.5 µs); updates here come from the event
    loop thread only, and a scrape racing an update at worst reads a value one step behind.
    """

    def __init__(
        self, name: str, doc: str, labelnames: tuple[str, ...], registry: CollectorRegistry
    ) -> None:
        self._name, self._doc, self._labelnames = name, doc, labelnames
        self._children: dict[tuple[str, ...], CounterChild] = {}
        if not labelnames:
            self.labels()
        registry.register(self)

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}")
            child = self._children[values] = CounterChild()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._doc, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class HistogramFamily(Collector):
    """A histogram without prometheus_client's lock and linear bucket scan (~1.5 µs/observe)."""

    def __init__(
        self,
        name: str,
        doc: str,
        buckets: tuple[float, ...],
        labelnames: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._doc, self._labelnames = name, doc, labelnames
        self._bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        if not labelnames:
            self.labels()
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._labelnames):
                raise ValueError(f"{self._name} takes labels {self._labelnames}")
            child = self._children[values] = HistogramChild(self._bounds)
        return child

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts = list(child.counts)
            cumulative, buckets = 0, []
            for bound, count in zip((*self._bounds, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


# --- Pinterest's Event Quality Score (set by stream.quality) -----------------------------------

QualityKey = tuple[str, ...]


class QualityMetrics:
    """Pinterest's Event Quality Score as the quality poller last read it.

    Each answer replaces the series of its ad account and lookback period: an ingestion source,
    platform or component Pinterest no longer reports loses its series instead of keeping a
    stale value. Coverage and overlap are ratios (Pinterest's percentages / 100).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        base = ["ad_account", "ingestion_source", "platform", "lookback"]
        parts = [*base, "component", "event_name"]
        self.status = Gauge(
            f"{PREFIX}_quality_status",
            "Pinterest's overall Event Quality Score: 0 NEEDS_IMPROVEMENT, 1 FAIR, 2 GOOD",
            base,
            registry=registry,
        )
        self.coverage = Gauge(
            f"{PREFIX}_quality_coverage_ratio",
            "Share of events carrying the component, per event type, as Pinterest counts it",
            parts,
            registry=registry,
        )
        self.overlap = Gauge(
            f"{PREFIX}_quality_overlap_ratio",
            "Share of events also received from the Tag (external_event_id), per Pinterest",
            parts,
            registry=registry,
        )
        self.issues = Gauge(
            f"{PREFIX}_quality_issues",
            "Open issues Pinterest reports per component and event type (names in the log)",
            parts,
            registry=registry,
        )
        self.last_success = Gauge(
            f"{PREFIX}_quality_last_success_timestamp_seconds",
            "When the Event Quality Score of an ad account was last read",
            ["ad_account", "lookback"],
            registry=registry,
        )
        self.poll_errors = CounterFamily(
            f"{PREFIX}_quality_poll_errors",
            "Failed Event Quality Score requests, by reason",
            ("ad_account", "reason"),
            registry,
        )
        self._series: dict[tuple[str, str], dict[Gauge, set[QualityKey]]] = {}

    def scored(
        self,
        ad_account: str,
        lookback: str,
        status: dict[tuple[str, str], float],
        coverage: dict[tuple[str, str, str, str], float],
        overlap: dict[tuple[str, str, str, str], float],
        issues: dict[tuple[str, str, str, str], float],
        now: float,
    ) -> None:
        """Replaces the series of one ad account and lookback period with a new answer."""
        previous = self._series.get((ad_account, lookback), {})
        current: dict[Gauge, set[QualityKey]] = {}
        for gauge, samples in (
            (self.status, status),
            (self.coverage, coverage),
            (self.overlap, overlap),
            (self.issues, issues),
        ):
            keys = current[gauge] = set()
            for labels, value in samples.items():
                key = (ad_account, labels[0], labels[1], lookback, *labels[2:])
                gauge.labels(*key).set(value)
                keys.add(key)
            for stale in previous.get(gauge, set()) - keys:
                gauge.remove(*stale)
        self._series[(ad_account, lookback)] = current
        self.last_success.labels(ad_account, lookback).set(now)

    def poll_failed(self, ad_account: str, reason: str) -> None:
        self.poll_errors.labels(ad_account, reason).inc()
