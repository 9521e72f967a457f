"""Takes one poll of records through transform into batches, tracked, settled or accounted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from operator import attrgetter

from stream.backpressure import BufferAccount
from stream.batcher import Batch, Batcher, BatchKey
from stream.identity.state import IdentityState
from stream.metrics import Metrics
from stream.models import DeadLetter, PinterestEvent, SourceRecord
from stream.settings import Settings, SourceSettings
from stream.settlement import Settlement
from stream.transform import Transformer

# Per-message RSS of what is held beyond the raw value and the encoded event (record, event,
# offset, batch slot): 720-950 B measured by benchmarks/bench_buffer_memory.py.
RECORD_OVERHEAD_BYTES = 900
# A poll is transformed in slices of about this many bytes, yielding to the event loop between
# them: 1,000 messages near kafka.max_message_bytes would otherwise hold it (and /healthz) for
# seconds. The worst messages cost < 50 ms of CPU per MB (benchmarks/bench_worst_message.py).
INGEST_SLICE_BYTES = 4 * 1024 * 1024
_VALUE = attrgetter("value")


class Ingest:
    """The hot path from consumed records to open batches: each record is tracked (its offset,
    and its epoch and size set on it), transformed, then batched, dead-lettered or skipped, and
    held in the buffer account until it settles."""

    def __init__(
        self,
        settings: Settings,
        transformer: Transformer,
        batcher: Batcher[SourceRecord],
        submit: Callable[[Batch[SourceRecord]], None],
        settlement: Settlement,
        buffer: BufferAccount,
        metrics: Metrics,
        identities: IdentityState | None = None,
    ) -> None:
        """`identities` holds the stores of the partitions of sources with `enrich: identity`."""
        self._transformer = transformer
        self._batcher = batcher
        self._submit = submit
        self._settlement = settlement
        self._buffer = buffer
        self._metrics = metrics
        self._sources: dict[str, SourceSettings] = {}
        self._default_account: dict[str, str] = {}
        for source in settings.sources:
            self._sources.setdefault(source.topic, source)
            self._default_account.setdefault(source.topic, settings.ad_account_for(source) or "")
        self._test = settings.pinterest.test_mode
        self._batch_keys: dict[str, BatchKey] = {}
        self._stores = identities.stores if identities is not None else None

    async def poll(self, records: list[SourceRecord]) -> None:
        """Ingests one poll in slices of at most INGEST_SLICE_BYTES, yielding in between."""
        # One C-level pass over the poll; a usual poll is a single slice.
        if sum(map(len, filter(None, map(_VALUE, records)))) <= INGEST_SLICE_BYTES:
            self._slice(records)
            return
        start = size = 0
        for index, record in enumerate(records):
            value_bytes = len(record.value or b"")
            if size + value_bytes > INGEST_SLICE_BYTES and index > start:
                # Records are tracked when their slice is ingested, so a rebalance during the
                # pause leaves the revoked partitions' records unprocessed, as it should.
                self._slice(records[start:index])
                await asyncio.sleep(0)
                start, size = index, 0
            size += value_bytes
        self._slice(records[start:])

    def _slice(self, records: list[SourceRecord]) -> None:
        settlement = self._settlement
        dead_letter = settlement.dead_letter
        buffer = self._buffer
        batcher = self._batcher
        submit = self._submit
        transform = self._transformer.transform
        sources = self._sources
        keys = self._batch_keys
        stores = self._stores
        counts: dict[str, int] = {}
        held = held_bytes = 0
        try:
            for record, epoch in zip(records, settlement.track(records), strict=True):
                if epoch is None:
                    continue
                topic = record.topic
                counts[topic] = counts.get(topic, 0) + 1
                value = record.value
                # Transformer.transform never raises: bad input comes back as a DeadLetter.
                if stores is None:
                    result = transform(sources[topic], value, record.timestamp_ms)
                else:
                    partition = record.partition
                    store = stores.get((topic, partition))
                    result = transform(sources[topic], value, record.timestamp_ms, store, partition)
                # Held until settled: the raw value (for the DLQ), the encoded event and the
                # objects around them.
                size = RECORD_OVERHEAD_BYTES + (len(value) if value else 0)
                if type(result) is PinterestEvent:
                    size += len(result.body)
                held += 1
                held_bytes += size
                record.epoch = epoch
                record.size = size
                if type(result) is PinterestEvent:
                    account = result.ad_account_id or self._default_account[topic]
                    key = keys.get(account)
                    if key is None:
                        key = keys[account] = BatchKey(account, self._test)
                    batch = batcher.add(key, result, record)
                    if batch is not None:
                        submit(batch)
                elif type(result) is DeadLetter:
                    dead_letter(record, result.reason, result.message, None, 0)
                else:
                    settlement.skipped(record)
        finally:
            # Added once per poll; nothing reads the account until this returns.
            buffer.add(held_bytes, held)
        for topic, count in counts.items():
            self._metrics.events_consumed_from(topic, count)
