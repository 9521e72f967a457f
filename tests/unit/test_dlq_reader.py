"""Dead-letter records, selections and the command-line time forms, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stream.dlq.reader import DeadLetterRecord, Selection, parse_cli_time, select
from stream.errors import ConfigurationError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def record(*headers: tuple[str, bytes], timestamp_ms: int | None = None) -> DeadLetterRecord:
    return DeadLetterRecord("dlq", 1, 9, timestamp_ms, b"k", b"v", tuple(headers))


def test_parse_cli_time_forms() -> None:
    assert parse_cli_time("90m", "--since", NOW) == NOW - timedelta(minutes=90)
    assert parse_cli_time("7d", "--since", NOW) == NOW - timedelta(days=7)
    assert parse_cli_time("2025-02-01", "--since") == datetime(2025, 2, 1, tzinfo=UTC)
    assert parse_cli_time("2025-02-01T10:00:00+01:00", "--since") == datetime(
        2025, 2, 1, 9, tzinfo=UTC
    )
    with pytest.raises(ConfigurationError, match="--until"):
        parse_cli_time("2 hours", "--until")


def test_select_reads_the_options_and_refuses_until_before_since() -> None:
    selection = select(["too_old"], None, "2d", "1d", NOW)
    assert selection == Selection(
        reasons=frozenset({"too_old"}),
        source_topics=None,
        since=NOW - timedelta(days=2),
        until=NOW - timedelta(days=1),
    )
    assert select(None, None, None, None) == Selection()
    with pytest.raises(ConfigurationError, match="--until: is before --since"):
        select(None, None, "1d", "2d", NOW)


def test_record_reads_the_last_header_and_falls_back_to_the_kafka_timestamp() -> None:
    letter = record(
        ("capi.error.reason", b"too_old"),
        ("capi.error.reason", b"decode_error"),
        ("capi.source.topic", b"clicks"),
        ("capi.failed_at", b"2025-03-01T11:00:00.000"),
    )
    assert letter.reason == "decode_error"
    assert letter.source_topic == "clicks"
    assert letter.failed_at == NOW - timedelta(hours=1)
    assert letter.coordinates == "dlq/1/9"

    bare = record(("capi.failed_at", b"yesterday"), timestamp_ms=int(NOW.timestamp() * 1000))
    assert bare.reason == "(no reason header)"
    assert bare.source_topic is None
    assert bare.failed_at == NOW
    assert record().failed_at is None


def test_selection_matches_reason_topic_and_since_and_stops_past_until() -> None:
    letter = record(
        ("capi.error.reason", b"too_old"),
        ("capi.source.topic", b"clicks"),
        ("capi.failed_at", NOW.isoformat().encode()),
    )
    assert Selection().matches(letter)
    assert Selection(reasons=frozenset({"too_old"}), source_topics=frozenset({"clicks"})).matches(
        letter
    )
    assert not Selection(reasons=frozenset({"decode_error"})).matches(letter)
    assert not Selection(source_topics=frozenset({"crm"})).matches(letter)
    assert Selection(since=NOW).matches(letter)
    assert not Selection(since=NOW + timedelta(seconds=1)).matches(letter)
    assert not Selection(since=NOW).matches(record())
    assert not Selection(until=NOW).past_until(letter)
    assert Selection(until=NOW - timedelta(seconds=1)).past_until(letter)
    assert not Selection(until=NOW).past_until(record())
