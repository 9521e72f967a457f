"""Ingest: each record of a poll is tracked, transformed, then batched, dead-lettered or
skipped, and held in the buffer account until it settles."""

from __future__ import annotations

import time

import orjson
from prometheus_client import CollectorRegistry

from stream.batcher import Batch, Batcher
from stream.ingest import RECORD_OVERHEAD_BYTES, Ingest
from stream.metrics import Metrics
from stream.models import SourceRecord
from stream.settings import Settings
from stream.transform import Transformer
from tests.unit.test_settlement import NO_TIMEOUT_S, TP, Harness

NOW = time.time()


def segment_page(message_id: str) -> bytes:
    return orjson.dumps(
        {
            "type": "page",
            "messageId": message_id,
            "timestamp": NOW,
            "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0"},
        }
    )


async def test_a_poll_is_batched_dead_lettered_or_skipped_and_held_until_settled() -> None:
    harness = Harness(NO_TIMEOUT_S)
    harness.settlement.start()
    await harness.assign(TP)
    settings = Settings(pinterest={"ad_account_id": "42"}, sources=[{"topic": TP[0]}])
    batcher: Batcher[SourceRecord] = Batcher(1000, 4 * 1024 * 1024, 60.0)
    submitted: list[Batch[SourceRecord]] = []
    ingest = Ingest(
        settings,
        Transformer(settings, clock=lambda: NOW),
        batcher,
        submitted.append,
        harness.settlement,
        harness.buffer,
        Metrics(CollectorRegistry()),
    )
    values = [segment_page("m-1"), b"{not json", orjson.dumps({"type": "identify"})]
    await ingest.poll([SourceRecord(*TP, offset, None, v, None) for offset, v in enumerate(values)])

    (batch,) = list(batcher.flush())
    assert [event.event_id for event in batch.events] == ["m-1"]
    assert batch.key.ad_account_id == "42"
    assert submitted == []  # not full and not due: it waits for its linger
    ((_, reason, _),) = harness.dead_letters.sent
    assert reason == "decode_error"
    # All three are held; the skipped one settled at once (and released its share).
    assert harness.buffer.events == 2
    expected = RECORD_OVERHEAD_BYTES + len(values[0]) + len(batch.events[0].body)
    expected += RECORD_OVERHEAD_BYTES + len(values[1])
    assert harness.buffer.bytes == expected
    await harness.settlement.close()
