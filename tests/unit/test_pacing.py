"""Pacing: the adaptive concurrency limiter and the per-minute request budget (no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from stream.pacing import ConcurrencyLimiter, RequestBudget


async def test_limiter_never_exceeds_its_limit_and_adapts() -> None:
    changes: list[int] = []
    limiter = ConcurrencyLimiter(2, 4, on_change=changes.append)
    peak = 0

    async def request(latency: float, congested: bool) -> None:
        nonlocal peak
        await limiter.acquire()
        peak = max(peak, limiter.inflight)
        await asyncio.sleep(0)
        limiter.release(latency, congested)

    await asyncio.gather(*(request(0.1, False) for _ in range(40)))
    assert peak <= 4
    assert limiter.limit == 4, "grew one step per uncongested window up to the maximum"
    await asyncio.gather(*(request(0.1, True) for _ in range(3)))
    assert limiter.limit == 3, "cut by 0.9 once for a burst of congestion"
    assert changes == [3, 4, 3]
    assert limiter.inflight == 0


async def test_request_budget_spaces_requests_over_the_window_and_honours_holds() -> None:
    now = [0.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    budget = RequestBudget(3, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(3):
        await budget.acquire()
    assert waits == []
    await budget.acquire()
    # The 4th waits for the first to leave the window, plus the margin for its transit.
    assert waits == [61.0]
    budget.hold(12.5)
    await budget.acquire()
    assert waits[-1] == pytest.approx(12.5)


def test_the_budget_is_the_fleets_share_and_pinterests_limit_is_the_authority() -> None:
    budget = RequestBudget(5000)
    assert budget.per_minute == 5000
    budget.set_share(0.25)
    assert budget.per_minute == 1250
    budget.observe_server_limit(1000)  # Pinterest says less than configured: it wins
    assert budget.per_minute == 250
    budget.observe_server_limit(120_000)  # more than configured: the configuration wins
    assert budget.per_minute == 1250
    budget.set_share(0.0)  # a member without partitions still lets a probe out
    assert budget.per_minute == 1
    budget.set_share(1.0)
    assert budget.per_minute == 5000
