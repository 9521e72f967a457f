"""Sends batches with bounded concurrency per ad account, retrying and settling every event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from stream.batcher import Batch
from stream.dlq.contract import DeadLetterReason
from stream.logs import RateLimitedLogger
from stream.metrics import Metrics
from stream.models import PinterestEvent
from stream.pacing import ConcurrencyLimiter, RequestBudget
from stream.pinterest.classify import ApiResponse, Classification, EventOutcome, classify
from stream.policy import Bisect, Decision, GiveUp, Pause, Reject, Retry, Settle, decide, hold
from stream.retry import Backoff, RetryState

T = TypeVar("T")
K = TypeVar("K")
T_contra = TypeVar("T_contra", contravariant=True)

log = logging.getLogger(__name__)


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

    def delivered(
        self,
        ad_account_id: str,
        events: Sequence[PinterestEvent],
        tokens: Sequence[tuple[T_contra, ...]],
    ) -> None:
        """Pinterest processed these events of one answer (`tokens[i]` are `events[i]`'s)."""

    def failed(
        self, event: PinterestEvent, tokens: tuple[T_contra, ...], failure: Failure
    ) -> None: ...


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
        self.setup_error: Classification | None = None
        self._probing = False
        self._recovered = asyncio.Event()

    def enter_setup_error(self, answer: Classification) -> bool:
        """Records the error; True when the account was fine until now."""
        first = self.setup_error is None
        self.setup_error = answer
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

    Per batch: wait for a concurrency slot and the request budget → send → classify → do what
    `stream.policy.decide` says. Per-event answers settle events (processed → delivered,
    failed → dead letter); retriable failures back off and resend the batch until its events
    would be too old for Pinterest (each then dead-lettered as too_old) or the optional retry
    budget is spent (retries_exhausted); a request refused as a whole (400) is bisected down to
    the offending events; setup errors pause the account and never dead-letter. Processed
    events are never sent again.

    State and metric labels exist only for `ad_accounts` (None: any account): a batch for
    another one is dead-lettered as invalid_event without a request.
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
        ad_accounts: Collection[str] | None = None,
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
        self._allowed = None if ad_accounts is None else frozenset(ad_accounts)
        self._clock = clock
        self._sleep = sleep
        self._accounts: dict[str, AccountState] = {}
        self._share = 1.0
        self._storms = RateLimitedLogger(log)
        self._tasks: dict[asyncio.Task[None], Batch[T]] = {}
        self._held: dict[str, int] = {}

    def account(self, ad_account_id: str) -> AccountState:
        """The account's state, created on first use; KeyError for an account not configured."""
        state = self._accounts.get(ad_account_id)
        if state is None:
            if not self.accepts(ad_account_id):
                raise KeyError("ad account is not configured")
            limiter = ConcurrencyLimiter(
                self._initial,
                self._maximum,
                on_change=lambda limit: self._metrics.concurrency_limit_changed(
                    ad_account_id, limit
                ),
            )
            budget = RequestBudget(self._requests_per_minute, sleep=self._sleep, share=self._share)
            state = self._accounts[ad_account_id] = AccountState(ad_account_id, limiter, budget)
            self._metrics.ad_account_registered(ad_account_id, limiter.limit)
        return state

    def set_share(self, share: float) -> None:
        """This member's share of the consumer group's partitions: each account's request
        budget is the fleet's budget times it, so replicas together stay within one budget."""
        self._share = share
        for state in self._accounts.values():
            state.budget.set_share(share)

    def accepts(self, ad_account_id: str) -> bool:
        allowed = self._allowed
        return allowed is None or ad_account_id in allowed

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

    def partitions_feeding(
        self, ad_account_id: str, origin: Callable[[T], tuple[K, int]]
    ) -> tuple[frozenset[K], int, int]:
        """Where the account's unfinished events came from: the distinct keys `origin` gives
        their tokens (their partitions), how many tokens there are and their summed sizes."""
        keys: set[K] = set()
        events = size = 0
        for batch in self._tasks.values():
            if batch.key.ad_account_id != ad_account_id:
                continue
            for tokens in batch.tokens:
                for token in tokens:
                    key, token_size = origin(token)
                    keys.add(key)
                    events += 1
                    size += token_size
        return frozenset(keys), events, size

    def submit(self, batch: Batch[T]) -> None:
        account = batch.key.ad_account_id
        if self.accepts(account):
            task = asyncio.create_task(self._deliver(batch, self._backoff.start()))
            self._held[account] = self._held.get(account, 0) + len(batch.events)
        else:
            task = asyncio.create_task(self._refuse(batch))
        self._tasks[task] = batch
        task.add_done_callback(self._finished)

    async def cancel(self) -> None:
        """Abandons unfinished batches; their events stay unsettled and uncommitted."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        batch = self._tasks.pop(task)
        account = batch.key.ad_account_id
        if account in self._held:
            self._held[account] -= len(batch.events)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch delivery failed unexpectedly", exc_info=task.exception())

    async def _refuse(self, batch: Batch[T]) -> None:
        """Dead-letters a batch for an account outside the configured set, which the mapper
        already refuses: no request, no per-account state, no metric label."""
        self._storms.error(
            "unconfigured-account",
            "dead-lettering %d events for an ad account that is not configured",
            len(batch.events),
        )
        failure = Failure(
            "invalid_event",
            "ad_account_id: not one of the configured ad accounts (pinterest.ad_account_id, "
            "sources[].ad_account_id, pinterest.allowed_ad_accounts)",
            None,
            0,
        )
        for event, tokens in zip(batch.events, batch.tokens, strict=True):
            self._outcomes.failed(event, tokens, failure)

    async def _deliver(self, batch: Batch[T], retry: RetryState, attempts: int = 0) -> None:
        account = self.account(batch.key.ad_account_id)
        limiter = account.limiter
        probing = False
        remaining: Batch[T] | None = batch
        try:
            while remaining is not None:
                batch = remaining
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
                retry.attempt()
                answer, elapsed = await self._request(batch, limiter)
                attempts += 1
                held = hold(answer)
                if held is not None:
                    account.budget.hold(held)
                if answer.server_limit is not None:
                    account.budget.observe_server_limit(answer.server_limit)
                limiter.release(elapsed, congested=answer.kind.retriable)
                decision = decide(answer, batch.events, retry, self._clock())
                if isinstance(decision, Pause):
                    # A rotated token (e.g. a Kubernetes Secret update) is tried right away.
                    if not self._credentials_changed(answer):
                        self._pause(account, answer)
                        if probing:
                            await self._sleep(self._probe_s)
                    continue
                if account.recover():
                    log.warning("ad account %s accepts requests again", account.ad_account_id)
                    self._metrics.setup_error_changed(account.ad_account_id, None)
                remaining = await self._carry_out(decision, batch, retry, answer, attempts)
        finally:
            if probing:
                account.release_probe()

    async def _carry_out(
        self,
        decision: Decision,
        batch: Batch[T],
        retry: RetryState,
        answer: Classification,
        attempts: int,
    ) -> Batch[T] | None:
        """Does what the policy decided; returns what is to be sent again, if anything."""
        match decision:
            case Retry(delay=delay, reason=reason, expired=expired, expired_message=message):
                if expired:
                    batch = self._age_out(batch, expired, message, answer, attempts)
                self._metrics.retry_scheduled(reason)
                log.debug("retrying %d events in %.2fs: %s", len(batch.events), delay, reason)
                await self._sleep(delay)
                return batch
            case GiveUp(reason=reason, message=message):
                self._storms.error(
                    f"gave-up:{batch.key.ad_account_id}:{reason}:{answer.reason}",
                    "gave up retrying %d events of ad account %s after %d attempts (%s): "
                    "dead-lettering them as %s",
                    len(batch.events),
                    batch.key.ad_account_id,
                    attempts,
                    answer.reason,
                    reason,
                )
                failure = Failure(reason, message, answer.status, attempts)
                for event, tokens in zip(batch.events, batch.tokens, strict=True):
                    self._outcomes.failed(event, tokens, failure)
            case Bisect():
                first, second = batch.halves()
                await asyncio.gather(
                    self._deliver(first, retry.split(), attempts),
                    self._deliver(second, retry.split(), attempts),
                )
            case Reject(reason=reason, message=message):
                failure = Failure(reason, message, answer.status, attempts)
                self._outcomes.failed(batch.events[0], batch.tokens[0], failure)
            case Settle(reason=reason):
                self._settle(batch, answer, reason, attempts)
        return None

    def _age_out(
        self,
        batch: Batch[T],
        expired: tuple[int, ...],
        message: str,
        answer: Classification,
        attempts: int,
    ) -> Batch[T]:
        """Dead-letters the `expired` events as too_old; returns the batch without them."""
        self._storms.warning(
            f"too-old:{batch.key.ad_account_id}",
            "%d events of ad account %s became too old for Pinterest while retrying (%s): "
            "dead-lettering them as too_old",
            len(expired),
            batch.key.ad_account_id,
            answer.reason,
        )
        failure = Failure("too_old", message, answer.status, attempts)
        gone = set(expired)
        events: list[PinterestEvent] = []
        tokens: list[tuple[T, ...]] = []
        for index, (event, copies) in enumerate(zip(batch.events, batch.tokens, strict=True)):
            if index in gone:
                self._outcomes.failed(event, copies, failure)
            else:
                events.append(event)
                tokens.append(copies)
        return Batch(batch.key, tuple(events), tuple(tokens))

    def _pause(self, account: AccountState, answer: Classification) -> None:
        if account.enter_setup_error(answer):
            log.error(
                "ad account %s paused: HTTP %s %s; probing every %ss",
                account.ad_account_id,
                answer.status,
                answer.message,
                self._probe_s,
            )
            self._metrics.setup_error_changed(account.ad_account_id, answer.status)

    def _credentials_changed(self, answer: Classification) -> bool:
        refresh = self._refresh_credentials
        return answer.status == 401 and refresh is not None and refresh()

    async def _request(
        self, batch: Batch[T], limiter: ConcurrencyLimiter
    ) -> tuple[Classification, float]:
        """Sends once, holding a slot already acquired from `limiter`."""
        metrics = self._metrics
        metrics.request_started()
        metrics.batch_sent(batch.events)
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

    def _warned(self, account: str, outcome: EventOutcome, events: int) -> None:
        self._metrics.pinterest_warned(account, outcome.warnings, events)
        for warning in outcome.warnings:
            # Pinterest's text names fields and event names, never user data: a sample is kept.
            self._storms.info(
                f"warning:{account}:{warning}",
                "Pinterest processed an event of ad account %s with a warning (%s): %s",
                account,
                warning,
                outcome.message,
                count=events,
            )

    def _settle(
        self, batch: Batch[T], answer: Classification, reason: DeadLetterReason, attempts: int
    ) -> None:
        outcomes = self._outcomes
        account = batch.key.ad_account_id
        answers = answer.outcomes
        # Counted by identity in C: an answer holds a few distinct outcomes (PROCESSED, one per
        # warning note, one per failure), so nothing below runs per event unless one failed.
        counts = Counter(map(id, answers))
        distinct = dict(zip(map(id, answers), answers, strict=True))
        if len(answers) == len(batch.events) and all(o.processed for o in distinct.values()):
            outcomes.delivered(account, batch.events, batch.tokens)
        else:
            delivered = []
            delivered_tokens = []
            for event, tokens, outcome in zip(batch.events, batch.tokens, answers, strict=True):
                if outcome.processed:
                    delivered.append(event)
                    delivered_tokens.append(tokens)
                else:
                    failure = Failure(reason, outcome.message, answer.status, attempts)
                    outcomes.failed(event, tokens, failure)
            if delivered:
                outcomes.delivered(account, delivered, delivered_tokens)
        # Warned events are counted and logged once per distinct note, not per event.
        for key, outcome in distinct.items():
            if outcome.processed and outcome.warnings:
                self._warned(account, outcome, counts[key])
