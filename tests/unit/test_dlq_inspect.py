"""`dlq inspect` counting and rendering, over records built in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from stream.dlq.inspect import Summary, inspect, render_record, render_summary
from stream.dlq.reader import DeadLetterRecord, Selection

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def letter(
    offset: int, reason: str, message: str, topic: str | None, failed_at: datetime
) -> DeadLetterRecord:
    headers = [
        ("capi.error.reason", reason.encode()),
        ("capi.error.message", message.encode()),
        ("capi.failed_at", failed_at.isoformat(timespec="milliseconds").encode()),
    ]
    if topic is not None:
        headers.insert(2, ("capi.source.topic", topic.encode()))
    return DeadLetterRecord("dlq", 0, offset, None, b"user-1", b'{"email":"x"}', tuple(headers))


LETTERS = [
    letter(0, "rejected_by_pinterest", "Invalid id.", "clicks", NOW - timedelta(days=2)),
    letter(1, "rejected_by_pinterest", "Invalid id.", "clicks", NOW - timedelta(hours=3)),
    letter(2, "too_old", "", None, NOW - timedelta(hours=2)),
    letter(3, "decode_error", "not JSON", "crm", NOW - timedelta(hours=1)),
]


class ListReader:
    """Plays a DeadLetterReader over a list; records where `stop` was called."""

    def __init__(self, records: list[DeadLetterRecord]) -> None:
        self.records = records
        self.stopped: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[DeadLetterRecord]:
        yield from self.records

    def stop(self, partition: int, offset: int) -> None:
        self.stopped.append((partition, offset))


def reader(records: list[DeadLetterRecord]) -> Any:
    return ListReader(records)


def test_summary_counts_reasons_sources_messages_and_the_time_span() -> None:
    summary = Summary()
    for record in LETTERS:
        summary.add(record)
    assert summary.total == 4
    assert summary.by_reason == {"rejected_by_pinterest": 2, "too_old": 1, "decode_error": 1}
    assert summary.by_source == {"clicks": 2, "(unknown)": 1, "crm": 1}
    assert summary.messages[("rejected_by_pinterest", "Invalid id.")] == 2
    assert summary.first_failed == NOW - timedelta(days=2)
    assert summary.last_failed == NOW - timedelta(hours=1)


def test_inspect_selects_shows_the_first_records_and_stops_past_until() -> None:
    records = reader(LETTERS)
    shown: list[int] = []
    selection = Selection(
        reasons=frozenset({"rejected_by_pinterest", "decode_error"}),
        until=NOW - timedelta(minutes=90),
    )
    summary = inspect(records, selection, 1, lambda record: shown.append(record.offset))
    assert summary.total == 2
    assert shown == [0]
    assert records.stopped == [(0, 3)]


def test_render_summary() -> None:
    summary = Summary()
    for record in LETTERS:
        summary.add(record)
    assert render_summary(summary, "capi-stream-dlq", 2) == (
        "dead-letter topic capi-stream-dlq: 4 records\n"
        "first failed_at  2025-02-27T12:00:00.000+00:00\n"
        "last failed_at   2025-03-01T11:00:00.000+00:00\n"
        "\n"
        "  reason                     count  share\n"
        "  rejected_by_pinterest          2   50.0%\n"
        "  too_old                        1   25.0%\n"
        "  decode_error                   1   25.0%\n"
        "\n"
        "  source topic      count  share\n"
        "  clicks                2   50.0%\n"
        "  (unknown)             1   25.0%\n"
        "  crm                   1   25.0%\n"
        "\n"
        "top error messages (2 of 3 distinct)\n"
        "  2  rejected_by_pinterest: Invalid id.\n"
        "  1  too_old: (empty)\n"
    )
    assert render_summary(Summary(), "capi-stream-dlq", 10) == (
        "dead-letter topic capi-stream-dlq: 0 records\n"
    )


def test_render_record_hides_key_and_value_unless_asked() -> None:
    record = LETTERS[3]
    hidden = render_record(record, show_values=False)
    assert hidden == (
        "--- dlq/0/3  failed_at 2025-03-01T11:00:00.000+00:00\n"
        "  capi.error.reason: decode_error\n"
        "  capi.error.message: not JSON\n"
        "  capi.source.topic: crm\n"
        "  capi.failed_at: 2025-03-01T11:00:00.000+00:00\n"
        "  key: (6 bytes hidden; --show-values prints it)\n"
        "  value: (13 bytes hidden; --show-values prints it)\n"
    )
    shown = render_record(record, show_values=True)
    assert shown.endswith('  key: user-1\n  value: {"email":"x"}\n')
    bare = DeadLetterRecord("dlq", 0, 5, None, None, None, ())
    assert render_record(bare, show_values=False) == (
        "--- dlq/0/5  failed_at -\n  key: (none)\n  value: (none)\n"
    )


def test_summary_counts_truncated_dead_letters_and_says_where_the_full_ones_are() -> None:
    summary = Summary()
    cut = letter(4, "decode_error", "not JSON", "clicks", NOW)
    summary.add(replace(cut, headers=(*cut.headers, ("capi.value.truncated", b"true"))))
    for record in LETTERS:
        summary.add(record)
    assert summary.truncated == 1
    assert (
        "truncated        1 (values cut to fit the topic; replay refuses them, their source "
        "offsets hold the full messages)\n" in render_summary(summary, "dlq", 2)
    )
