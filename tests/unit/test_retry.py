"""Backoff: full jitter within exponential bounds, server hints, and the optional budget of
time spent failing (an injected clock; no I/O)."""

from __future__ import annotations

import random

import pytest

from stream.retry import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 100])
def test_full_jitter_stays_within_the_exponential_ceiling(attempt: int) -> None:
    backoff = Backoff(0.5, 60.0, 900.0, rng=random.Random(attempt))
    ceiling = min(60.0, 0.5 * 2**attempt)
    delays = [backoff.delay(attempt) for _ in range(2000)]
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range rather than clustering at the ceiling.
    assert min(delays) < ceiling * 0.05
    assert max(delays) > ceiling * 0.95


def test_server_hint_replaces_jitter_but_is_capped() -> None:
    backoff = Backoff(0.5, 60.0, 900.0, rng=random.Random(1))
    assert backoff.delay(0, hint=7.0) == 7.0
    assert backoff.delay(0, hint=3600.0) == 60.0
    assert backoff.delay(3, hint=0.0) <= 4.0


def test_budget_bounds_the_total_time_then_reports_exhaustion() -> None:
    clock = FakeClock()
    backoff = Backoff(1.0, 8.0, 30.0, rng=random.Random(2), clock=clock)
    state = backoff.start()
    waited = 0.0
    while (delay := state.next_delay()) is not None:
        waited += delay
        clock.now += delay
        assert clock.now <= 30.0
    assert waited == pytest.approx(30.0)
    assert state.retries >= 4


def test_a_hint_longer_than_the_remaining_budget_is_shortened_to_it() -> None:
    clock = FakeClock()
    state = Backoff(1.0, 60.0, 10.0, clock=clock).start()
    state.attempt()
    clock.now = 8.0
    assert state.next_delay(hint=30.0) == pytest.approx(2.0)
    clock.now = 10.0
    assert state.next_delay(hint=1.0) is None


def test_without_a_budget_retries_never_run_out() -> None:
    clock = FakeClock()
    state = Backoff(0.5, 60.0, None, rng=random.Random(4), clock=clock).start()
    for _ in range(10_000):
        state.attempt()
        clock.now += 30.0  # each attempt times out
        delay = state.next_delay()
        assert delay is not None
        clock.now += delay
    # Far beyond the old 15-minute budget, and the delays stay within the backoff's maximum.
    assert clock.now > 3 * 24 * 3600
    assert state.retries == 10_000
    assert state.spent_s == pytest.approx(clock.now)


def test_only_failing_attempts_and_backoff_delays_spend_the_budget() -> None:
    clock = FakeClock()
    state = Backoff(1.0, 60.0, 10.0, rng=random.Random(5), clock=clock).start()
    # Queued for a slot, held by the request budget, paused by a setup error: none of it counts.
    clock.now = 3600.0
    state.attempt()
    clock.now += 4.0  # the attempt itself fails after 4 s: that counts
    first = state.next_delay()
    assert first is not None
    assert state.spent_s == pytest.approx(4.0 + first)
    clock.now += first + 7200.0  # the backoff, then two hours paused or queued
    state.attempt()
    clock.now += 1.0
    second = state.next_delay()
    assert second is not None
    assert state.spent_s == pytest.approx(5.0 + first + second)
    assert state.spent_s <= 10.0


def test_a_split_state_spends_on_its_own() -> None:
    clock = FakeClock()
    state = Backoff(1.0, 8.0, 20.0, rng=random.Random(6), clock=clock).start()
    assert state.next_delay() is not None
    spent = state.spent_s
    first, second = state.split(), state.split()
    assert first.next_delay() is not None
    assert second.spent_s == spent == state.spent_s
    assert second.retries == 1
