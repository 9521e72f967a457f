"""Paces one ad account's requests: adaptive concurrency and the per-minute request budget."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class ConcurrencyLimiter:
    """Bounds the in-flight requests of one ad account, adapting the bound AIMD-style.

    The limit grows by one after a full window of `limit` uncongested requests whose latency
    stays within `spike_ratio` of the moving average, and is multiplied by `decrease` (at most
    once per window) on congestion: 429, 5xx, timeouts or a latency spike. It never leaves
    [1, maximum]. FIFO: a waiter is never overtaken by a later `acquire`.
    """

    def __init__(
        self,
        initial: int,
        maximum: int,
        on_change: Callable[[int], None] | None = None,
        decrease: float = 0.9,
        spike_ratio: float = 2.0,
    ) -> None:
        self.maximum = maximum
        self.limit = max(1, min(initial, maximum))
        self.inflight = 0
        self._on_change = on_change
        self._decrease = decrease
        self._spike_ratio = spike_ratio
        self._average: float | None = None
        self._window = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.inflight -= 1
                self._wake()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, latency_s: float, congested: bool) -> None:
        self.inflight -= 1
        spike = self._average is not None and latency_s > self._average * self._spike_ratio
        if congested or spike:
            if self._window >= 0:
                self._set(max(1, int(self.limit * self._decrease)))
                # Ignore the congestion reports of requests already in flight at the cut.
                self._window = -self.inflight
        else:
            self._window += 1
            if self._window >= self.limit:
                self._window = 0
                self._set(min(self.maximum, self.limit + 1))
        if not spike:
            self._average = (
                latency_s if self._average is None else 0.9 * self._average + 0.1 * latency_s
            )
        self._wake()

    def give_back(self) -> None:
        """Returns a slot unused (or abandoned): no latency sample, no adaptation."""
        self.inflight -= 1
        self._wake()

    def _set(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            if self._on_change is not None:
                self._on_change(limit)

    def _wake(self) -> None:
        while self._waiters and self.inflight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.inflight += 1
                waiter.set_result(None)


class RequestBudget:
    """Paces one ad account's requests: at most `per_minute` in any 60 s window, and none
    before a time the server asked for (429 Retry-After / x-ratelimit-reset, or an exhausted
    x-ratelimit-remaining), so one throttled request stops its siblings too."""

    WINDOW_S = 60.0

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._not_before = 0.0

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            sent = self._sent
            while sent and sent[0] <= now - self.WINDOW_S:
                sent.popleft()
            wait = self._not_before - now
            if len(sent) >= self.per_minute:
                wait = max(wait, sent[0] + self.WINDOW_S - now)
            if wait <= 0:
                sent.append(now)
                return
            await self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """No request of this account before `seconds` from now."""
        self._not_before = max(self._not_before, self._clock() + seconds)
