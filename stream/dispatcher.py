"""Sends batches with bounded concurrency per ad account, retrying and settling every event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from stream.batcher import Batch
from stream.dlq.contract import DeadLetterReason
from stream.logs import RateLimitedLogger
from stream.metrics import Metrics, RetryReason
from stream.models import PinterestEvent
from stream.pinterest.classify import ApiResponse, Verdict, classify
from stream.retry import Backoff, RetryState

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

log = logging.getLogger(__name__)

# The classifier's reasons, as the retries_total metric names them.
RETRY_METRIC_REASONS: dict[str, RetryReason] = {
    "rate_limited": "rate_limited",
    "server_error": "server_error",
    "timeout": "timeout",
    "connection_error": "connection_error",
    "bad_response": "server_error",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """Why events are dead-lettered; `message` is Pinterest's or ours, never event content."""

    reason: DeadLetterReason
    message: str
    status: int | None
    attempts: int


class Sender(Protocol):
    async def send(self, ad_account_id: str, test: bool, body: bytes) -> ApiResponse: ...


class Outcomes(Protocol[T_contra]):
    """Where the dispatcher reports each event's fate; `tokens` are its consumed copies."""

    def delivered(self, event: PinterestEvent, tokens: tuple[T_contra, ...]) -> None: ...

    def failed(
        self, event: PinterestEvent, tokens: tuple[T_contra, ...], failure: Failure
    ) -> None: ...


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


class AccountState:
    """One ad account: its concurrency limiter and, after a 401/403/404, its setup error.

    While in setup error only one request (the probe) is sent per probe interval; every other
    batch of the account waits, so a revoked token cannot drain a topic into the DLQ.
    """

    def __init__(
        self, ad_account_id: str, limiter: ConcurrencyLimiter, budget: RequestBudget
    ) -> None:
        self.ad_account_id = ad_account_id
        self.limiter = limiter
        self.budget = budget
        self.setup_error: Verdict | None = None
        self._probing = False
        self._recovered = asyncio.Event()

    def enter_setup_error(self, verdict: Verdict) -> bool:
        """Records the error; True when the account was fine until now."""
        first = self.setup_error is None
        self.setup_error = verdict
        self._recovered.clear()
        return first

    def claim_probe(self) -> bool:
        if self._probing:
            return False
        self._probing = True
        return True

    def release_probe(self) -> None:
        self._probing = False

    def recover(self) -> bool:
        """Clears the setup error; True when there was one."""
        had_error = self.setup_error is not None
        self.setup_error = None
        self._recovered.set()
        return had_error

    async def wait_recovered(self, limit_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recovered.wait(), limit_s)


class Dispatcher(Generic[T]):
    """Delivers each submitted batch in its own task until every event in it is settled.

    Per batch: wait for a concurrency slot → send → classify. Per-event answers settle events
    (processed → delivered, failed → dead letter); retriable failures back off and resend the
    same batch within the retry budget, then dead-letter it as retries_exhausted; a request
    refused as a whole (400) is bisected down to the offending events; setup errors pause the
    account and never dead-letter. Processed events are never sent again.
    """

    def __init__(
        self,
        sender: Sender,
        outcomes: Outcomes[T],
        backoff: Backoff,
        metrics: Metrics,
        *,
        initial_concurrency: int,
        max_concurrency: int,
        setup_error_probe_s: float,
        requests_per_minute: int = 5000,
        refresh_credentials: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sender = sender
        self._outcomes = outcomes
        self._backoff = backoff
        self._metrics = metrics
        self._initial = initial_concurrency
        self._maximum = max_concurrency
        self._probe_s = setup_error_probe_s
        self._requests_per_minute = requests_per_minute
        self._refresh_credentials = refresh_credentials
        self._clock = clock
        self._sleep = sleep
        self._accounts: dict[str, AccountState] = {}
        self._storms = RateLimitedLogger(log)
        self._tasks: dict[asyncio.Task[None], Batch[T]] = {}
        self._held: dict[str, int] = {}

    def account(self, ad_account_id: str) -> AccountState:
        state = self._accounts.get(ad_account_id)
        if state is None:
            limiter = ConcurrencyLimiter(
                self._initial,
                self._maximum,
                on_change=lambda limit: self._metrics.concurrency_limit_changed(
                    ad_account_id, limit
                ),
            )
            budget = RequestBudget(self._requests_per_minute, sleep=self._sleep)
            state = self._accounts[ad_account_id] = AccountState(ad_account_id, limiter, budget)
            self._metrics.ad_account_registered(ad_account_id, limiter.limit)
        return state

    def setup_errors(self) -> dict[str, int | None]:
        """Ad accounts currently paused by a setup error, with the HTTP status that did it."""
        return {
            account: state.setup_error.status
            for account, state in self._accounts.items()
            if state.setup_error is not None
        }

    @property
    def active_batches(self) -> int:
        return len(self._tasks)

    def held_events(self, ad_account_id: str) -> int:
        """Events of the account's submitted batches that are not finished yet."""
        return self._held.get(ad_account_id, 0)

    def batches(self, ad_account_id: str) -> list[Batch[T]]:
        """The account's unfinished batches (for finding where their events came from)."""
        return [b for b in self._tasks.values() if b.key.ad_account_id == ad_account_id]

    def submit(self, batch: Batch[T]) -> None:
        task = asyncio.create_task(self._deliver(batch, self._backoff.start()))
        self._tasks[task] = batch
        account = batch.key.ad_account_id
        self._held[account] = self._held.get(account, 0) + len(batch.events)
        task.add_done_callback(self._finished)

    async def cancel(self) -> None:
        """Abandons unfinished batches; their events stay unsettled and uncommitted."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        batch = self._tasks.pop(task)
        self._held[batch.key.ad_account_id] -= len(batch.events)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch delivery failed unexpectedly", exc_info=task.exception())

    async def _deliver(self, batch: Batch[T], retry: RetryState, attempts: int = 0) -> None:
        account = self.account(batch.key.ad_account_id)
        limiter = account.limiter
        probing = False
        try:
            while True:
                if account.setup_error is not None and not probing:
                    if account.claim_probe():
                        probing = True
                        await self._sleep(self._probe_s)
                    else:
                        await account.wait_recovered(self._probe_s)
                    continue
                await limiter.acquire()
                if account.setup_error is not None and not probing:
                    # The account failed while this batch queued for a slot: wait, don't send.
                    limiter.give_back()
                    continue
                await account.budget.acquire()
                verdict, elapsed = await self._request(batch, limiter)
                attempts += 1
                if verdict.retry_after is not None and verdict.reason == "rate_limited":
                    account.budget.hold(verdict.retry_after)
                elif verdict.exhausted_for is not None:
                    account.budget.hold(verdict.exhausted_for)
                limiter.release(elapsed, congested=verdict.kind == "retry")
                if verdict.kind == "setup_error" and self._credentials_changed(verdict):
                    # A rotated token (e.g. a Kubernetes Secret update): try it right away.
                    continue
                if verdict.kind == "setup_error":
                    if account.enter_setup_error(verdict):
                        log.error(
                            "ad account %s paused: HTTP %s %s; probing every %ss",
                            account.ad_account_id,
                            verdict.status,
                            verdict.message,
                            self._probe_s,
                        )
                        self._metrics.setup_error_changed(account.ad_account_id, verdict.status)
                    if probing:
                        await self._sleep(self._probe_s)
                    continue
                if account.recover():
                    log.warning("ad account %s accepts requests again", account.ad_account_id)
                    self._metrics.setup_error_changed(account.ad_account_id, None)
                if verdict.kind == "retry":
                    if await self._backed_off(batch, retry, verdict, attempts):
                        continue
                    return
                if verdict.kind == "request_invalid":
                    await self._bisect(batch, retry, verdict, attempts)
                    return
                self._settle(batch, verdict, attempts)
                return
        finally:
            if probing:
                account.release_probe()

    def _credentials_changed(self, verdict: Verdict) -> bool:
        refresh = self._refresh_credentials
        return verdict.status == 401 and refresh is not None and refresh()

    async def _request(self, batch: Batch[T], limiter: ConcurrencyLimiter) -> tuple[Verdict, float]:
        """Sends once, holding a slot already acquired from `limiter`."""
        metrics = self._metrics
        metrics.request_started()
        metrics.batch_sent([event.event_time for event in batch.events])
        started = time.monotonic()
        try:
            response = await self._sender.send(
                batch.key.ad_account_id, batch.key.test, batch.body()
            )
        except BaseException:
            limiter.give_back()
            metrics.request_done(batch.key.ad_account_id, "cancelled", 0.0)
            raise
        elapsed = time.monotonic() - started
        metrics.request_done(
            batch.key.ad_account_id, response.status or response.error or "error", elapsed
        )
        return classify(response, len(batch.events), self._clock()), elapsed

    async def _backed_off(
        self, batch: Batch[T], retry: RetryState, verdict: Verdict, attempts: int
    ) -> bool:
        """Sleeps before the next attempt; False (after dead-lettering) once the budget is spent."""
        delay = retry.next_delay(verdict.retry_after)
        if delay is None:
            self._storms.error(
                f"exhausted:{batch.key.ad_account_id}:{verdict.reason}",
                "retries exhausted for %d events of ad account %s after %d attempts (%s): "
                "dead-lettering them",
                len(batch.events),
                batch.key.ad_account_id,
                attempts,
                verdict.reason,
            )
            failure = Failure(
                "retries_exhausted",
                verdict.message or (verdict.reason or "retry").replace("_", " "),
                verdict.status,
                attempts,
            )
            for event, tokens in zip(batch.events, batch.tokens, strict=True):
                self._outcomes.failed(event, tokens, failure)
            return False
        self._metrics.retry_scheduled(RETRY_METRIC_REASONS[verdict.reason or "server_error"])
        log.debug("retrying %d events in %.2fs: %s", len(batch.events), delay, verdict.reason)
        await self._sleep(delay)
        return True

    async def _bisect(
        self, batch: Batch[T], retry: RetryState, verdict: Verdict, attempts: int
    ) -> None:
        if len(batch.events) == 1:
            failure = Failure("request_invalid", verdict.message, verdict.status, attempts)
            self._outcomes.failed(batch.events[0], batch.tokens[0], failure)
            return
        first, second = batch.halves()
        await asyncio.gather(
            self._deliver(first, retry, attempts), self._deliver(second, retry, attempts)
        )

    def _settle(self, batch: Batch[T], verdict: Verdict, attempts: int) -> None:
        outcomes = self._outcomes
        for event, tokens, outcome in zip(
            batch.events, batch.tokens, verdict.outcomes, strict=True
        ):
            if outcome.processed:
                outcomes.delivered(event, tokens)
            else:
                failure = Failure(
                    "rejected_by_pinterest", outcome.message, verdict.status, attempts
                )
                outcomes.failed(event, tokens, failure)


class BufferAccount:
    """Counts the events and bytes held in memory from consumption until settlement.

    `over()` says consumption must pause; `drained()` that it may resume (under the low-water
    mark, `resume_ratio` of both caps), so pausing does not flap around one threshold.

    Events set aside (`set_aside`) are left out of both checks: they belong to an ad account
    whose partitions are paused on their own, so they cannot grow, and counting them would keep
    every other account paused until that one heals.
    """

    __slots__ = (
        "aside_bytes",
        "aside_events",
        "bytes",
        "events",
        "max_bytes",
        "max_events",
        "resume_bytes",
        "resume_events",
    )

    def __init__(self, max_events: int, max_bytes: int, resume_ratio: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.resume_events = int(max_events * resume_ratio)
        self.resume_bytes = int(max_bytes * resume_ratio)
        self.events = 0
        self.bytes = 0
        self.aside_events = 0
        self.aside_bytes = 0

    def set_aside(self, events: int, size: int) -> None:
        self.aside_events = events
        self.aside_bytes = size

    def add(self, size: int, events: int = 1) -> None:
        self.events += events
        self.bytes += size

    def release(self, size: int, events: int = 1) -> None:
        self.events -= events
        self.bytes -= size

    def over(self) -> bool:
        return (
            self.events - self.aside_events >= self.max_events
            or self.bytes - self.aside_bytes >= self.max_bytes
        )

    def drained(self) -> bool:
        return (
            self.events - self.aside_events <= self.resume_events
            and self.bytes - self.aside_bytes <= self.resume_bytes
        )
