"""The classifier as a table: each Conversions API answer → its classification."""

from __future__ import annotations

import orjson
import pytest

from stream.pinterest.classify import (
    PROCESSED,
    WARNINGS,
    AnswerKind,
    ApiResponse,
    Classification,
    EventOutcome,
    classify,
    retry_after,
    warning_names,
)

NOW = 1_800_000_000.0
OK = EventOutcome(True)


def body(payload: object) -> bytes:
    return orjson.dumps(payload)


def events(*statuses: tuple[str, object]) -> dict[str, object]:
    return {
        "num_events_received": len(statuses),
        "num_events_processed": sum(1 for s, _ in statuses if s == "processed"),
        "events": [{"status": s, "error_message": m, "warning_message": ""} for s, m in statuses],
    }


TIMESTAMP_MESSAGE = "Invalid event_timestamp parameter. Given timestamp is in the past."

TABLE: list[tuple[str, ApiResponse, int, Classification]] = [
    (
        "200 all processed",
        ApiResponse(200, body(events(("processed", ""), ("processed", None)))),
        2,
        Classification(AnswerKind.EVENTS, 200, (OK, OK)),
    ),
    (
        "200 partial failure; empty, null and absent messages alike",
        ApiResponse(
            200,
            body(
                {
                    "num_events_received": 3,
                    "num_events_processed": 1,
                    "events": [
                        {"status": "failed", "error_message": "Invalid event_name: x."},
                        {"status": "processed"},
                        {"status": "failed", "error_message": None, "warning_message": None},
                    ],
                }
            ),
        ),
        3,
        Classification(
            AnswerKind.EVENTS,
            200,
            (EventOutcome(False, "Invalid event_name: x."), OK, EventOutcome(False, "failed")),
        ),
    ),
    (
        "422 all failed, per-event details",
        ApiResponse(
            422,
            body(
                {
                    "code": 953,
                    "message": "some or all data provided being invalid.",
                    "details": events(("failed", TIMESTAMP_MESSAGE)),
                }
            ),
        ),
        1,
        Classification(
            AnswerKind.EVENTS,
            422,
            (EventOutcome(False, TIMESTAMP_MESSAGE),),
            message="some or all data provided being invalid.",
        ),
    ),
    (
        "422 without details rejects every event with the message",
        ApiResponse(422, body({"code": 953, "message": "invalid"})),
        2,
        Classification(
            AnswerKind.EVENTS, 422, (EventOutcome(False, "invalid"),) * 2, message="invalid"
        ),
    ),
    (
        "200 with a count that does not match the request is retried",
        ApiResponse(200, body(events(("processed", "")))),
        2,
        Classification(AnswerKind.RETRY, 200, reason="bad_response", message="unreadable response"),
    ),
    (
        "200 that is not JSON is retried",
        ApiResponse(200, b"<html>"),
        1,
        Classification(AnswerKind.RETRY, 200, reason="bad_response", message="unreadable response"),
    ),
    (
        "400 is request invalid",
        ApiResponse(400, body({"code": 4196, "message": "The request was invalid."})),
        5,
        Classification(AnswerKind.REQUEST_INVALID, 400, message="The request was invalid."),
    ),
    (
        "413 is request invalid (bisect makes it smaller)",
        ApiResponse(413, b""),
        5,
        Classification(AnswerKind.REQUEST_INVALID, 413, message="HTTP 413"),
    ),
    (
        "401 is a setup error",
        ApiResponse(401, body({"code": 2, "message": "Authentication failed."})),
        1,
        Classification(AnswerKind.SETUP_ERROR, 401, message="Authentication failed."),
    ),
    (
        "403 is a setup error",
        ApiResponse(403, b""),
        1,
        Classification(AnswerKind.SETUP_ERROR, 403, message="HTTP 403"),
    ),
    (
        "404 is a setup error",
        ApiResponse(404, body({"code": 2, "message": "AdAccount not found."})),
        1,
        Classification(AnswerKind.SETUP_ERROR, 404, message="AdAccount not found."),
    ),
    (
        "429 honours Retry-After",
        ApiResponse(429, body({"code": 8, "message": "rate limit"}), {"Retry-After": "7"}),
        1,
        Classification(
            AnswerKind.RETRY, 429, reason="rate_limited", message="rate limit", retry_after=7.0
        ),
    ),
    (
        "429 falls back to x-ratelimit-reset",
        ApiResponse(429, b"", {"X-RateLimit-Reset": "12"}),
        1,
        Classification(AnswerKind.RETRY, 429, reason="rate_limited", retry_after=12.0),
    ),
    (
        "429 without hints",
        ApiResponse(429, b""),
        1,
        Classification(AnswerKind.RETRY, 429, reason="rate_limited"),
    ),
    (
        "503 ramped down is retried",
        ApiResponse(503, body({"code": 4197, "message": "ramped down"})),
        1,
        Classification(AnswerKind.RETRY, 503, reason="server_error", message="ramped down"),
    ),
    (
        "500 is retried",
        ApiResponse(500, b""),
        1,
        Classification(AnswerKind.RETRY, 500, reason="server_error"),
    ),
    (
        "408 is a timeout",
        ApiResponse(408, b""),
        1,
        Classification(AnswerKind.RETRY, 408, reason="timeout", message="HTTP 408"),
    ),
    (
        "timeout",
        ApiResponse(None, error="timeout"),
        1,
        Classification(AnswerKind.RETRY, None, reason="timeout", message="timeout"),
    ),
    (
        "connection error",
        ApiResponse(None, error="connection"),
        1,
        Classification(
            AnswerKind.RETRY, None, reason="connection_error", message="connection error"
        ),
    ),
]


@pytest.mark.parametrize(
    ("response", "sent", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_classification_table(response: ApiResponse, sent: int, expected: Classification) -> None:
    assert classify(response, sent, NOW) == expected


def test_an_exhausted_rate_window_is_reported_with_its_reset() -> None:
    response = ApiResponse(
        200,
        body(events(("processed", ""))),
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"},
    )
    assert classify(response, 1, NOW).exhausted_for == 20.0
    plenty = ApiResponse(200, response.body, {"X-RateLimit-Remaining": "4000"})
    assert classify(plenty, 1, NOW).exhausted_for is None


def test_long_pinterest_messages_are_clipped() -> None:
    response = ApiResponse(200, body(events(("failed", "x" * 5000))))
    [outcome] = classify(response, 1, NOW).outcomes
    assert len(outcome.message) == 300


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3.5"}, 3.5),
        ({"Retry-After": "Thu, 15 Jan 2027 08:00:10 GMT"}, None),
        ({"x-ratelimit-reset": str(int(NOW) + 30)}, 30.0),
        ({"x-ratelimit-reset": "-4"}, 0.0),
        ({"Retry-After": "soon", "x-ratelimit-reset": "9"}, 9.0),
        ({}, None),
    ],
)
def test_retry_after_hints(headers: dict[str, str], expected: float | None) -> None:
    hint = retry_after(headers, NOW)
    if headers.get("Retry-After", "").endswith("GMT"):
        # An HTTP date is relative to now: 2027-01-15T08:00:10Z is NOW + 10 s.
        assert hint == pytest.approx(10.0)
    else:
        assert hint == expected


@pytest.mark.parametrize(
    ("headers", "per_minute"),
    [
        ({"x-ratelimit-limit": '120000, 120000;w=60;name="ads_conversions_ad_account_id"'}, 120000),
        ({"X-RateLimit-Limit": "600, 600;w=3600"}, 10.0),
        ({"x-ratelimit-limit": "5000"}, 5000),
        ({"x-ratelimit-limit": "lots"}, None),
        ({}, None),
    ],
)
def test_pinterests_rate_limit_is_read_in_both_forms(
    headers: dict[str, str], per_minute: float | None
) -> None:
    body = b'{"num_events_received":1,"num_events_processed":1,"events":[{"status":"processed"}]}'
    for status, sent in ((200, 1), (429, 1)):
        answer = classify(ApiResponse(status, body, headers), sent, NOW)
        assert answer.server_limit == per_minute


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            "external_id is missing. We highly recommend this on all events. ; click_id is missing",
            ("external_id_missing", "click_id_missing"),
        ),
        ("Event name 'subscription' is labeled as an 'Unknown' event.", ("unknown_event_name",)),
        ("user_name is missing", ("other",)),
        ("Something new from Pinterest", ("other",)),
        ("; ", ()),
    ],
)
def test_warnings_become_bounded_short_names(text: str, names: tuple[str, ...]) -> None:
    assert warning_names(text) == names
    assert set(names) <= set(WARNINGS)


@pytest.mark.parametrize("note", ["", None, 7])
def test_a_processed_event_without_a_warning_shares_the_one_outcome(note: object) -> None:
    body = orjson.dumps(
        {
            "num_events_received": 2,
            "num_events_processed": 2,
            "events": [
                {"status": "processed", "error_message": "", "warning_message": note},
                {"status": "processed", "warning_message": "click_id is missing"},
            ],
        }
    )
    plain, warned = classify(ApiResponse(200, body), 2, NOW).outcomes
    assert plain is PROCESSED
    assert warned.processed
    assert warned.warnings == ("click_id_missing",)
    assert warned.message == "click_id is missing"


def test_every_form_of_a_clean_processed_item_is_processed_without_a_note() -> None:
    items = [
        {"status": "processed", **error, **warning}
        for error in ({"error_message": ""}, {"error_message": None}, {})
        for warning in ({"warning_message": ""}, {"warning_message": None}, {})
    ]
    answer = ApiResponse(200, orjson.dumps({"events": items}))
    assert classify(answer, len(items), NOW).outcomes == (PROCESSED,) * len(items)


def test_one_failed_event_among_clean_ones_keeps_its_own_outcome() -> None:
    clean = {"status": "processed", "error_message": "", "warning_message": ""}
    failed = {"status": "failed", "error_message": "bad event_time", "warning_message": ""}
    answer = ApiResponse(200, orjson.dumps({"events": [clean, clean, failed, clean]}))
    outcomes = classify(answer, 4, NOW).outcomes
    assert [outcome.processed for outcome in outcomes] == [True, True, False, True]
    assert outcomes[2].message == "bad event_time"
