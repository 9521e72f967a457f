"""Decides what to do with a classified answer: settle, retry, give up, bisect or pause."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from stream.dlq.contract import DeadLetterReason
from stream.models import PinterestEvent
from stream.pinterest.classify import AnswerKind, Classification
from stream.retry import RetryReason, RetryState
from stream.validate import MAX_AGE_S

AGE_MARGIN_S: Final = 60.0
"""An event is given up as too old this long before Pinterest would refuse it: room for the
next request's own duration and for the clocks of the two sides to differ."""


@dataclass(frozen=True, slots=True)
class Settle:
    """Deliver each processed event; dead-letter each failed one as `reason`."""

    reason: DeadLetterReason


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the batch again after `delay` seconds; `reason` is what retries_total counts.

    The events at the `expired` positions would be too old for Pinterest by then: they are
    dead-lettered now as too_old with `expired_message`, and the rest is sent without them.
    """

    delay: float
    reason: RetryReason
    expired: tuple[int, ...] = ()
    expired_message: str = ""


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Retrying is over: dead-letter every event of the batch as `reason` (retries_exhausted
    once the optional retry budget is spent, too_old once every event has aged out)."""

    reason: DeadLetterReason
    message: str


@dataclass(frozen=True, slots=True)
class Bisect:
    """The request was refused as a whole: send each half on its own to find the culprits."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The request was refused as a whole and holds one event: dead-letter it as `reason`."""

    reason: DeadLetterReason
    message: str


@dataclass(frozen=True, slots=True)
class Pause:
    """A setup error: pause the ad account and probe it slowly; never dead-letter."""


Decision = Settle | Retry | GiveUp | Bisect | Reject | Pause

PAUSE = Pause()
BISECT = Bisect()


def decide(
    answer: Classification, events: Sequence[PinterestEvent], retry: RetryState, now: float
) -> Decision:
    """What to do with `answer` to a request that carried `events`; `now` is Unix time.

    Only a retriable answer consults `retry` (and spends one of its retries); its delay honours
    the server's hint and never reaches past the retry budget, if there is one. Without a budget
    a transient failure is retried until the event would be too old for Pinterest, event by
    event: a batch holds events of different ages, and the oldest age out first.
    """
    kind = answer.kind
    if kind.setup_error:
        return PAUSE
    if kind.retriable:
        reason = answer.reason or "server_error"
        delay = retry.next_delay(answer.retry_after)
        if delay is None:
            message = answer.message or reason.replace("_", " ")
            return GiveUp(_dead_letter_reason(kind), message)
        # Pinterest refuses an event older than MAX_AGE_S when it receives it: at the next attempt.
        cutoff = now + delay + AGE_MARGIN_S - MAX_AGE_S
        expired = tuple(i for i, event in enumerate(events) if event.event_time < cutoff)
        if not expired:
            return Retry(delay, reason)
        if len(expired) == len(events):
            return GiveUp("too_old", _too_old(answer, reason))
        return Retry(delay, reason, expired, _too_old(answer, reason))
    if kind is AnswerKind.REQUEST_INVALID:
        if len(events) > 1:
            return BISECT
        return Reject(_dead_letter_reason(kind), answer.message)
    return Settle(_dead_letter_reason(kind))


def _too_old(answer: Classification, reason: RetryReason) -> str:
    cause = f"HTTP {answer.status}" if answer.status is not None else reason.replace("_", " ")
    return f"event_time: older than 7 days before Pinterest accepted it (retrying after {cause})"


def hold(answer: Classification) -> float | None:
    """Seconds during which no request of the account may go out, from the server's pacing hints.

    A 429's Retry-After (or x-ratelimit-reset) holds every request of the account, so one
    throttled request stops its siblings too; so does a rate-limit window that is used up.
    """
    if answer.retry_after is not None and answer.reason == "rate_limited":
        return answer.retry_after
    return answer.exhausted_for


def _dead_letter_reason(kind: AnswerKind) -> DeadLetterReason:
    reason = kind.dead_letter_reason
    if reason is None:
        raise ValueError(f"a {kind.name} answer never dead-letters")
    return reason
