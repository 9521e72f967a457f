"""The floor: in-process decode → map → hash → validate → batch-encode, events per CPU-second."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

from benchmarks.lab import POISON_RATIO
from stream.app import GC_THRESHOLDS
from stream.batcher import Batcher, BatchKey
from stream.models import PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from traffic.generator import ClickstreamGenerator, Mix


def _one_pass(transformer: Transformer, settings: Settings, messages: Sequence[bytes]) -> float:
    source = settings.sources[0]
    batching = settings.batching
    batcher: Batcher[None] = Batcher(
        batching.max_events, batching.max_bytes, batching.linger_ms / 1000
    )
    key = BatchKey("549764106778")
    transform = transformer.transform
    timestamp = int(time.time() * 1000)
    encoded = 0
    # CPU time of this process: other work on the shared cores does not count against it.
    started = time.process_time()
    for value in messages:
        result = transform(source, value, timestamp)
        if type(result) is PinterestEvent:
            batch = batcher.add(key, result, None)
            if batch is not None:
                encoded += len(batch.body())
    for batch in batcher.flush():
        encoded += len(batch.body())
    elapsed = time.process_time() - started
    assert encoded > 0
    return len(messages) / elapsed


def measure(mixes: Sequence[Mix], events: int, rounds: int) -> dict[str, dict[str, float]]:
    """Per mix: median and best events/s over `rounds` passes (interleaved across mixes).

    The messages are the first `events` of the same seeded generator the end-to-end topics use,
    so the hash memo sees the same repetition the forwarder does.
    """
    settings = Settings()
    inputs = {
        mix: [
            m.value
            for m in ClickstreamGenerator(1, mix=mix, poison_ratio=POISON_RATIO[mix]).messages(
                events
            )
        ]
        for mix in mixes
    }
    transformers = {mix: Transformer(settings) for mix in mixes}
    for mix in mixes:  # warm-up: lazy tables, shape caches
        _one_pass(transformers[mix], settings, inputs[mix][:1000])
    # As the forwarder does after start-up (stream.app): survivors frozen, young gen larger.
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    rates: dict[str, list[float]] = {mix: [] for mix in mixes}
    try:
        for _ in range(rounds):
            for mix in mixes:
                rates[mix].append(_one_pass(transformers[mix], settings, inputs[mix]))
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
    return {
        mix: {
            "events_per_cpu_s": sorted(values)[len(values) // 2],
            "best": max(values),
            "runs": values,
            "bytes_per_event": sum(map(len, inputs[mix])) / len(inputs[mix]),
        }
        for mix, values in rates.items()
    }
