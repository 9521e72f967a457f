"""Decides what to do with a classified answer: settle, retry, give up, bisect or pause."""

from __future__ import annotations

from dataclasses import dataclass

from stream.dlq.contract import DeadLetterReason
from stream.pinterest.classify import AnswerKind, Classification
from stream.retry import RetryReason, RetryState


@dataclass(frozen=True, slots=True)
class Settle:
    """Deliver each processed event; dead-letter each failed one as `reason`."""

    reason: DeadLetterReason


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the same batch again after `delay` seconds; `reason` is what retries_total counts."""

    delay: float
    reason: RetryReason


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The retry budget is spent: dead-letter every event of the batch as `reason`."""

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


def decide(answer: Classification, events: int, retry: RetryState) -> Decision:
    """What to do with `answer` to a request of `events` events.

    Only a retriable answer consults `retry` (and spends one of its retries); its delay honours
    the server's hint and never reaches past the retry budget.
    """
    kind = answer.kind
    if kind.setup_error:
        return PAUSE
    if kind.retriable:
        delay = retry.next_delay(answer.retry_after)
        if delay is not None:
            return Retry(delay, answer.reason or "server_error")
        message = answer.message or (answer.reason or "retry").replace("_", " ")
        return GiveUp(_dead_letter_reason(kind), message)
    if kind is AnswerKind.REQUEST_INVALID:
        if events > 1:
            return BISECT
        return Reject(_dead_letter_reason(kind), answer.message)
    return Settle(_dead_letter_reason(kind))


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
