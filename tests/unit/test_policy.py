"""The delivery policy as a table: each answer, given the retry budget left → what to do."""

from __future__ import annotations

import random

import orjson
import pytest

from stream.dlq.contract import DeadLetterReason
from stream.pinterest.classify import AnswerKind, ApiResponse, Classification, classify
from stream.policy import BISECT, PAUSE, Decision, GiveUp, Reject, Retry, Settle, decide, hold
from stream.retry import Backoff, RetryState

NOW = 1_800_000_000.0
SEED = 1
FIRST_JITTER = random.Random(SEED).uniform(0, 0.5)
"""The first jittered delay of Backoff(0.5, …) seeded with SEED."""


def retry_state(budget_s: float) -> RetryState:
    return Backoff(0.5, 60.0, budget_s, rng=random.Random(SEED), clock=lambda: 0.0).start()


def processed(*statuses: str) -> bytes:
    return orjson.dumps({"events": [{"status": s, "error_message": "bad"} for s in statuses]})


def refusal(message: str) -> bytes:
    return orjson.dumps({"code": 1, "message": message})


# (case, answer, events in the request, retry budget left in seconds, decision)
TABLE: list[tuple[str, ApiResponse, int, float, Decision]] = [
    (
        "200: settle each event, failed ones as rejected_by_pinterest",
        ApiResponse(200, processed("processed", "failed")),
        2,
        900.0,
        Settle("rejected_by_pinterest"),
    ),
    (
        "200 settles even with no retry budget left",
        ApiResponse(200, processed("processed")),
        1,
        0.0,
        Settle("rejected_by_pinterest"),
    ),
    (
        "422: settle each event",
        ApiResponse(422, refusal("invalid")),
        3,
        900.0,
        Settle("rejected_by_pinterest"),
    ),
    (
        "429 with Retry-After: retry after the server's hint",
        ApiResponse(429, b"", {"Retry-After": "7"}),
        5,
        900.0,
        Retry(7.0, "rate_limited"),
    ),
    (
        "429 hint above the maximum delay is capped",
        ApiResponse(429, b"", {"Retry-After": "600"}),
        5,
        900.0,
        Retry(60.0, "rate_limited"),
    ),
    (
        "429 without a hint: full jitter",
        ApiResponse(429, b""),
        5,
        900.0,
        Retry(FIRST_JITTER, "rate_limited"),
    ),
    (
        "503 hint reaching past the budget is cut to the budget's end",
        ApiResponse(503, b"", {"Retry-After": "30"}),
        5,
        4.0,
        Retry(4.0, "server_error"),
    ),
    (
        "timeout: retry",
        ApiResponse(None, error="timeout"),
        5,
        900.0,
        Retry(FIRST_JITTER, "timeout"),
    ),
    (
        "connection error: retry",
        ApiResponse(None, error="connection"),
        5,
        900.0,
        Retry(FIRST_JITTER, "connection_error"),
    ),
    (
        "unreadable 200: retry as bad_response",
        ApiResponse(200, b"<html>"),
        5,
        900.0,
        Retry(FIRST_JITTER, "bad_response"),
    ),
    (
        "503 with the budget spent: give up with Pinterest's message",
        ApiResponse(503, refusal("ramped down")),
        5,
        0.0,
        GiveUp("retries_exhausted", "ramped down"),
    ),
    (
        "500 without a message, budget spent: give up naming the reason",
        ApiResponse(500, b""),
        5,
        0.0,
        GiveUp("retries_exhausted", "server error"),
    ),
    (
        "timeout with the budget spent: give up",
        ApiResponse(None, error="timeout"),
        1,
        0.0,
        GiveUp("retries_exhausted", "timeout"),
    ),
    (
        "400 for several events: bisect",
        ApiResponse(400, refusal("Invalid request")),
        8,
        900.0,
        BISECT,
    ),
    (
        "400 for one event: dead-letter it as request_invalid",
        ApiResponse(400, refusal("Invalid request")),
        1,
        900.0,
        Reject("request_invalid", "Invalid request"),
    ),
    (
        "400 for one event without a message",
        ApiResponse(413, b""),
        1,
        0.0,
        Reject("request_invalid", "HTTP 413"),
    ),
    (
        "401: pause the account",
        ApiResponse(401, refusal("Authentication failed.")),
        5,
        900.0,
        PAUSE,
    ),
    ("403: pause even with no budget left, never dead-letter", ApiResponse(403), 5, 0.0, PAUSE),
    ("404: pause", ApiResponse(404, refusal("AdAccount not found.")), 1, 900.0, PAUSE),
]


@pytest.mark.parametrize(
    ("response", "events", "budget_s", "expected"),
    [t[1:] for t in TABLE],
    ids=[t[0] for t in TABLE],
)
def test_decision_table(
    response: ApiResponse, events: int, budget_s: float, expected: Decision
) -> None:
    answer = classify(response, events, NOW)
    assert decide(answer, events, retry_state(budget_s)) == expected


@pytest.mark.parametrize(
    "response",
    [ApiResponse(200, processed("processed", "failed")), ApiResponse(400), ApiResponse(401)],
    ids=["settle", "bisect", "pause"],
)
def test_only_a_retriable_answer_spends_a_retry(response: ApiResponse) -> None:
    retry = retry_state(900.0)
    decide(classify(response, 2, NOW), 2, retry)
    assert retry.retries == 0
    decide(classify(ApiResponse(503), 2, NOW), 2, retry)
    assert retry.retries == 1


@pytest.mark.parametrize(
    ("kind", "retriable", "setup_error", "dead_letter_reason"),
    [
        (AnswerKind.EVENTS, False, False, "rejected_by_pinterest"),
        (AnswerKind.RETRY, True, False, "retries_exhausted"),
        (AnswerKind.SETUP_ERROR, False, True, None),
        (AnswerKind.REQUEST_INVALID, False, False, "request_invalid"),
    ],
)
def test_each_answer_kind_carries_its_meaning(
    kind: AnswerKind,
    retriable: bool,
    setup_error: bool,
    dead_letter_reason: DeadLetterReason | None,
) -> None:
    assert kind.retriable is retriable
    assert kind.setup_error is setup_error
    assert kind.dead_letter_reason == dead_letter_reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Classification(AnswerKind.RETRY, 429, reason="rate_limited", retry_after=9.0), 9.0),
        (
            Classification(
                AnswerKind.RETRY, 429, reason="rate_limited", retry_after=9.0, exhausted_for=20.0
            ),
            9.0,
        ),
        (Classification(AnswerKind.RETRY, 429, reason="rate_limited"), None),
        (Classification(AnswerKind.RETRY, 503, reason="server_error", retry_after=10.0), None),
        (Classification(AnswerKind.EVENTS, 200, exhausted_for=20.0), 20.0),
        (Classification(AnswerKind.EVENTS, 200), None),
    ],
    ids=[
        "a 429's hint holds the account",
        "a 429's hint wins over the window reset",
        "a 429 without a hint holds nothing",
        "a 5xx hint delays only its own batch",
        "a used-up rate-limit window holds until its reset",
        "a plain answer holds nothing",
    ],
)
def test_server_pacing_hints_hold_the_account(
    answer: Classification, expected: float | None
) -> None:
    assert hold(answer) == expected
