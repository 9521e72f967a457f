"""Retry timing and reasons: full-jitter exponential backoff, server hints, an optional budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Literal

RetryReason = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection_error",
    "bad_response",
    "dead_letter_unacked",
]
"""Why work is sent again: the classifier's reasons, and the dead-letter producer's."""

RETRY_LABELS: Mapping[RetryReason, str] = {
    "rate_limited": "rate_limited",
    "server_error": "server_error",
    "timeout": "timeout",
    "connection_error": "connection_error",
    # An unreadable 2xx or an unexpected status: the dashboard counts it with the 5xx.
    "bad_response": "server_error",
    "dead_letter_unacked": "dead_letter_unacked",
}
"""The `reason` label each retry is counted under in retries_total (a contract)."""


class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(max, initial * 2**n)).

    A server hint (Retry-After, x-ratelimit-reset) replaces the jittered delay: waiting less
    than the server asked only earns another 429. `budget_s`, when set, caps the time one unit
    of work may spend failing transiently; None retries for as long as the caller allows.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        budget_s: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.budget_s = budget_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._clock = clock

    def delay(self, attempt: int, hint: float | None = None) -> float:
        if hint is not None and hint > 0:
            return min(hint, self.max_s)
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt, 62))
        return self._rng.uniform(0, ceiling)

    def start(self) -> RetryState:
        return RetryState(self, self._clock)


class RetryState:
    """The retries of one unit of work: counts them and the time spent failing transiently.

    Only a failed attempt's own duration (from `attempt()` to the answer) and the backoff
    delays after it are spent: waiting for a concurrency slot, for the account's request
    budget or out a setup-error pause is not failing, and an outage never ages the budget of
    work that was merely queued behind it.
    """

    __slots__ = ("_backoff", "_clock", "_sent_at", "retries", "spent_s")

    def __init__(self, backoff: Backoff, clock: Callable[[], float]) -> None:
        self._backoff = backoff
        self._clock = clock
        self._sent_at: float | None = None
        self.retries = 0
        self.spent_s = 0.0

    def attempt(self) -> None:
        """Marks a request going out now: if it fails transiently, its duration is spent."""
        self._sent_at = self._clock()

    def next_delay(self, hint: float | None = None) -> float | None:
        """The wait before the next attempt (spent at once), or None once the budget is spent.

        A wait reaching past the budget is shortened so the last attempt happens at its end.
        """
        if self._sent_at is not None:
            self.spent_s += max(0.0, self._clock() - self._sent_at)
            self._sent_at = None
        budget = self._backoff.budget_s
        remaining = float("inf") if budget is None else budget - self.spent_s
        if remaining <= 0:
            return None
        delay = min(self._backoff.delay(self.retries, hint), remaining)
        self.retries += 1
        self.spent_s += delay
        return delay

    def split(self) -> RetryState:
        """A copy for one half of a bisected batch: the halves fail (and spend) on their own."""
        twin = RetryState(self._backoff, self._clock)
        twin.retries = self.retries
        twin.spent_s = self.spent_s
        return twin
