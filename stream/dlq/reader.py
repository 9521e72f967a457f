"""Reads the dead-letter topic up to its end at start; selects records by reason, topic, time."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream.dlq.contract import (
    FAILED_AT,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    TRUNCATED,
    VALUE_TRUNCATED,
)
from stream.errors import CapiStreamError, ConfigurationError
from stream.settings import KafkaSettings
from stream.watermarks import watermarks

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
    def source(self) -> str:
        """topic/partition/offset of the message that failed, as the headers give them."""
        parts = (self.header(name) for name in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET))
        return "/".join(part or "?" for part in parts)

    @property
    def truncated(self) -> bool:
        """The value was cut to fit the dead-letter topic; only the source holds all of it."""
        return self.header(VALUE_TRUNCATED) == TRUNCATED.decode()

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


def select(
    reasons: list[str] | None,
    source_topics: list[str] | None,
    since: str | None,
    until: str | None,
    now: datetime | None = None,
) -> Selection:
    """The selection the `--reason`, `--source-topic`, `--since` and `--until` options ask for."""
    start = parse_cli_time(since, "--since", now) if since else None
    end = parse_cli_time(until, "--until", now) if until else None
    if start is not None and end is not None and end < start:
        raise ConfigurationError("--until", "is before --since")
    return Selection(
        reasons=frozenset(reasons) if reasons else None,
        source_topics=frozenset(source_topics) if source_topics else None,
        since=start,
        until=end,
    )


def as_utc(moment: datetime) -> datetime:
    # A time without a zone is read as UTC: failed_at headers and Kafka timestamps are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_cli_time(text: str, option: str, now: datetime | None = None) -> datetime:
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


def topic_watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets of every partition of `topic`; raises if the topic does not exist."""
    metadata = consumer.list_topics(topic, timeout=15).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise CapiStreamError(f"topic {topic!r} does not exist (kafka.dead_letter_topic?)")
    return {
        partition: watermarks(consumer, TopicPartition(topic, partition))
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
    marks = topic_watermarks(consumer, topic)
    starts = {p: low for p, (low, _high) in marks.items()}
    if since is not None:
        starts = offsets_at(consumer, topic, marks, since)
    if after_commits:
        done = committed(consumer, topic, list(marks))
        starts = {p: max(start, done.get(p, start)) for p, start in starts.items()}
    return DeadLetterReader(consumer, topic, starts, {p: high for p, (_l, high) in marks.items()})
