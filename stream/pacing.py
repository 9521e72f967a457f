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
    x-ratelimit-remaining), so one throttled request stops its siblings too.

    The budget is the fleet's, not the process's: the configured rate (lowered to Pinterest's
    own x-ratelimit-limit when that is smaller) times this member's `share` of the consumer
    group's partitions, so N replicas together stay within one budget.
    """

    WINDOW_S = 60.0
    # A request's slot frees a little after a full window: it reaches Pinterest some time after
    # it left, and a fixed server window must not see the next one early.
    WINDOW_MARGIN_S = 1.0

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        share: float = 1.0,
    ) -> None:
        self.configured = per_minute
        self.per_minute = per_minute
        self._share = share
        self._server_limit: float | None = None
        self._resize()
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._not_before = 0.0

    async def acquire(self) -> None:
        while True:
            now = self._clock()
            sent = self._sent
            window = self.WINDOW_S + self.WINDOW_MARGIN_S
            while sent and sent[0] <= now - window:
                sent.popleft()
            wait = self._not_before - now
            if len(sent) >= self.per_minute:
                wait = max(wait, sent[0] + window - now)
            if wait <= 0:
                sent.append(now)
                return
            await self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """No request of this account before `seconds` from now."""
        self._not_before = max(self._not_before, self._clock() + seconds)

    def set_share(self, share: float) -> None:
        """This member's part of the fleet budget (its share of the group's partitions)."""
        self._share = min(1.0, max(0.0, share))
        self._resize()

    def observe_server_limit(self, per_minute: float) -> None:
        """Pinterest's x-ratelimit-limit for the account: the authority when it is lower."""
        if per_minute != self._server_limit:
            self._server_limit = per_minute
            self._resize()

    def _resize(self) -> None:
        fleet = self.configured
        if self._server_limit is not None and self._server_limit > 0:
            fleet = min(fleet, int(self._server_limit))
        # Never 0: a member that owns nothing sends nothing anyway, and a probe must get out.
        self.per_minute = max(1, int(fleet * self._share))
