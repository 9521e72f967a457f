"""The floor: in-process decode → map → hash → validate → batch-encode, events per CPU-second."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TypedDict

from benchmarks.lab import POISON_RATIO, forwarder_gc
from stream.batcher import Batcher, BatchKey
from stream.models import PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer
from traffic.generator import ClickstreamGenerator, Mix

WARM_UP_MESSAGES = 1000


class Summary(TypedDict):
    events_per_cpu_s: float
    best: float
    runs: list[float]
    bytes_per_event: float


def inputs(mix: Mix, events: int) -> list[bytes]:
    """The first `events` messages of the seeded generator the end-to-end topics are made with."""
    generator = ClickstreamGenerator(1, mix=mix, poison_ratio=POISON_RATIO[mix])
    return [message.value for message in generator.messages(events)]


def warm_up(messages: Sequence[bytes]) -> None:
    """Process-wide lazy state (imports, shape caches) warmed by a Transformer thrown away."""
    _timed_pass(Settings(), messages[:WARM_UP_MESSAGES])


def one_pass(messages: Sequence[bytes]) -> float:
    """Events per CPU-second of one pass by a fresh Transformer.

    Fresh, as the forwarder starts: its hash memo sees each user for the first time exactly
    where the forwarder does, not again on a second pass over the same messages.
    """
    with forwarder_gc():
        return len(messages) / _timed_pass(Settings(), messages)


def measure(mixes: Sequence[Mix], events: int, rounds: int) -> dict[str, Summary]:
    """Per mix: median and best of `rounds` passes (interleaved across mixes), in-process only.

    `make bench` with end_to_end measures the floor between its runs instead (benchmarks/run.py).
    """
    messages = {mix: inputs(mix, events) for mix in mixes}
    for mix in mixes:
        warm_up(messages[mix])
    rates: dict[Mix, list[float]] = {mix: [] for mix in mixes}
    for _ in range(rounds):
        for mix in mixes:
            rates[mix].append(one_pass(messages[mix]))
    return {mix: summary(values, messages[mix]) for mix, values in rates.items()}


def summary(rates: list[float], messages: Sequence[bytes]) -> Summary:
    return {
        "events_per_cpu_s": sorted(rates)[len(rates) // 2],
        "best": max(rates),
        "runs": rates,
        "bytes_per_event": sum(map(len, messages)) / len(messages),
    }


def _timed_pass(settings: Settings, messages: Sequence[bytes]) -> float:
    """CPU seconds of this process to transform, batch and encode `messages`."""
    transformer = Transformer(settings)
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
    return elapsed
