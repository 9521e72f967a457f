"""Re-publishes selected dead letters to their source topic and commits progress after acks."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.dlq.contract import (
    ERROR_HEADERS,
    REPLAYED,
    REPLAYED_FROM,
    SOURCE_TOPIC,
    TRUNCATION_HEADERS,
)
from stream.dlq.reader import DeadLetterReader, DeadLetterRecord, Selection
from stream.errors import CapiStreamError
from stream.settings import KafkaSettings

# Undecodable bytes replayed to the source only come back as the same dead letter.
REFUSED_WITHOUT_FORCE: Final = frozenset({"decode_error"})
# A cut value replayed would be delivered or dead-lettered as if it were the message; never.
REFUSED_TRUNCATED: Final = "truncated: value cut to fit the dead-letter topic, never replayed"
# A replay drops the failure's headers and rewrites its own count and origin.
DROPPED_ON_REPLAY: Final = ERROR_HEADERS | TRUNCATION_HEADERS | {REPLAYED, REPLAYED_FROM}


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


def replay_headers(record: DeadLetterRecord) -> list[tuple[str, str | bytes | None]]:
    """The record's headers without the error headers, plus the replay count and origin."""
    previous = record.header(REPLAYED)
    count = int(previous) + 1 if previous and previous.isascii() and previous.isdigit() else 1
    kept = [(k, v) for k, v in record.headers if k not in DROPPED_ON_REPLAY]
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
    # Where the full messages of the first refused truncated dead letters are.
    truncated: list[str] = field(default_factory=list)
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
                if skip == REFUSED_TRUNCATED and len(report.truncated) < self._samples:
                    report.truncated.append(f"{record.source} (dead letter {record.coordinates})")
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
        if record.truncated:
            return REFUSED_TRUNCATED
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
    refused = report.passed_over[REFUSED_TRUNCATED]
    if refused:
        lines.append(
            f"{refused:,} truncated dead letter(s) refused; each full message is at its source "
            "topic/partition/offset while that topic retains it (replay it from there):"
        )
        lines.extend(f"  {pointer}" for pointer in report.truncated)
        if refused > len(report.truncated):
            lines.append(f"  and {refused - len(report.truncated):,} more")
    if dry_run:
        if report.samples:
            lines.append(f"first {len(report.samples)}:")
            lines.extend(f"  {sample}" for sample in report.samples)
        lines.append(f"dry run: nothing produced, no offsets committed for group {group}")
    else:
        positions = ", ".join(f"{p}:{o}" for p, o in sorted(report.committed.items()))
        lines.append(f"group {group} committed (partition:offset) {positions or '-'}")
    return "\n".join(lines) + "\n"
