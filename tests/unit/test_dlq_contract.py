"""The dead-letter reasons and header names are exactly those of DESIGN §4."""

from __future__ import annotations

from typing import get_args

from stream.dlq import contract


def test_header_names_are_the_contract() -> None:
    assert (
        contract.REASON,
        contract.MESSAGE,
        contract.SOURCE_TOPIC,
        contract.SOURCE_PARTITION,
        contract.SOURCE_OFFSET,
        contract.HTTP_STATUS,
        contract.ATTEMPTS,
        contract.FAILED_AT,
        contract.REPLAYED,
        contract.REPLAYED_FROM,
    ) == (
        "capi.error.reason",
        "capi.error.message",
        "capi.source.topic",
        "capi.source.partition",
        "capi.source.offset",
        "capi.http.status",
        "capi.attempts",
        "capi.failed_at",
        "capi.replayed",
        "capi.replayed_from",
    )


def test_error_headers_are_the_failure_headers_and_not_the_replay_history() -> None:
    assert {
        "capi.error.reason",
        "capi.error.message",
        "capi.source.topic",
        "capi.source.partition",
        "capi.source.offset",
        "capi.http.status",
        "capi.attempts",
        "capi.failed_at",
    } == contract.ERROR_HEADERS


def test_reasons_tuple_lists_the_literal_in_order() -> None:
    assert get_args(contract.DeadLetterReason) == contract.DEAD_LETTER_REASONS
    assert contract.DEAD_LETTER_REASONS == (
        "decode_error",
        "invalid_event",
        "mapping_error",
        "too_old",
        "rejected_by_pinterest",
        "request_invalid",
        "retries_exhausted",
    )
