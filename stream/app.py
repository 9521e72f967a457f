"""Composition root: builds every stage from Settings, forwards until told to stop, drains."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

from prometheus_client import CollectorRegistry

from stream.backpressure import Backpressure, BufferAccount
from stream.batcher import Batcher
from stream.dispatcher import Dispatcher
from stream.dlq.producer import DeadLetterProducer
from stream.errors import ConfigurationError
from stream.http_server import HealthServer
from stream.identity.state import IdentityRebalance, IdentityState
from stream.ingest import Ingest
from stream.metrics import Metrics
from stream.models import SourceRecord
from stream.pinterest.client import PinterestClient
from stream.quality import quality_poller
from stream.retry import Backoff
from stream.settings import Settings
from stream.settlement import Settlement, wait_until
from stream.source import KafkaSource
from stream.transform import Transformer

log = logging.getLogger(__name__)

POLL_MAX_MESSAGES = 1000
POLL_TIMEOUT_S = 0.1
TEST_MODE_MAX_EVENTS = 20
# Survivors of start-up are frozen out of the collector; these thresholds keep the young
# generation from being scanned every few hundred allocations on the hot path.
GC_THRESHOLDS = (50_000, 20, 100)


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
        self.buffer = BufferAccount(
            settings.buffer.max_events, settings.buffer.max_bytes, settings.buffer.resume_ratio
        )
        max_events = settings.batching.max_events
        if settings.pinterest.test_mode:
            # Pinterest only looks at the first 20 events of a ?test=true request.
            max_events = min(max_events, TEST_MODE_MAX_EVENTS)
        self.batcher: Batcher[SourceRecord] = Batcher(
            max_events,
            settings.batching.max_bytes,
            settings.batching.linger_ms / 1000,
        )
        self.transformer = Transformer(settings, time.time)
        self.metrics.watch_transformer(
            self.transformer.normalized,
            self.transformer.ldp_without_state,
            lambda: self.transformer.truncated,
        )
        token = settings.pinterest.token_value() or ""
        self.client = PinterestClient(
            settings.pinterest.api_base_url,
            token,
            sending.request_timeout_s,
            connections=sending.max_concurrency * max(1, len(self._accounts())),
            ca_file=settings.pinterest.ca_file,
            ca_file_only=settings.pinterest.ca_file_only,
        )
        reread_password = settings.kafka.password_file_reader()
        self.dlq = DeadLetterProducer(
            settings.kafka.client_config(),
            settings.kafka.dead_letter_topic,
            self.metrics,
            reread_password=reread_password,
        )
        self.source = KafkaSource(
            settings.kafka.client_config(),
            settings.kafka.group_id,
            sorted({s.topic for s in settings.sources}),
            on_statistics=self.metrics.kafka_statistics,
            reread_password=reread_password,
        )
        # Identity enrichment's stores and changelogs: None unless a source has `enrich: identity`.
        self.identities = IdentityState(settings) if settings.enriched_topics() else None
        self.settlement = Settlement(
            self.source,
            self.dlq,
            self.metrics,
            self.buffer,
            self._flush,
            settings.shutdown.grace_period_s,
            before_commit=self.identities.flushed if self.identities is not None else None,
        )
        self.dispatcher: Dispatcher[SourceRecord] = Dispatcher(
            self.client,
            self.settlement,
            Backoff(sending.backoff_initial_s, sending.backoff_max_s, sending.retry_budget_s),
            self.metrics,
            initial_concurrency=sending.initial_concurrency,
            max_concurrency=sending.max_concurrency,
            setup_error_probe_s=sending.setup_error_probe_s,
            requests_per_minute=settings.pinterest.requests_per_minute,
            refresh_credentials=self._reload_token,
            ad_accounts=settings.configured_ad_accounts(),
        )
        self.backpressure: Backpressure[SourceRecord] = Backpressure(
            self.buffer, self.source, self.dispatcher, self.metrics, SourceRecord.origin
        )
        self.http = HealthServer(
            settings.metrics.host,
            settings.metrics.port,
            self.registry,
            self.not_ready_reasons,
            self.degradations,
        )
        # Pinterest's Event Quality Score: None unless pinterest.quality.enabled.
        self.quality = quality_poller(settings, self.metrics.quality)
        self.ingest = Ingest(
            settings,
            self.transformer,
            self.batcher,
            self.dispatcher.submit,
            self.settlement,
            self.buffer,
            self.metrics,
            self.identities,
        )
        if self.identities is not None:
            self.metrics.watch_identities(self.transformer.profiles, self.identities)
        self._stop = asyncio.Event()
        self._draining = False

    # --- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Asks the forwarder to drain and exit (SIGTERM, SIGINT)."""
        if not self._stop.is_set():
            log.info("stopping: draining within %ss", self.settings.shutdown.grace_period_s)
        self._stop.set()

    async def run(self) -> int:
        """Runs until `stop()`; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        await self.http.start()
        await self.client.start()
        await self.dlq.start()
        for account in self._accounts():
            self.dispatcher.account(account)
        self.metrics.watch_readiness(lambda: not self.not_ready_reasons())
        if self.identities is None:
            await self.source.start(self.settlement)
        else:
            await asyncio.to_thread(self.identities.ensure_changelogs)
            flush_s = self.settings.shutdown.grace_period_s
            await self.source.start(IdentityRebalance(self.settlement, self.identities, flush_s))
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
        self.settlement.start()
        consume = asyncio.create_task(self._consume_loop(), name="consume")
        stopped = asyncio.create_task(self._stop.wait(), name="stop")
        await asyncio.wait({consume, stopped}, return_when=asyncio.FIRST_COMPLETED)
        self.stop()
        exit_code = 0
        try:
            await consume
        except Exception:
            log.exception("consuming failed; shutting down")
            exit_code = 1
        await self._shutdown()
        return exit_code

    async def _shutdown(self) -> None:
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown.grace_period_s
        self._flush()
        drained = await wait_until(
            lambda: not self.dispatcher.active_batches, max(0.0, deadline - loop.time())
        )
        acked = await wait_until(lambda: not self.dlq.unacked, max(0.0, deadline - loop.time()))
        if not (drained and acked):
            log.warning(
                "grace period over with %d events unsettled; they will be consumed again",
                self.settlement.unsettled(),
            )
        await self.settlement.close()
        if self.quality is not None:
            await self.quality.stop()
        await self.dispatcher.cancel()
        await self.source.close()
        if self.identities is not None:
            await asyncio.to_thread(self.identities.close)
        await self.dlq.close()
        await self.client.close()
        await self.http.stop()
        log.info("stopped: %s", self.settlement.summary())

    def _flush(self) -> None:
        """Sends every open batch now (draining, or before partitions are revoked)."""
        for batch in self.batcher.flush():
            self.dispatcher.submit(batch)

    # --- consuming -----------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        source = self.source
        buffer = self.buffer
        backpressure = self.backpressure
        prefetch: asyncio.Task[list[SourceRecord]] | None = None
        share = 1.0
        try:
            while not self._stop.is_set():
                backpressure.apply()
                if prefetch is None:
                    records = await source.poll(POLL_MAX_MESSAGES, POLL_TIMEOUT_S)
                else:
                    records = await prefetch
                    prefetch = None
                # A rebalance happens inside a poll, before it returns the new partitions'
                # records: the requests they lead to already count against the new share.
                if source.partition_share != share:
                    share = source.partition_share
                    self.dispatcher.set_share(share)
                if (
                    not backpressure.paused
                    and buffer.events + 2 * POLL_MAX_MESSAGES < buffer.max_events
                    and not self._stop.is_set()
                ):
                    # The consumer thread fetches the next batch while this one is transformed;
                    # only with room for it, so the buffer cap is still crossed by one poll at most.
                    prefetch = asyncio.create_task(source.poll(POLL_MAX_MESSAGES, POLL_TIMEOUT_S))
                if records:
                    await self.ingest.poll(records)
                for batch in self.batcher.due():
                    self.dispatcher.submit(batch)
                self.metrics.buffer_changed(buffer.events, buffer.bytes)
        finally:
            if prefetch is not None:
                # Untracked records are simply consumed again by whoever owns them next.
                await asyncio.gather(prefetch, return_exceptions=True)

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
        """DESIGN §5: ready once the consumer joined its group (with or without partitions)
        and until draining; a replica without partitions is ready, so rollouts never hang."""
        reasons = []
        if self._draining:
            reasons.append("draining")
        if not self.source.joined:
            reasons.append("not yet joined to consumer group " + self.settings.kafka.group_id)
        return reasons

    def degradations(self) -> list[str]:
        """What needs an operator while the replica stays ready (see `HealthServer`)."""
        degraded = [
            f"ad account {account} paused by a setup error (HTTP {status})"
            for account, status in self.dispatcher.setup_errors().items()
        ]
        if not self.dlq.healthy:
            degraded.append("dead-letter topic not acknowledging")
        return degraded

    def _accounts(self) -> list[str]:
        accounts = {self.settings.ad_account_for(source) for source in self.settings.sources}
        return sorted(account for account in accounts if account)
