"""The forwarder scenarios of `make bench`: end-to-end, latency-bound, steady state, scale-out."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import orjson
import psutil
from confluent_kafka import Consumer, Producer

from benchmarks.lab import (
    LINGER_MS,
    POISON_RATIO,
    Progress,
    Topic,
    create_topic,
    drain,
    fleet,
    histogram_quantile,
    load,
    make_dlq,
    metric_sum,
    peak_rss_mib,
    tempdir,
)
from tests.kafka_helpers import Broker
from traffic.generator import ClickstreamGenerator, GeneratedMessage

LATENCY = "capi_stream_delivery_latency_seconds"
DRAIN_TIMEOUT_S = 1800.0
STEADY_WARMUP_S = 5.0
PRODUCE_TICK_S = 0.01


def _figures(
    events: int, elapsed: float, cpu: float, totals: dict[str, float], rss: list[float]
) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": events / elapsed,
        "cpu_s": round(cpu, 2),
        "cpu_s_per_1000": 1000 * cpu / events,
        "events_per_cpu_s": events / cpu if cpu else None,
        "peak_rss_mib": max(rss),
        "delivered": metric_sum(totals, "capi_stream_events_total", 'outcome="delivered"'),
        "dead_lettered": metric_sum(totals, "capi_stream_dead_letters_total"),
        "requests": metric_sum(totals, "capi_stream_requests_total"),
        "latency_p50_s": histogram_quantile(totals, LATENCY, 0.5),
        "latency_p99_s": histogram_quantile(totals, LATENCY, 0.99),
    }


def _cpu_by_thread(events: int, cpu: float, timing: dict[str, float]) -> dict[str, float]:
    """The forwarders' CPU per event (µs) on the event loop, in librdkafka's threads, and in
    the other threads (the consumer's polling thread and short-lived worker threads)."""
    loop, librdkafka = timing["loop_cpu_s"], timing["librdkafka_cpu_s"]
    return {
        "loop_us_per_event": 1e6 * loop / events,
        "librdkafka_us_per_event": 1e6 * librdkafka / events,
        "other_threads_us_per_event": 1e6 * max(0.0, cpu - loop - librdkafka) / events,
    }


def forward(
    kafka: Broker,
    topic: Topic,
    processes: int = 1,
    sandbox_args: tuple[str, ...] = (),
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """One run: `processes` forwarders in a fresh group drain `topic` through a fresh sandbox."""
    with ExitStack() as stack:
        directory = tempdir(stack)
        group = stack.enter_context(fleet(kafka, topic, directory, *sandbox_args))
        progress = Progress(kafka, group.group_id, topic)
        stack.callback(progress.close)
        group.start(group.config(make_dlq(kafka), **sections), processes)
        limits: list[float] = []
        inflight: list[float] = []

        def sample() -> None:
            for samples in group.samples():
                limits.append(metric_sum(samples, "capi_stream_concurrency_limit"))
                inflight.append(metric_sum(samples, "capi_stream_inflight_requests"))

        load_before = load()
        elapsed, cpu, totals, timing = drain(group, progress, DRAIN_TIMEOUT_S, sample)
        rss = [peak_rss_mib(f.process.pid) for f in group.forwarders]
        figures = _figures(topic.events, elapsed, cpu, totals, rss)
        figures.update(
            timing,
            **_cpu_by_thread(topic.events, cpu, timing),
            load_before=load_before,
            load_after=load(),
            max_concurrency_limit=max(limits, default=None),
            max_inflight=max(inflight, default=None),
            sandbox_events=group.sandbox.stats()["events"],
        )
        return figures


def steady(kafka: Broker, rate: float, seconds: float, partitions: int) -> dict[str, Any]:
    """A realistic stream produced at `rate` events/s for `seconds` into a live forwarder.

    The topic uses LogAppendTime, so each message's Kafka timestamp is the broker's append time;
    the sandbox records when each event's request arrived. Latency = arrival - append, per event
    (the sandbox answers a few milliseconds later: its validation of the batch). The first
    seconds of warm-up are left out.

    The messages are generated before the clock starts and the append times are read back from
    the topic afterwards, so while the stream runs the benchmark's only work is producing: the
    figure measures the forwarder at that rate, not a generator competing with it for the cores.
    """
    messages = list(
        ClickstreamGenerator(7, poison_ratio=POISON_RATIO["realistic"]).messages(
            int(rate * seconds)
        )
    )
    with ExitStack() as stack:
        directory = tempdir(stack)
        record = directory / "sandbox-record.jsonl"
        name = create_topic(kafka, partitions, **{"message.timestamp.type": "LogAppendTime"})
        topic = Topic(name, "realistic", 0, {})
        group = stack.enter_context(fleet(kafka, topic, directory, "--record", str(record)))
        group.start(group.config(make_dlq(kafka)))
        forwarder = group.forwarders[0]
        deadline = time.monotonic() + 60
        while forwarder.get("/readyz")[0] != 200:
            group.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("forwarder never got its partitions")
            time.sleep(0.1)
        load_before = load()
        process = psutil.Process(forwarder.process.pid)
        cpu_before = process.cpu_times()
        produced = _produce_at(kafka, name, rate, seconds, messages)
        wait_until = time.monotonic() + 30
        expected = produced * (1 - POISON_RATIO["realistic"]) * 0.95
        events = group.sandbox.stats()["events"]
        while events["processed"] < expected and time.monotonic() < wait_until:
            time.sleep(0.2)
            events = group.sandbox.stats()["events"]
        time.sleep(2 * LINGER_MS / 1000 + 1)  # the last partial batches
        cpu_after = process.cpu_times()
        totals = forwarder.metrics()
        rss = peak_rss_mib(forwarder.process.pid)
        group.stop()
        group.sandbox.stop()
        appended = _append_times(kafka, name, produced, messages)
        first_append = min(appended.values())
        latencies = []
        by_second: dict[int, list[float]] = {}
        with record.open("rb") as lines:
            for line in lines:
                item = orjson.loads(line)
                at = appended.get(item["event"]["event_id"])
                if at is not None and at >= first_append + STEADY_WARMUP_S:
                    latency = item["received_at"] - at
                    latencies.append(latency)
                    by_second.setdefault(int(at - first_append), []).append(latency)
        latencies.sort()
        # Per second of appends: a hiccup shows as a few slow seconds, a backlog as a climb.
        second_p99 = [_quantile(sorted(values), 0.99) for _, values in sorted(by_second.items())]

        cpu = sum(cpu_after[:2]) - sum(cpu_before[:2])
        return {
            "rate": rate,
            "seconds": seconds,
            "produced": produced,
            "measured_events": len(latencies),
            "latency_p50_s": _quantile(latencies, 0.5) if latencies else None,
            "latency_p99_s": _quantile(latencies, 0.99) if latencies else None,
            "latency_max_s": latencies[-1] if latencies else None,
            "p99_by_second_s": second_p99,
            "slowest_second_p99_s": max(second_p99, default=None),
            "histogram_p50_s": histogram_quantile(totals, LATENCY, 0.5),
            "histogram_p99_s": histogram_quantile(totals, LATENCY, 0.99),
            "cpu_share": cpu / seconds,
            "peak_rss_mib": rss,
            "load_before": load_before,
            "load_after": load(),
            "linger_ms": LINGER_MS,
        }


def _quantile(ordered: list[float], q: float) -> float:
    """The `q` quantile of sorted, non-empty values (the value at that rank)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _produce_at(
    kafka: Broker, topic: str, rate: float, seconds: float, messages: list[GeneratedMessage]
) -> int:
    """Produces `messages` at a fixed rate, in ticks of 10 ms, for at most `seconds`."""
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "linger.ms": 2, "enable.idempotence": True}
    )
    sent = 0
    started = time.monotonic()
    try:
        while sent < len(messages):
            now = time.monotonic() - started
            if now >= seconds:
                break
            due = min(len(messages), int(now * rate) + 1)
            for message in messages[sent:due]:
                producer.produce(topic, message.value, message.key)
            sent = due
            producer.poll(0)
            time.sleep(PRODUCE_TICK_S)
    finally:
        if producer.flush(30):
            raise RuntimeError("the steady producer could not deliver every message")
    return sent


def _append_times(
    kafka: Broker, topic: str, produced: int, messages: list[GeneratedMessage]
) -> dict[str, float]:
    """Event id -> the broker's append time (LogAppendTime), read back from the topic."""
    event_ids = {m.value: m.event_id for m in messages[:produced] if m.event_id is not None}
    appended: dict[str, float] = {}
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"steady-read-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while seen < produced:
            if time.monotonic() > deadline:
                raise TimeoutError("could not read the steady topic back")
            for message in consumer.consume(10_000, 1.0):
                if message.error() is not None:
                    continue
                seen += 1
                event_id = event_ids.get(message.value() or b"")
                if event_id is not None:
                    appended[event_id] = message.timestamp()[1] / 1000
    finally:
        consumer.close()
    return appended
