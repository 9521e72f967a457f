"""`dlq replay` headers, selection, report and progress line, without a broker (dry runs)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from stream.dlq.reader import DeadLetterRecord, Selection
from stream.dlq.replay import (
    Progress,
    Replayer,
    ReplayOptions,
    ReplayReport,
    render_replay,
    replay_headers,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def letter(
    offset: int, reason: str, topic: str | None, *extra: tuple[str, bytes]
) -> DeadLetterRecord:
    headers = [("capi.error.reason", reason.encode())]
    if topic is not None:
        headers.append(("capi.source.topic", topic.encode()))
    headers.append(("capi.failed_at", (NOW - timedelta(hours=10 - offset)).isoformat().encode()))
    return DeadLetterRecord("dlq", 0, offset, None, b"k", b"v", (*extra, *headers))


class ListReader:
    """Plays a DeadLetterReader over a list (scanned/total as the progress line reads them)."""

    def __init__(self, records: list[DeadLetterRecord]) -> None:
        self.records = records
        self.stopped: list[tuple[int, int]] = []
        self.scanned = 0
        self.total = len(records)

    def __iter__(self) -> Iterator[DeadLetterRecord]:
        for record in self.records:
            self.scanned += 1
            yield record

    def stop(self, partition: int, offset: int) -> None:
        self.stopped.append((partition, offset))


def test_replay_headers_drop_the_error_headers_and_count_replays() -> None:
    first = letter(4, "too_old", "clicks", ("trace", b"t-1"))
    assert replay_headers(first) == [
        ("trace", b"t-1"),
        ("capi.replayed", b"1"),
        ("capi.replayed_from", b"dlq/0/4"),
    ]
    again = letter(
        5, "too_old", "clicks", ("capi.replayed", b"2"), ("capi.replayed_from", b"x/0/1")
    )
    assert replay_headers(again) == [("capi.replayed", b"3"), ("capi.replayed_from", b"dlq/0/5")]


def test_a_dry_run_reports_what_it_would_replay_and_passes_over_the_rest() -> None:
    records: Any = ListReader(
        [
            letter(0, "rejected_by_pinterest", "clicks"),
            letter(1, "decode_error", "clicks"),
            letter(2, "retries_exhausted", None),
            letter(3, "too_old", "crm"),
            letter(4, "rejected_by_pinterest", "crm"),
            letter(5, "rejected_by_pinterest", "clicks"),
        ]
    )
    selection = Selection(
        reasons=frozenset({"rejected_by_pinterest", "decode_error", "retries_exhausted"}),
        until=NOW - timedelta(hours=5, minutes=30),
    )
    options = ReplayOptions(selection, dry_run=True)
    consumer: Any = None
    report = Replayer(consumer, None, options, samples=1).run(records, "dlq")
    assert records.stopped == [(0, 5)]
    assert report.scanned == 5
    assert report.replayed == 2
    assert report.by_target == {"clicks": 1, "crm": 1}
    assert report.passed_over == {
        "decode_error: refused without --force": 1,
        "no capi.source.topic header": 1,
        "not selected (too_old)": 1,
    }
    assert report.samples == ["dlq/0/0 (rejected_by_pinterest) → clicks"]
    assert report.committed == {}


def test_render_replay() -> None:
    report = ReplayReport(scanned=5, replayed=2, samples=["dlq/0/0 (too_old) → clicks"])
    report.by_target.update({"clicks": 2})
    report.by_reason.update({"too_old": 2})
    report.passed_over.update({"not selected (decode_error)": 3})
    assert render_replay(report, "dlq", "g", dry_run=True) == (
        "would replay 2 of 5 dead letters read from dlq\n"
        "  to clicks: 2\n"
        "  reason too_old: 2\n"
        "passed over 3:\n"
        "  not selected (decode_error): 3\n"
        "first 1:\n"
        "  dlq/0/0 (too_old) → clicks\n"
        "dry run: nothing produced, no offsets committed for group g\n"
    )
    report.committed = {1: 7, 0: 4}
    assert render_replay(report, "dlq", "g", dry_run=False).endswith(
        "  not selected (decode_error): 3\ngroup g committed (partition:offset) 0:4, 1:7\n"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_a_line_per_interval_when_not_a_terminal() -> None:
    stream = io.StringIO()
    clock = Clock()
    progress = Progress("replay", stream, delay_s=1.0, interval_s=10.0, clock=clock)
    records: Any = ListReader([letter(0, "too_old", "clicks")] * 4)
    records.scanned = 1
    report = ReplayReport(replayed=1)
    progress(report, records)
    assert stream.getvalue() == ""
    clock.now += 1.0
    progress(report, records)
    clock.now += 5.0
    progress(report, records)
    records.scanned, report.replayed = 4, 3
    clock.now += 5.0
    progress(report, records)
    progress.close()
    assert stream.getvalue() == (
        "replay: 1/4 scanned (25%), 1 replayed\nreplay: 4/4 scanned (100%), 3 replayed\n"
    )


def test_truncated_dead_letters_are_refused_even_with_force_and_point_at_their_source() -> None:
    cut = (
        ("capi.source.partition", b"3"),
        ("capi.source.offset", b"1234"),
        ("capi.value.truncated", b"true"),
        ("capi.value.bytes", b"1200000"),
    )
    records: Any = ListReader(
        [
            letter(0, "decode_error", "clicks", *cut),
            letter(1, "rejected_by_pinterest", "clicks"),
            letter(2, "rejected_by_pinterest", "clicks", *cut),
            letter(3, "too_old", "crm", *cut),
        ]
    )
    options = ReplayOptions(Selection(), force=True, dry_run=True)
    consumer: Any = None
    report = Replayer(consumer, None, options, samples=2).run(records, "dlq")
    assert report.replayed == 1
    assert report.passed_over == {
        "truncated: value cut to fit the dead-letter topic, never replayed": 3
    }
    assert report.truncated == [
        "clicks/3/1234 (dead letter dlq/0/0)",
        "clicks/3/1234 (dead letter dlq/0/2)",
    ]
    assert (
        "3 truncated dead letter(s) refused; each full message is at its source "
        "topic/partition/offset while that topic retains it (replay it from there):\n"
        "  clicks/3/1234 (dead letter dlq/0/0)\n"
        "  clicks/3/1234 (dead letter dlq/0/2)\n"
        "  and 1 more\n"
    ) in render_replay(report, "dlq", "g", dry_run=True)
