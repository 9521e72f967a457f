"""Backoff: full jitter within exponential bounds, server hints, and the total budget."""

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
    clock.now = 8.0
    assert state.next_delay(hint=30.0) == pytest.approx(2.0)
    clock.now = 10.0
    assert state.next_delay(hint=1.0) is None
