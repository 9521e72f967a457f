"""Composition root: builds every stage from Settings, forwards until told to stop, drains."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from stream.batcher import Batcher, BatchKey
from stream.dispatcher import BufferAccount, Dispatcher, Failure
from stream.dlq import DeadLetterProducer
from stream.errors import ConfigurationError, DeadLetterReason
from stream.http_server import HealthServer
from stream.metrics import UNKNOWN, Metrics
from stream.models import DeadLetter, PinterestEvent, SourceRecord
from stream.offsets import OffsetTracker, TopicPartitionKey
from stream.pinterest.client import PinterestClient
from stream.quality import quality_poller
from stream.retry import Backoff
from stream.settings import Settings, SourceSettings
from stream.source import KafkaSource
from stream.transform import Transformer

R = TypeVar("R")

log = logging.getLogger(__name__)

POLL_MAX_MESSAGES = 1000
POLL_TIMEOUT_S = 0.1
COMMIT_INTERVAL_S = 1.0
DRAIN_POLL_S = 0.01
REBALANCE_MARGIN_S = 5.0
TEST_MODE_MAX_EVENTS = 20
# Fixed per-message cost of the Python objects (record, ticket, event) beyond the bytes.
RECORD_OVERHEAD_BYTES = 600
# An ad account in setup error may hold this share of the buffer's low-water mark; beyond it
# the partitions its events come from are paused, so the other accounts keep the rest.
STALLED_SHARE = 0.5
# How often the partitions feeding a stalled account are looked up again (new ones may appear).
STALLED_RESCAN_S = 1.0
# Survivors of start-up are frozen out of the collector; these thresholds keep the young
# generation from being scanned every few hundred allocations on the hot path.
GC_THRESHOLDS = (50_000, 20, 100)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A consumed message until it settles: its offset's epoch and its bytes for the DLQ."""

    record: SourceRecord
    epoch: int
    size: int


class App:
    """The forwarder: consume → transform → batch → send → dead-letter → commit.

    Settling order guarantees at-least-once: an offset is committed only after every message
    at or below it was delivered, acknowledged by the dead-letter topic, or skipped.
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry, resilience_window_s=settings.metrics.resilience_window_s
        )
        sending = settings.sending
        self.tracker = OffsetTracker()
        self.buffer = BufferAccount(
            settings.buffer.max_events, settings.buffer.max_bytes, settings.buffer.resume_ratio
        )
        max_events = settings.batching.max_events
        if settings.pinterest.test_mode:
            # Pinterest only looks at the first 20 events of a ?test=true request.
            max_events = min(max_events, TEST_MODE_MAX_EVENTS)
        self.batcher: Batcher[Ticket] = Batcher(
            max_events,
            settings.batching.max_bytes,
            settings.batching.linger_ms / 1000,
        )
        self.transformer = Transformer(settings, time.time)
        token = settings.pinterest.token_value() or ""
        self.client = PinterestClient(
            settings.pinterest.api_base_url,
            token,
            sending.request_timeout_s,
            connections=sending.max_concurrency * max(1, len(self._accounts())),
            ca_file=settings.pinterest.ca_file,
        )
        self.dlq = DeadLetterProducer(
            settings.kafka.client_config(), settings.kafka.dead_letter_topic
        )
        self.dispatcher: Dispatcher[Ticket] = Dispatcher(
            self.client,
            self,
            Backoff(sending.backoff_initial_s, sending.backoff_max_s, sending.retry_budget_s),
            self.metrics,
            initial_concurrency=sending.initial_concurrency,
            max_concurrency=sending.max_concurrency,
            setup_error_probe_s=sending.setup_error_probe_s,
            requests_per_minute=settings.pinterest.requests_per_minute,
            refresh_credentials=self._reload_token,
        )
        self.source = KafkaSource(
            settings.kafka.client_config(),
            settings.kafka.group_id,
            sorted({s.topic for s in settings.sources}),
            self,
            on_statistics=self.metrics.kafka_statistics,
        )
        self.http = HealthServer(
            settings.metrics.host, settings.metrics.port, self.registry, self.not_ready_reasons
        )
        # Pinterest's Event Quality Score: None unless pinterest.quality.enabled.
        self.quality = quality_poller(settings, self.metrics.quality)
        self._sources: dict[str, SourceSettings] = {}
        self._default_account: dict[str, str] = {}
        for source in settings.sources:
            self._sources.setdefault(source.topic, source)
            self._default_account.setdefault(source.topic, settings.ad_account_for(source) or "")
        self._test = settings.pinterest.test_mode
        self._batch_keys: dict[str, BatchKey] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._draining = False
        self._closing = False
        self._paused = False
        self._isolated: dict[str, frozenset[TopicPartitionKey]] = {}
        # Settled by this process, for the shutdown summary.
        self._delivered = 0
        self._skipped = 0
        self._dead_lettered: dict[str, int] = {}
        self._next_rescan = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the forwarder to drain and exit (SIGTERM, SIGINT)."""
        if not self._stop.is_set():
            log.info("stopping: draining within %ss", self.settings.shutdown.grace_period_s)
        self._stop.set()

    async def run(self) -> int:
        """Runs until `stop()`; returns the process exit code."""
        loop = self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        await self.http.start()
        await self.client.start()
        await self.dlq.start()
        for account in self._accounts():
            self.dispatcher.account(account)
        self.metrics.watch_readiness(lambda: not self.not_ready_reasons())
        await self.source.start()
        if self.quality is not None:
            self.quality.start()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "forwarding; metrics on http://%s:%d/metrics",
            self.settings.metrics.host,
            self.http.port,
        )
        consume = asyncio.create_task(self._consume_loop(), name="consume")
        commits = asyncio.create_task(self._commit_loop(), name="commit")
        stopped = asyncio.create_task(self._stop.wait(), name="stop")
        await asyncio.wait({consume, stopped}, return_when=asyncio.FIRST_COMPLETED)
        self.stop()
        exit_code = 0
        try:
            await consume
        except Exception:
            log.exception("consuming failed; shutting down")
            exit_code = 1
        await self._shutdown(commits)
        return exit_code

    async def _shutdown(self, commits: asyncio.Task[None]) -> None:
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown.grace_period_s
        for batch in self.batcher.flush():
            self.dispatcher.submit(batch)
        drained = await self._until(
            lambda: not self.dispatcher.active_batches, max(0.0, deadline - loop.time())
        )
        acked = await self._until(lambda: not self.dlq.unacked, max(0.0, deadline - loop.time()))
        if not (drained and acked):
            log.warning(
                "grace period over with %d events unsettled; they will be consumed again",
                self.tracker.unsettled(),
            )
        commits.cancel()
        await asyncio.gather(commits, return_exceptions=True)
        await self._commit()
        self._closing = True
        if self.quality is not None:
            await self.quality.stop()
        await self.dispatcher.cancel()
        await self.source.close()
        await self.dlq.close()
        await self.client.close()
        await self.http.stop()
        dead_lettered = sum(self._dead_lettered.values())
        log.info(
            "stopped: %d events delivered, %d dead-lettered%s, %d skipped",
            self._delivered,
            dead_lettered,
            " (" + ", ".join(f"{r} {n}" for r, n in sorted(self._dead_lettered.items())) + ")"
            if dead_lettered
            else "",
            self._skipped,
        )

    # --- consuming -----------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        source = self.source
        buffer = self.buffer
        prefetch: asyncio.Task[list[SourceRecord]] | None = None
        try:
            while not self._stop.is_set():
                self._apply_backpressure()
                if prefetch is None:
                    records = await source.poll(POLL_MAX_MESSAGES, POLL_TIMEOUT_S)
                else:
                    records = await prefetch
                    prefetch = None
                if (
                    not self._paused
                    and buffer.events + 2 * POLL_MAX_MESSAGES < buffer.max_events
                    and not self._stop.is_set()
                ):
                    # The consumer thread fetches the next batch while this one is transformed;
                    # only with room for it, so the buffer cap is still crossed by one poll at most.
                    prefetch = asyncio.create_task(source.poll(POLL_MAX_MESSAGES, POLL_TIMEOUT_S))
                if records:
                    self._ingest(records)
                for batch in self.batcher.due():
                    self.dispatcher.submit(batch)
                self.metrics.buffer_changed(buffer.events, buffer.bytes)
        finally:
            if prefetch is not None:
                # Untracked records are simply consumed again by whoever owns them next.
                await asyncio.gather(prefetch, return_exceptions=True)

    def _apply_backpressure(self) -> None:
        self._isolate_stalled_accounts()
        buffer = self.buffer
        if not self._paused and buffer.over():
            self._paused = True
            self.source.pause()
            log.info("buffer full (%d events, %d bytes): pausing", buffer.events, buffer.bytes)
        elif self._paused and buffer.drained():
            self._paused = False
            self.source.resume()
            log.info("buffer drained (%d events): resuming", buffer.events)
        self.metrics.partitions_paused(self.source.paused_partitions)

    def _isolate_stalled_accounts(self) -> None:
        """Pauses just the partitions feeding an ad account in setup error once it holds its
        share of the buffer, so working accounts keep flowing; resumes them once it heals.

        A partition that also carries events of working accounts is paused too: its offsets
        cannot be committed past the stalled events anyway, and its memory must stay bounded.
        """
        dispatcher = self.dispatcher
        stalled = dispatcher.setup_errors()
        if not stalled and not self._isolated:
            return
        share = int(self.buffer.resume_events * STALLED_SHARE)
        over = {account for account in stalled if dispatcher.held_events(account) >= share}
        now = time.monotonic()
        if over == self._isolated.keys() and now < self._next_rescan:
            return
        self._next_rescan = now + STALLED_RESCAN_S
        isolated: dict[str, frozenset[TopicPartitionKey]] = {}
        aside_events = aside_bytes = 0
        for account in over:
            partitions: set[TopicPartitionKey] = set()
            events = size = 0
            for batch in dispatcher.batches(account):
                for tokens in batch.tokens:
                    for ticket in tokens:
                        partitions.add((ticket.record.topic, ticket.record.partition))
                        events += 1
                        size += ticket.size
            isolated[account] = frozenset(partitions)
            if events > share:
                # Only what it holds beyond its share stops counting against the others.
                aside_events += events - share
                aside_bytes += size * (events - share) // events
            if account not in self._isolated:
                log.warning(
                    "ad account %s is paused by a setup error and holds %d events: pausing "
                    "the %d partitions they come from (%s); other accounts keep flowing",
                    account,
                    events,
                    len(partitions),
                    ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)),
                )
        for account in self._isolated.keys() - isolated.keys():
            log.info("ad account %s works again: resuming its partitions", account)
        self._isolated = isolated
        self.buffer.set_aside(aside_events, aside_bytes)
        self.source.hold(frozenset().union(*isolated.values()))

    def _ingest(self, records: list[SourceRecord]) -> None:
        tracker = self.tracker
        buffer = self.buffer
        batcher = self.batcher
        submit = self.dispatcher.submit
        transform = self.transformer.transform
        sources = self._sources
        keys = self._batch_keys
        counts: dict[str, int] = {}
        held = held_bytes = 0
        try:
            for record, epoch in zip(records, tracker.track_all(records), strict=True):
                if epoch is None:
                    continue
                topic = record.topic
                counts[topic] = counts.get(topic, 0) + 1
                value = record.value
                # The raw value stays for the DLQ and its encoded event is about as large again.
                size = RECORD_OVERHEAD_BYTES + (len(value) * 2 if value else 0)
                held += 1
                held_bytes += size
                ticket = Ticket(record, epoch, size)
                # Transformer.transform never raises: bad input comes back as a DeadLetter.
                result = transform(sources[topic], value, record.timestamp_ms)
                if type(result) is PinterestEvent:
                    account = result.ad_account_id or self._default_account[topic]
                    key = keys.get(account)
                    if key is None:
                        key = keys[account] = BatchKey(account, self._test)
                    batch = batcher.add(key, result, ticket)
                    if batch is not None:
                        submit(batch)
                elif type(result) is DeadLetter:
                    self._dead_letter(ticket, result.reason, result.message, None, 0)
                else:
                    self._settle(ticket)
                    self._skipped += 1
                    self.metrics.event_skipped()
        finally:
            # Added once per poll; nothing reads the account until this returns.
            buffer.add(held_bytes, held)
        for topic, count in counts.items():
            self.metrics.events_consumed_from(topic, count)

    # --- settling (the dispatcher's Outcomes) --------------------------------------------------

    def delivered(self, event: PinterestEvent, tokens: tuple[Ticket, ...]) -> None:
        now = time.time()
        event_delivered = self.metrics.event_delivered
        settle = self.tracker.settle
        size = 0
        for ticket in tokens:
            record = ticket.record
            event_delivered(
                event.event_name,
                event.action_source,
                event.signals,
                event.event_time,
                record.timestamp_ms,
                now,
            )
            # _settle inlined and the buffer released once: this runs for every delivered event.
            settle(record.topic, record.partition, ticket.epoch, record.offset)
            size += ticket.size
        self._delivered += len(tokens)
        self.buffer.release(size, len(tokens))

    def failed(self, event: PinterestEvent, tokens: tuple[Ticket, ...], failure: Failure) -> None:
        for ticket in tokens:
            self._dead_letter(
                ticket,
                failure.reason,
                failure.message,
                failure.status,
                failure.attempts,
                event.event_name,
                event.action_source,
            )

    def _dead_letter(
        self,
        ticket: Ticket,
        reason: DeadLetterReason,
        message: str,
        status: int | None,
        attempts: int,
        event_name: str = UNKNOWN,
        action_source: str = UNKNOWN,
    ) -> None:
        def acked() -> None:
            self.metrics.event_dead_lettered(reason, event_name, action_source)
            self._dead_lettered[reason] = self._dead_lettered.get(reason, 0) + 1
            self._settle(ticket)

        self.dlq.send(ticket.record, reason, message, acked, status=status, attempts=attempts)

    def _settle(self, ticket: Ticket) -> None:
        record = ticket.record
        self.tracker.settle(record.topic, record.partition, ticket.epoch, record.offset)
        self.buffer.release(ticket.size)

    # --- committing ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self._commit()

    async def _commit(self) -> None:
        generation = self.source.generation
        positions = self.tracker.commit_positions()
        if positions and await self.source.commit(positions, generation):
            self.tracker.mark_committed(positions)

    # --- rebalancing (the source's RebalanceListener; called on the consumer thread) -----------

    def assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self._on_loop(self._assigned(partitions))

    def revoked(self, partitions: list[TopicPartitionKey]) -> Mapping[TopicPartitionKey, int]:
        positions = self._on_loop(self._revoked(partitions))
        return positions or {}

    def lost(self, partitions: list[TopicPartitionKey]) -> None:
        self._on_loop(self._lost(partitions))

    def _on_loop(self, work: Coroutine[Any, Any, R]) -> R | None:
        """Runs `work` on the event loop and waits for it (the loop owns all pipeline state)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            work.close()
            return None
        future = asyncio.run_coroutine_threadsafe(work, loop)
        try:
            return future.result(self.settings.shutdown.grace_period_s + REBALANCE_MARGIN_S)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            # Committing nothing is the safe answer: the next owner re-reads from the last commit.
            log.error("rebalance handling timed out; nothing committed for these partitions")
            future.cancel()
            return None

    async def _assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self.tracker.assign(partitions)
        self.metrics.partitions_assigned(len(self.tracker.assigned()))

    async def _revoked(self, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        keys = set(partitions)
        if not self._closing:
            # Partial batches may hold these partitions' events: send them now, then give the
            # in-flight work a bounded time to settle before committing and letting go.
            for batch in self.batcher.flush():
                self.dispatcher.submit(batch)
            await self._until(
                lambda: not self.tracker.unsettled(keys), self.settings.shutdown.grace_period_s
            )
        positions = self.tracker.revoke(keys)
        self._forget(keys)
        return positions

    async def _lost(self, partitions: list[TopicPartitionKey]) -> None:
        self.tracker.lose(partitions)
        self._forget(set(partitions))

    @staticmethod
    async def _until(condition: Callable[[], bool], limit_s: float) -> bool:
        """Polls `condition` until true or `limit_s` passed; settlements have no single event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not condition():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        self.metrics.partitions_revoked(keys)
        self.metrics.partitions_assigned(len(self.tracker.assigned()))

    # --- credentials ---------------------------------------------------------------------------

    def _reload_token(self) -> bool:
        """Re-reads pinterest.access_token_file after a 401; True when it holds a new token."""
        if self.settings.pinterest.access_token_file is None:
            return False
        try:
            token = self.settings.pinterest.token_value()
        except ConfigurationError as exc:
            # Mid-rotation the file can be briefly missing or empty: keep the current token.
            log.warning("cannot re-read the access token: %s", exc)
            return False
        if token is None or not self.client.set_token(token):
            return False
        log.info("using the new access token from pinterest.access_token_file")
        return True

    # --- readiness -----------------------------------------------------------------------------

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self._draining:
            reasons.append("draining")
        if not self.source.assignment:
            reasons.append("no partitions assigned")
        for account, status in self.dispatcher.setup_errors().items():
            reasons.append(f"ad account {account} paused by a setup error (HTTP {status})")
        if not self.dlq.healthy:
            reasons.append("dead-letter topic not acknowledging")
        return reasons

    def _accounts(self) -> list[str]:
        accounts = {self.settings.ad_account_for(source) for source in self.settings.sources}
        return sorted(account for account in accounts if account)
