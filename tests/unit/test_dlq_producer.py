"""The headers the dead-letter producer attaches."""

from __future__ import annotations

from datetime import UTC, datetime

from stream.dlq.producer import dead_letter_headers
from stream.models import SourceRecord

FAILED_AT = datetime(2025, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
RECORD = SourceRecord("clicks", 2, 41, b"k", b"v", None, [("trace", b"t-1")])


def test_headers_follow_the_original_ones_in_contract_order() -> None:
    headers = dead_letter_headers(RECORD, "rejected_by_pinterest", "Invalid id.", 422, 3, FAILED_AT)
    assert headers == [
        ("trace", b"t-1"),
        ("capi.error.reason", b"rejected_by_pinterest"),
        ("capi.error.message", b"Invalid id."),
        ("capi.source.topic", b"clicks"),
        ("capi.source.partition", b"2"),
        ("capi.source.offset", b"41"),
        ("capi.http.status", b"422"),
        ("capi.attempts", b"3"),
        ("capi.failed_at", b"2025-01-02T03:04:05.678+00:00"),
    ]


def test_headers_omit_the_http_status_when_no_answer_caused_it() -> None:
    record = SourceRecord("clicks", 0, 7, None, b"{", None)
    headers = dead_letter_headers(record, "decode_error", "not JSON", None, 0, FAILED_AT)
    assert [name for name, _ in headers] == [
        "capi.error.reason",
        "capi.error.message",
        "capi.source.topic",
        "capi.source.partition",
        "capi.source.offset",
        "capi.attempts",
        "capi.failed_at",
    ]


def test_dead_letters_keep_the_original_headers_but_replace_old_error_headers() -> None:
    record = SourceRecord(
        "clicks",
        2,
        41,
        b"k",
        b"v",
        None,
        [("trace", b"t-1"), ("capi.replayed", b"1"), ("capi.error.reason", b"too_old")],
    )
    headers = dead_letter_headers(
        record, "decode_error", "not JSON", None, 0, datetime(2025, 1, 2, tzinfo=UTC)
    )
    assert headers[:2] == [("trace", b"t-1"), ("capi.replayed", b"1")]
    names = [name for name, _ in headers]
    assert names.count("capi.error.reason") == 1
    assert dict(headers)["capi.error.reason"] == b"decode_error"
    assert dict(headers)["capi.source.offset"] == b"41"
