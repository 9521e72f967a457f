"""The ceiling: a bare consume + transform loop on an end-to-end topic, in this process.

The forwarder's own consumer settings and record building (stream/source.py) and its
Transformer, with nothing else: no tracking, batching, sending or settling. Its events per
CPU-second are what the forwarder could reach if bookkeeping cost nothing; its wall-clock rate
against its per-CPU rate shows whether librdkafka keeps the loop fed (empty polls are counted).

Without the transform (`transform=False`) it measures consuming alone: what any forwarder pays
per message before it does anything with it, the part of the end-to-end cost the floor leaves out
and no bookkeeping change can remove.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psutil
from confluent_kafka import Consumer

from benchmarks.lab import Topic, cpu_seconds, forwarder_gc
from stream.app import POLL_MAX_MESSAGES, POLL_TIMEOUT_S
from stream.settings import PinterestSettings, Settings, SourceSettings
from stream.source import DEFAULT_CONSUMER_CONFIG, _record
from stream.transform import Transformer
from tests.kafka_helpers import Broker

TIMEOUT_S = 600.0


def measure(kafka: Broker, topic: Topic, transform: bool = True) -> dict[str, Any]:
    """Drains `topic` once with a fresh group; figures from the first message to the last."""
    settings = Settings(
        pinterest=PinterestSettings(ad_account_id="549764106778"),
        sources=[SourceSettings(topic=topic.name)],
    )
    source = settings.sources[0]
    transformer = Transformer(settings, time.time)
    config = {k: v for k, v in DEFAULT_CONSUMER_CONFIG.items() if k != "statistics.interval.ms"}
    consumer = Consumer(
        {
            **config,
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"ceiling-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic.name])
    process = psutil.Process()
    remaining = topic.events
    empty = 0
    empty_s = 0.0
    began = cpu_before = None
    deadline = time.monotonic() + TIMEOUT_S
    try:
        with forwarder_gc():
            while remaining > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the ceiling loop did not drain its topic in time")
                polled = time.monotonic()
                messages = consumer.consume(POLL_MAX_MESSAGES, POLL_TIMEOUT_S)
                if not messages:
                    if began is not None:
                        empty += 1
                        empty_s += time.monotonic() - polled
                    continue
                if began is None:
                    began = polled
                    cpu_before = cpu_seconds(process)
                for message in messages:
                    if message.error() is not None:
                        continue
                    record = _record(message)
                    if transform:
                        transformer.transform(source, record.value, record.timestamp_ms)
                    remaining -= 1
            assert began is not None
            assert cpu_before is not None
            elapsed = time.monotonic() - began
            cpu = cpu_seconds(process) - cpu_before
    finally:
        consumer.close()
    return {
        "events": topic.events,
        "seconds": round(elapsed, 2),
        "events_per_s": topic.events / elapsed,
        "events_per_cpu_s": topic.events / cpu if cpu else None,
        "empty_polls": empty,
        "empty_poll_s": round(empty_s, 2),
    }
