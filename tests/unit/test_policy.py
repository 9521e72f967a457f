"""The delivery policy as a table: each answer, given the retry budget left → what to do; and
retries without a budget that outlast an outage until each event ages out (injected clock)."""

from __future__ import annotations

import random

import orjson
import pytest

from stream.dlq.contract import DeadLetterReason
from stream.models import PinterestEvent
from stream.pinterest.classify import AnswerKind, ApiResponse, Classification, classify
from stream.policy import (
    AGE_MARGIN_S,
    BISECT,
    PAUSE,
    Decision,
    GiveUp,
    Reject,
    Retry,
    Settle,
    decide,
    hold,
)
from stream.retry import Backoff, RetryState
from stream.validate import MAX_AGE_S

NOW = 1_800_000_000.0
SEED = 1
FIRST_JITTER = random.Random(SEED).uniform(0, 0.5)
"""The first jittered delay of Backoff(0.5, …) seeded with SEED."""


def retry_state(budget_s: float | None) -> RetryState:
    return Backoff(0.5, 60.0, budget_s, rng=random.Random(SEED), clock=lambda: 0.0).start()


def aged(*ages_s: float) -> tuple[PinterestEvent, ...]:
    """Events whose event_time lies `ages_s` before NOW."""
    return tuple(
        PinterestEvent(f"e{n}", "checkout", "web", int(NOW - age), None, b"{}")
        for n, age in enumerate(ages_s)
    )


def fresh(events: int) -> tuple[PinterestEvent, ...]:
    return aged(*[60.0] * events)


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
    assert decide(answer, fresh(events), retry_state(budget_s), NOW) == expected


@pytest.mark.parametrize(
    "response",
    [ApiResponse(200, processed("processed", "failed")), ApiResponse(400), ApiResponse(401)],
    ids=["settle", "bisect", "pause"],
)
def test_only_a_retriable_answer_spends_a_retry(response: ApiResponse) -> None:
    retry = retry_state(900.0)
    decide(classify(response, 2, NOW), fresh(2), retry, NOW)
    assert retry.retries == 0
    decide(classify(ApiResponse(503), 2, NOW), fresh(2), retry, NOW)
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


DAY = 24 * 3600.0
TOO_OLD_503 = "event_time: older than 7 days before Pinterest accepted it (retrying after HTTP 503)"


@pytest.mark.parametrize(
    ("response", "ages", "budget_s", "expected"),
    [
        (
            ApiResponse(503),
            (MAX_AGE_S - 10, MAX_AGE_S - 3600, 3600),
            None,
            Retry(FIRST_JITTER, "server_error", (0,), TOO_OLD_503),
        ),
        (
            ApiResponse(503),
            (MAX_AGE_S - 10, MAX_AGE_S - 30),
            None,
            GiveUp("too_old", TOO_OLD_503),
        ),
        (
            ApiResponse(429, b"", {"Retry-After": "60"}),
            (MAX_AGE_S - 100, 3600),
            None,
            Retry(
                60.0,
                "rate_limited",
                (0,),
                "event_time: older than 7 days before Pinterest accepted it "
                "(retrying after HTTP 429)",
            ),
        ),
        (
            ApiResponse(None, error="timeout"),
            (MAX_AGE_S - 100, 3600),
            None,
            Retry(FIRST_JITTER, "timeout"),
        ),
        (
            ApiResponse(None, error="connection"),
            (MAX_AGE_S - 10,),
            None,
            GiveUp(
                "too_old",
                "event_time: older than 7 days before Pinterest accepted it "
                "(retrying after connection error)",
            ),
        ),
        (
            ApiResponse(503),
            (MAX_AGE_S - 10, 3600),
            0.0,
            GiveUp("retries_exhausted", "server error"),
        ),
        (
            ApiResponse(200, processed("processed")),
            (MAX_AGE_S - 1,),
            None,
            Settle("rejected_by_pinterest"),
        ),
    ],
    ids=[
        "the event about to age out is dead-lettered, the others retry",
        "every event aged out: give up as too_old",
        "a server hint that reaches past an event's age limit ages it out",
        "an event with more time left than the wait keeps retrying",
        "a transport error ages out like an HTTP one",
        "a spent budget gives up as retries_exhausted first",
        "an answer that settles ignores age",
    ],
)
def test_events_age_out_one_by_one(
    response: ApiResponse, ages: tuple[float, ...], budget_s: float | None, expected: Decision
) -> None:
    events = aged(*ages)
    answer = classify(response, len(events), NOW)
    assert decide(answer, events, retry_state(budget_s), NOW) == expected


def test_an_outage_of_days_retries_until_each_event_ages_out_and_nothing_else() -> None:
    """503s for three days, no budget: far beyond the old 15-minute budget, every retry goes on
    and only the events reaching Pinterest's age limit are dead-lettered, oldest first."""
    clock = [NOW]
    retry = Backoff(0.5, 60.0, None, rng=random.Random(7), clock=lambda: clock[0]).start()
    batch = list(aged(MAX_AGE_S - 3600, MAX_AGE_S - DAY, MAX_AGE_S - 2 * DAY, 3600, 60))
    expired_at: dict[str, float] = {}
    sent_at: dict[str, list[float]] = {event.event_id: [] for event in batch}
    while clock[0] < NOW + 3 * DAY:
        retry.attempt()
        for event in batch:
            sent_at[event.event_id].append(clock[0])
        clock[0] += 30.0  # every attempt times out
        decision = decide(classify(ApiResponse(503), len(batch), clock[0]), batch, retry, clock[0])
        assert isinstance(decision, Retry), decision
        for index in decision.expired:
            expired_at[batch[index].event_id] = clock[0]
        batch = [event for i, event in enumerate(batch) if i not in decision.expired]
        clock[0] += decision.delay
    assert [event.event_id for event in batch] == ["e3", "e4"]
    assert list(expired_at) == ["e0", "e1", "e2"]
    for event_id, age_left in (("e0", 3600), ("e1", DAY), ("e2", 2 * DAY)):
        # Aged out within one attempt and one longest wait of its limit, never sent too old.
        deadline = NOW + age_left
        assert deadline - 30.0 - 60.0 - AGE_MARGIN_S <= expired_at[event_id] <= deadline
        assert max(sent_at[event_id]) <= deadline - AGE_MARGIN_S
    assert retry.retries > 3 * DAY / 90
