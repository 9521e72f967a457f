"""Reads the dead-letter topic up to its end at start, summarises it, re-publishes selections."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.errors import CapiStreamError, ConfigurationError
from stream.settings import KafkaSettings

REASON: Final = "capi.error.reason"
MESSAGE: Final = "capi.error.message"
SOURCE_TOPIC: Final = "capi.source.topic"
SOURCE_PARTITION: Final = "capi.source.partition"
SOURCE_OFFSET: Final = "capi.source.offset"
HTTP_STATUS: Final = "capi.http.status"
ATTEMPTS: Final = "capi.attempts"
FAILED_AT: Final = "capi.failed_at"
REPLAYED: Final = "capi.replayed"
REPLAYED_FROM: Final = "capi.replayed_from"
ERROR_HEADERS: Final = frozenset(
    {
        REASON,
        MESSAGE,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        HTTP_STATUS,
        ATTEMPTS,
        FAILED_AT,
    }
)
# Undecodable bytes replayed to the source only come back as the same dead letter.
REFUSED_WITHOUT_FORCE: Final = frozenset({"decode_error"})

# librdkafka stamps CreateTime when `produce` is called, after `capi.failed_at` was taken, so a
# record failed at T has a timestamp >= T. The margin absorbs brokers that use LogAppendTime with a
# skewed clock; records inside it are still filtered by `capi.failed_at`.
SEEK_MARGIN: Final = timedelta(minutes=5)
IDLE_TIMEOUT_S: Final = 60.0
FETCH_BATCH: Final = 1000
RELATIVE_TIME = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of the dead-letter topic with its coordinates there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_message(cls, message: Any) -> DeadLetterRecord:
        kind, stamp = message.timestamp()
        raw_headers = message.headers() or []
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_ms=stamp if kind != 0 and stamp >= 0 else None,
            key=message.key(),
            value=message.value(),
            headers=tuple((name, value or b"") for name, value in raw_headers),
        )

    def header(self, name: str) -> str | None:
        """The last value of a header, decoded; None when absent."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def reason(self) -> str:
        return self.header(REASON) or "(no reason header)"

    @property
    def source_topic(self) -> str | None:
        return self.header(SOURCE_TOPIC)

    @property
    def failed_at(self) -> datetime | None:
        """`capi.failed_at`, else the record's Kafka timestamp."""
        text = self.header(FAILED_AT)
        if text:
            try:
                return as_utc(datetime.fromisoformat(text))
            except ValueError:
                pass
        if self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on; None means no restriction."""

    reasons: frozenset[str] | None = None
    source_topics: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.reasons is not None and record.reason not in self.reasons:
            return False
        if self.source_topics is not None and record.source_topic not in self.source_topics:
            return False
        when = record.failed_at
        return not (self.since is not None and (when is None or when < self.since))

    def past_until(self, record: DeadLetterRecord) -> bool:
        when = record.failed_at
        return self.until is not None and when is not None and when > self.until


def as_utc(moment: datetime) -> datetime:
    # A time without a zone is read as UTC: failed_at headers and Kafka timestamps are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """ISO-8601 (`2025-03-01`, `2025-03-01T10:00:00+01:00`) or relative (`90m`, `2h`, `7d`)."""
    relative = RELATIVE_TIME.match(text.strip())
    if relative:
        amount = timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))})
        return (now or datetime.now(UTC)) - amount
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ConfigurationError(
            option, f"{text!r} is neither an ISO-8601 time nor a duration like 30m, 2h, 7d"
        ) from None


def open_consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    """An assign-only consumer: it never joins the group, and commits only when told to."""
    return Consumer(
        {
            **kafka.client_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )


def open_producer(kafka: KafkaSettings) -> Producer:
    return Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            # A missing or unwritable target fails the run in minutes, not librdkafka's 5.
            "message.timeout.ms": 120_000,
        }
    )


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of every partition of `topic`; raises if the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=15).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise CapiStreamError(f"topic {topic!r} does not exist (kafka.dead_letter_topic?)")
    return {
        partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
        for partition in sorted(metadata.partitions)
    }


def offsets_at(
    consumer: Consumer, topic: str, marks: dict[int, tuple[int, int]], moment: datetime
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after `moment` (minus a margin)."""
    stamp = int((moment - SEEK_MARGIN).timestamp() * 1000)
    found = consumer.offsets_for_times(
        [TopicPartition(topic, partition, stamp) for partition in marks], timeout=15
    )
    # -1: no record that late, so the partition has nothing to read.
    return {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][1] for tp in found}


def committed(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The group's committed offsets; partitions it never committed are absent."""
    answer = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=15)
    return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}


class DeadLetterReader:
    """Reads assigned partitions from given offsets up to end offsets fixed when it was made.

    `stop(partition, offset)` ends a partition early (used for `--until`); `positions` is where
    each partition stopped, i.e. what to commit once everything before it is handled.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        starts: dict[int, int],
        ends: dict[int, int],
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._ends = dict(ends)
        self.positions = {p: min(starts[p], ends[p]) for p in ends}
        self.total = sum(self._ends[p] - self.positions[p] for p in ends)
        self.scanned = 0
        self._idle_timeout_s = idle_timeout_s
        consumer.assign(
            [TopicPartition(topic, p, self.positions[p]) for p in ends if self._pending(p)]
        )

    def _pending(self, partition: int) -> bool:
        return self.positions[partition] < self._ends[partition]

    def stop(self, partition: int, offset: int) -> None:
        self._ends[partition] = min(self._ends[partition], offset)
        self.positions[partition] = min(self.positions[partition], offset)

    def __iter__(self) -> Iterator[DeadLetterRecord]:
        progress_at = time.monotonic()
        while any(self._pending(p) for p in self._ends):
            messages = self._consumer.consume(FETCH_BATCH, 0.5)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal() or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                        raise CapiStreamError(f"reading {self._topic}: {error.str()}")
                    continue
                partition, offset = message.partition(), message.offset()
                if partition is None or offset is None:
                    continue
                if offset < self.positions[partition] or offset >= self._ends[partition]:
                    continue
                self.positions[partition] = offset + 1
                self.scanned += 1
                progress_at = time.monotonic()
                yield DeadLetterRecord.from_message(message)
            if not messages and self._skip_gaps():
                progress_at = time.monotonic()
            if time.monotonic() - progress_at > self._idle_timeout_s:
                left = {
                    p: (self.positions[p], self._ends[p]) for p in self._ends if self._pending(p)
                }
                raise CapiStreamError(
                    f"reading {self._topic} stalled for {self._idle_timeout_s:.0f}s "
                    f"at (partition: (position, end)) {left}"
                )

    def _skip_gaps(self) -> bool:
        # Compaction, transaction markers and retention leave offsets no message carries; the
        # consumer's position moves past them even though nothing is returned.
        moved = False
        pending = [TopicPartition(self._topic, p) for p in self._ends if self._pending(p)]
        for tp in self._consumer.position(pending):
            if tp.offset > self.positions[tp.partition]:
                self.positions[tp.partition] = min(tp.offset, self._ends[tp.partition])
                moved = True
        return moved


def read_range(
    consumer: Consumer, topic: str, since: datetime | None, after_commits: bool
) -> DeadLetterReader:
    """A reader over the topic as it is now: from the beginning, `since`, or the group's commits."""
    marks = watermarks(consumer, topic)
    starts = {p: low for p, (low, _high) in marks.items()}
    if since is not None:
        starts = offsets_at(consumer, topic, marks, since)
    if after_commits:
        done = committed(consumer, topic, list(marks))
        starts = {p: max(start, done.get(p, start)) for p, start in starts.items()}
    return DeadLetterReader(consumer, topic, starts, {p: high for p, (_l, high) in marks.items()})


@dataclass(slots=True)
class Summary:
    """Counts over the dead letters read by `inspect`."""

    total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_failed: datetime | None = None
    last_failed: datetime | None = None

    def add(self, record: DeadLetterRecord) -> None:
        self.total += 1
        self.by_reason[record.reason] += 1
        self.by_source[record.source_topic or "(unknown)"] += 1
        self.messages[(record.reason, record.header(MESSAGE) or "")] += 1
        when = record.failed_at
        if when is not None:
            if self.first_failed is None or when < self.first_failed:
                self.first_failed = when
            if self.last_failed is None or when > self.last_failed:
                self.last_failed = when


def inspect(
    reader: DeadLetterReader,
    selection: Selection,
    show: int,
    on_record: Callable[[DeadLetterRecord], None],
) -> Summary:
    """Summarises the selected records; hands the first `show` of them to `on_record`."""
    summary = Summary()
    for record in reader:
        if selection.past_until(record):
            reader.stop(record.partition, record.offset)
            continue
        if not selection.matches(record):
            continue
        summary.add(record)
        if summary.total <= show:
            on_record(record)
    return summary


def format_time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds") if moment is not None else "-"


def render_summary(summary: Summary, topic: str, top: int) -> str:
    lines = [
        f"dead-letter topic {topic}: {summary.total:,} record{'s' if summary.total != 1 else ''}",
    ]
    if not summary.total:
        return "\n".join(lines) + "\n"
    lines.append(f"first failed_at  {format_time(summary.first_failed)}")
    lines.append(f"last failed_at   {format_time(summary.last_failed)}")
    lines.extend(_table("reason", summary.by_reason.most_common()))
    lines.extend(_table("source topic", summary.by_source.most_common()))
    common = summary.messages.most_common(top)
    lines.append("")
    lines.append(f"top error messages ({len(common)} of {len(summary.messages)} distinct)")
    width = max(len(f"{count:,}") for _key, count in common)
    for (reason, message), count in common:
        lines.append(f"  {count:>{width},}  {reason}: {message or '(empty)'}")
    return "\n".join(lines) + "\n"


def _table(title: str, rows: list[tuple[str, int]]) -> list[str]:
    width = max(len(title), *(len(name) for name, _count in rows))
    lines = ["", f"  {title:<{width}}  {'count':>9}  share"]
    total = sum(count for _name, count in rows)
    for name, count in rows:
        lines.append(f"  {name:<{width}}  {count:>9,}  {100 * count / total:5.1f}%")
    return lines


def render_record(record: DeadLetterRecord, show_values: bool) -> str:
    """One record with its headers; key and value (they may hold raw PII) only when asked."""
    lines = [f"--- {record.coordinates}  failed_at {format_time(record.failed_at)}"]
    lines.extend(
        f"  {name}: {value.decode('utf-8', errors='replace')}" for name, value in record.headers
    )
    for label, data in (("key", record.key), ("value", record.value)):
        if data is None:
            lines.append(f"  {label}: (none)")
        elif show_values:
            lines.append(f"  {label}: {data.decode('utf-8', errors='replace')}")
        else:
            lines.append(f"  {label}: ({len(data):,} bytes hidden; --show-values prints it)")
    return "\n".join(lines) + "\n"


def replay_headers(record: DeadLetterRecord) -> list[tuple[str, str | bytes | None]]:
    """The record's headers without the error headers, plus the replay count and origin."""
    previous = record.header(REPLAYED)
    count = int(previous) + 1 if previous and previous.isdigit() else 1
    kept = [(k, v) for k, v in record.headers if k not in ERROR_HEADERS | {REPLAYED, REPLAYED_FROM}]
    return [*kept, (REPLAYED, str(count).encode()), (REPLAYED_FROM, record.coordinates.encode())]


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    selection: Selection
    to_topic: str | None = None
    force: bool = False
    dry_run: bool = False
    # Records produced between commits; a failure re-drives at most this many on the next run.
    chunk: int = 5000


@dataclass(slots=True)
class ReplayReport:
    """What `replay` did (or, in a dry run, would do)."""

    scanned: int = 0
    replayed: int = 0
    by_target: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    passed_over: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)


class Replayer:
    """Re-publishes selected dead letters and commits its group's offsets after broker acks."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer | None,
        options: ReplayOptions,
        progress: Callable[[ReplayReport, DeadLetterReader], None] = lambda _r, _d: None,
        samples: int = 20,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._options = options
        self._progress = progress
        self._samples = samples
        self._failures: list[str] = []
        self._checked_topics: set[str] = set()

    def run(self, reader: DeadLetterReader, topic: str) -> ReplayReport:
        report = ReplayReport()
        options = self._options
        since_commit = 0
        for record in reader:
            if options.selection.past_until(record):
                reader.stop(record.partition, record.offset)
                continue
            report.scanned += 1
            target = options.to_topic or record.source_topic
            skip = self._skip_reason(record, target)
            if skip is not None:
                report.passed_over[skip] += 1
            elif target is not None:
                if not options.dry_run:
                    self._produce(record, target)
                    since_commit += 1
                report.replayed += 1
                report.by_target[target] += 1
                report.by_reason[record.reason] += 1
                if len(report.samples) < self._samples:
                    report.samples.append(f"{record.coordinates} ({record.reason}) → {target}")
            if since_commit >= options.chunk:
                self._settle(reader, topic, report)
                since_commit = 0
            self._progress(report, reader)
        if not options.dry_run:
            self._settle(reader, topic, report)
        return report

    def _skip_reason(self, record: DeadLetterRecord, target: str | None) -> str | None:
        selection = self._options.selection
        if not selection.matches(record):
            return f"not selected ({record.reason})"
        if record.reason in REFUSED_WITHOUT_FORCE and not self._options.force:
            return f"{record.reason}: refused without --force"
        if target is None:
            return f"no {SOURCE_TOPIC} header"
        return None

    def _produce(self, record: DeadLetterRecord, target: str) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("a replay that is not a dry run needs a producer")
        if target not in self._checked_topics:
            metadata = self._consumer.list_topics(target, timeout=15).topics.get(target)
            if metadata is None or metadata.error is not None:
                raise CapiStreamError(f"replay target topic {target!r} does not exist")
            self._checked_topics.add(target)

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                self._failures.append(f"{target}: {error.str()}")

        while True:
            try:
                producer.produce(
                    target,
                    value=record.value,
                    key=record.key,
                    headers=replay_headers(record),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    def _settle(self, reader: DeadLetterReader, topic: str, report: ReplayReport) -> None:
        """Waits for every ack, then commits where the reader is; nothing past an unacked record."""
        producer = self._producer
        if producer is not None:
            remaining = producer.flush(180)
            if remaining or self._failures:
                raise CapiStreamError(
                    f"replay stopped: {remaining + len(self._failures)} record(s) not acknowledged "
                    f"({'; '.join(self._failures[:3]) or 'flush timed out'}); offsets committed "
                    f"up to the previous chunk: {report.committed or 'none'}"
                )
        offsets = [TopicPartition(topic, p, o) for p, o in sorted(reader.positions.items())]
        self._consumer.commit(offsets=offsets, asynchronous=False)
        report.committed = dict(reader.positions)


class Progress:
    """A progress line on stderr for long runs: redrawn in place on a terminal, else periodic."""

    def __init__(
        self,
        label: str,
        stream: TextIO = sys.stderr,
        delay_s: float = 1.0,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._stream = stream
        self._tty = stream.isatty()
        self._interval_s = interval_s if interval_s is not None else (0.2 if self._tty else 10.0)
        self._clock = clock
        self._next = clock() + delay_s
        self._drawn = False

    def __call__(self, report: ReplayReport, reader: DeadLetterReader) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval_s
        share = 100 * reader.scanned / reader.total if reader.total else 100.0
        line = (
            f"{self._label}: {reader.scanned:,}/{reader.total:,} scanned ({share:.0f}%), "
            f"{report.replayed:,} replayed"
        )
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def render_replay(report: ReplayReport, topic: str, group: str, dry_run: bool) -> str:
    verb = "would replay" if dry_run else "replayed"
    lines = [f"{verb} {report.replayed:,} of {report.scanned:,} dead letters read from {topic}"]
    for target, count in report.by_target.most_common():
        lines.append(f"  to {target}: {count:,}")
    for reason, count in report.by_reason.most_common():
        lines.append(f"  reason {reason}: {count:,}")
    if report.passed_over:
        lines.append(f"passed over {sum(report.passed_over.values()):,}:")
        lines.extend(f"  {why}: {count:,}" for why, count in report.passed_over.most_common())
    if dry_run:
        if report.samples:
            lines.append(f"first {len(report.samples)}:")
            lines.extend(f"  {sample}" for sample in report.samples)
        lines.append(f"dry run: nothing produced, no offsets committed for group {group}")
    else:
        positions = ", ".join(f"{p}:{o}" for p, o in sorted(report.committed.items()))
        lines.append(f"group {group} committed (partition:offset) {positions or '-'}")
    return "\n".join(lines) + "\n"
