"""The per-event budget of bookkeeping: what the forwarder spends on a message besides transform.

    .venv/bin/python benchmarks/bench_bookkeeping.py [--mix realistic] [--events 20000]

Each stage runs in isolation, in this process, on the same generated messages the end-to-end
topics hold (transformed once beforehand), and is reported in µs of CPU per event (the best of
`--rounds` passes, so outside load on shared cores inflates it least):

- record: a consumed confluent-kafka message becomes the record the pipeline carries
  (stream/source.py, on the consumer thread);
- track: the poll's offsets registered per partition (stream/offsets.py);
- ingest: what stream/ingest.py does around `Transformer.transform` (transform stubbed out):
  tracking, the held record, batching, the buffer account, the consumed counter;
- batch: `Batcher.add` and sealing, alone (stream/batcher.py);
- classify: the sandbox's 200 answer to a batch into per-event outcomes (stream/pinterest);
- settle: the dispatcher settling a classified batch (stream/dispatcher.py → stream/settlement.py):
  delivery metrics, offsets, buffer release, Pinterest's per-event warnings;
- delivery metrics: `Metrics.events_delivered` alone, once per answer (stream/metrics.py);
- settle offsets: `OffsetTracker.settle_all` alone, once per answer.

"ingest", "classify" and "settle" add up to the bookkeeping of the event loop's thread ("batch"
and "track" are parts of "ingest", "delivery metrics" and "settle offsets" parts of "settle");
"record" runs on the consumer thread.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, get_args

import confluent_kafka
import orjson
from prometheus_client import CollectorRegistry

from benchmarks.lab import forwarder_gc
from stream.backpressure import BufferAccount
from stream.batcher import Batch, Batcher, BatchKey
from stream.dispatcher import Dispatcher
from stream.ingest import Ingest
from stream.metrics import Metrics
from stream.models import PinterestEvent, SourceRecord, TransformResult
from stream.offsets import OffsetTracker
from stream.pinterest.classify import ApiResponse, classify
from stream.retry import Backoff
from stream.sandbox.checks import EXTERNAL_ID_MISSING
from stream.settings import PinterestSettings, Settings, SourceSettings
from stream.settlement import Settlement
from stream.source import _record
from stream.transform import Transformer
from traffic.generator import ClickstreamGenerator, Mix

POLL = 1000
PARTITIONS = 6
TOPIC = "web"
ACCOUNT = "549764106778"
STAGES = (
    ("record", "consumer thread: confluent-kafka message → record"),
    ("ingest", "event loop: track, hold, batch, buffer account (transform excluded)"),
    ("track", "  of which: offsets registered (per poll)"),
    ("batch", "  of which: batcher add + seal"),
    ("classify", "event loop: the API's answer → per-event outcomes"),
    ("settle", "event loop: settle delivered events (metrics, offsets, buffer, warnings)"),
    ("delivery_metrics", "  of which: Metrics.events_delivered"),
    ("settle_offsets", "  of which: OffsetTracker.settle_all"),
)
LOOP_STAGES = ("ingest", "classify", "settle")


class _NoSender:
    async def send(self, ad_account_id: str, test: bool, body: bytes) -> Any:
        raise AssertionError("the bookkeeping benchmark sends nothing")


class _NoSource:
    generation = 0

    async def commit(self, positions: Any, generation: int) -> bool:
        return True


class _NoDeadLetters:
    def send(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the benchmark's events are all delivered")


class _Results:
    """Stands in for the Transformer: hands back the precomputed result of each message."""

    def __init__(self, results: dict[bytes, TransformResult]) -> None:
        self._results = results

    def transform(self, source: Any, value: bytes, timestamp_ms: int | None) -> TransformResult:
        return self._results[value]


def _messages(polls: Sequence[Sequence[bytes]], now_ms: int) -> list[list[confluent_kafka.Message]]:
    """Polls as librdkafka returns them: runs of one partition, offsets ascending across polls."""
    messages = []
    offset = 0
    for poll in polls:
        messages.append(
            [
                confluent_kafka.Message(
                    topic=TOPIC,
                    partition=index * PARTITIONS // len(poll),
                    offset=offset + index,
                    key=b"visitor",
                    value=value,
                    timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, now_ms),
                )
                for index, value in enumerate(poll)
            ]
        )
        offset += len(poll)
    return messages


def _answer(events: Sequence[PinterestEvent]) -> ApiResponse:
    """The sandbox's answer: every event processed, a warning where external_id is missing."""
    results = [
        {"status": "processed", "error_message": "", "warning_message": ""}
        if b'"external_id"' in event.body
        else {"status": "processed", "error_message": "", "warning_message": EXTERNAL_ID_MISSING}
        for event in events
    ]
    return ApiResponse(200, orjson.dumps({"num_events_received": len(events), "events": results}))


class _Stages:
    """Each stage over the same polls; every method returns (CPU seconds, events)."""

    def __init__(self, mix: Mix, events: int) -> None:
        self.settings = Settings(
            pinterest=PinterestSettings(ad_account_id=ACCOUNT),
            sources=[SourceSettings(topic=TOPIC)],
        )
        self.now = now = time.time()
        self.now_ms = int(now * 1000)
        generator = ClickstreamGenerator(1, now=lambda: now, mix=mix, poison_ratio=0.0)
        values = [m.value for m in generator.messages(events)]
        transformer = Transformer(self.settings, lambda: now)
        source = self.settings.sources[0]
        results = {value: transformer.transform(source, value, self.now_ms) for value in values}
        self.results = results
        self.values = [v for v in values if type(results[v]) is PinterestEvent]
        # One batch per poll, as the forwarder sends them (1,000 events per request).
        self.polls = [self.values[i : i + POLL] for i in range(0, len(self.values), POLL)]
        self.events: list[PinterestEvent] = [
            event for value in self.values if type(event := results[value]) is PinterestEvent
        ]
        self.batches = [self.events[i : i + POLL] for i in range(0, len(self.events), POLL)]
        self.answers = [_answer(batch) for batch in self.batches]
        self.key = BatchKey(ACCOUNT)

    def _records(self) -> list[list[SourceRecord]]:
        return [[_record(m) for m in poll] for poll in _messages(self.polls, self.now_ms)]

    def _settlement(self, metrics: Metrics, buffer: BufferAccount) -> Settlement:
        settlement = Settlement(_NoSource(), _NoDeadLetters(), metrics, buffer, _nothing, 1.0)
        settlement.tracker.assign([(TOPIC, p) for p in range(PARTITIONS)])
        return settlement

    def record(self) -> tuple[float, int]:
        polls = _messages(self.polls, self.now_ms)
        started = time.process_time()
        for poll in polls:
            for message in poll:
                _record(message)
        return time.process_time() - started, len(self.values)

    def track(self) -> tuple[float, int]:
        polls = self._records()
        tracker = OffsetTracker()
        tracker.assign([(TOPIC, p) for p in range(PARTITIONS)])
        started = time.process_time()
        for poll in polls:
            tracker.track_all(poll)
        return time.process_time() - started, len(self.values)

    def ingest(self) -> tuple[float, int]:
        metrics = Metrics(CollectorRegistry())
        buffer = BufferAccount(10**9, 10**12, 0.5)
        batcher: Batcher[SourceRecord] = Batcher(POLL, 4 * 1024 * 1024, 3600.0)
        submitted: list[Batch[SourceRecord]] = []
        stub: Any = _Results(self.results)
        ingest = Ingest(
            self.settings,
            stub,
            batcher,
            submitted.append,
            self._settlement(metrics, buffer),
            buffer,
            metrics,
        )
        polls = self._records()
        loop = asyncio.new_event_loop()
        try:
            started = time.process_time()
            for poll in polls:
                loop.run_until_complete(ingest.poll(poll))
            return time.process_time() - started, len(self.values)
        finally:
            loop.close()

    def batch(self) -> tuple[float, int]:
        batcher: Batcher[int] = Batcher(POLL, 4 * 1024 * 1024, 3600.0)
        add = batcher.add
        key = self.key
        started = time.process_time()
        for event in self.events:
            add(key, event, 0)
        batcher.flush()
        return time.process_time() - started, len(self.events)

    def classify(self) -> tuple[float, int]:
        started = time.process_time()
        for batch, answer in zip(self.batches, self.answers, strict=True):
            classify(answer, len(batch), self.now)
        return time.process_time() - started, len(self.events)

    def settle(self) -> tuple[float, int]:
        metrics = Metrics(CollectorRegistry())
        buffer = BufferAccount(10**9, 10**12, 0.5)
        settlement = self._settlement(metrics, buffer)
        dispatcher: Dispatcher[SourceRecord] = Dispatcher(
            _NoSender(),
            settlement,
            Backoff(1.0, 1.0),
            metrics,
            initial_concurrency=1,
            max_concurrency=1,
            setup_error_probe_s=60.0,
        )
        sealed = []
        for records, events, answer in zip(
            self._records(), self.batches, self.answers, strict=True
        ):
            epochs = settlement.track(records)
            for record, epoch in zip(records, epochs, strict=True):
                record.epoch, record.size = epoch or 0, 100
            tokens = tuple((record,) for record in records)
            batch = Batch(self.key, tuple(events), tokens)
            sealed.append((batch, classify(answer, len(events), self.now)))
        buffer.add(100 * len(self.events), len(self.events))
        started = time.process_time()
        for batch, classification in sealed:
            # The dispatcher's own step once an answer is classified (no request is involved).
            dispatcher._settle(batch, classification, "invalid_event", 1)
        return time.process_time() - started, len(self.events)

    def delivery_metrics(self) -> tuple[float, int]:
        delivered = Metrics(CollectorRegistry()).events_delivered
        now = self.now
        timestamps = [self.now_ms] * POLL
        started = time.process_time()
        for events in self.batches:
            delivered(ACCOUNT, events, timestamps[: len(events)], now)
        return time.process_time() - started, len(self.events)

    def settle_offsets(self) -> tuple[float, int]:
        tracker = OffsetTracker()
        tracker.assign([(TOPIC, p) for p in range(PARTITIONS)])
        polls = list(self._records())
        for records in polls:
            for record, epoch in zip(records, tracker.track_all(records), strict=True):
                record.epoch = epoch or 0
        settle_all = tracker.settle_all
        started = time.process_time()
        for records in polls:
            settle_all(records)
        return time.process_time() - started, sum(map(len, polls))


def _nothing() -> None:
    pass


def _best(rounds: int, run: Callable[[], tuple[float, int]]) -> float:
    """µs per event: the fastest of `rounds` runs."""
    best = float("inf")
    for _ in range(rounds):
        seconds, events = run()
        best = min(best, seconds / events)
    return best * 1e6


def measure(mix: Mix, events: int, rounds: int) -> dict[str, float]:
    """µs per event of each stage (see the module docstring) for `events` messages of `mix`."""
    stages = _Stages(mix, events)
    runs: dict[str, Callable[[], tuple[float, int]]] = {
        name: getattr(stages, name) for name, _ in STAGES
    }
    for run in runs.values():  # warm-up: caches, metric children, code paths
        run()
    with forwarder_gc():
        figures = {name: _best(rounds, run) for name, run in runs.items()}
    figures["event_loop_total"] = sum(figures[name] for name in LOOP_STAGES)
    return figures


def table(figures: dict[str, dict[str, float]]) -> list[str]:
    """The per-event budget as Markdown rows, one column per mix."""
    mixes = list(figures)
    lines = [
        "| stage | " + " | ".join(f"{mix} µs/event" for mix in mixes) + " |",
        "|---|" + "---:|" * len(mixes),
    ]
    for name, what in (*STAGES, ("event_loop_total", "event loop bookkeeping, total")):
        cells = " | ".join(f"{figures[mix][name]:.2f}" for mix in mixes)
        lines.append(f"| {name} ({what.strip()}) | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", action="append", choices=get_args(Mix))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    mixes = args.mix or ["realistic"]
    figures = {mix: measure(mix, args.events, args.rounds) for mix in mixes}
    print("\n".join(table(figures)))


if __name__ == "__main__":
    main()
