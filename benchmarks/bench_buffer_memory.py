"""RSS of the events the forwarder holds, against the buffer's estimate of them (stream/app.py).

    .venv/bin/python benchmarks/bench_buffer_memory.py [--events 50000] [--mix realistic]

Holds `--events` consumed messages the way the forwarder does until they settle — the record
(its raw value kept for the dead-letter topic, its epoch and size), its offset in the tracker, its
encoded event in a batch — and compares the growth of the process's RSS with the sum of the
buffer's estimate (`RECORD_OVERHEAD_BYTES + len(value) + len(body)`). The overhead it prints is
what `RECORD_OVERHEAD_BYTES` is set from.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import get_args

from stream.batcher import Batch, Batcher, BatchKey
from stream.ingest import RECORD_OVERHEAD_BYTES
from stream.models import PinterestEvent, SourceRecord
from stream.offsets import OffsetTracker
from stream.settings import PinterestSettings, Settings, SourceSettings
from stream.transform import Transformer
from traffic.generator import ClickstreamGenerator, Mix

PAGE = os.sysconf("SC_PAGE_SIZE")
POLL = 1000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _copy(data: bytes) -> bytes:
    return bytes(bytearray(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--mix", choices=get_args(Mix), default="realistic")
    args = parser.parse_args()
    now = time.time()
    settings = Settings(
        pinterest=PinterestSettings(ad_account_id="1"), sources=[SourceSettings(topic="web")]
    )
    source = settings.sources[0]
    generator = ClickstreamGenerator(7, now=lambda: now, mix=args.mix, poison_ratio=0.0)
    generated = [(m.key, m.value) for m in generator.messages(2 * args.events)]
    transformer = Transformer(settings, lambda: now)
    # Warm-up: the hash memo, the validator's shape cache and the name caches reach the size
    # they keep in a running forwarder; they are bounded on their own and not per held event.
    for _, value in generated[: args.events]:
        transformer.transform(source, value, int(now * 1000))
    tracker = OffsetTracker()
    tracker.assign([("web", 0)])
    batcher: Batcher[SourceRecord] = Batcher(1000, 4 * 1024 * 1024, 3600.0)
    key = BatchKey("1", False)
    held: list[Batch[SourceRecord]] = []
    gc.collect()
    before = rss_bytes()
    estimated = payload = 0
    events = 0
    wanted = generated[args.events :]
    for start in range(0, len(wanted), POLL):
        # Fresh objects, as librdkafka hands them over: the value, the key and the topic name.
        records = [
            SourceRecord("".join(("w", "eb")), 0, start + i, _copy(k or b""), _copy(v), 0)
            for i, (k, v) in enumerate(wanted[start : start + POLL])
        ]
        for record, epoch in zip(records, tracker.track_all(records), strict=True):
            assert record.value is not None
            assert epoch is not None
            result = transformer.transform(source, record.value, int(now * 1000))
            if type(result) is not PinterestEvent:
                continue
            size = len(record.value) + len(result.body)
            payload += size
            estimated += RECORD_OVERHEAD_BYTES + size
            events += 1
            record.epoch, record.size = epoch, RECORD_OVERHEAD_BYTES + size
            batch = batcher.add(key, result, record)
            if batch is not None:
                held.append(batch)
    held.extend(batcher.flush())
    gc.collect()
    grown = rss_bytes() - before
    per_event = grown / events
    print(f"mix {args.mix}: {events:,} events held in {len(held)} batches")
    print(f"  RSS grown         {grown / 2**20:8.1f} MiB = {per_event:7.0f} B per event")
    print(f"  value + body      {payload / 2**20:8.1f} MiB = {payload / events:7.0f} B per event")
    print(
        f"  estimate          {estimated / 2**20:8.1f} MiB = {estimated / events:7.0f} B per event"
        f" (RECORD_OVERHEAD_BYTES = {RECORD_OVERHEAD_BYTES})"
    )
    print(f"  RSS / estimate    {grown / estimated:8.2f}")
    print(f"  measured overhead {(grown - payload) / events:7.0f} B per event beyond value + body")


if __name__ == "__main__":
    main()
