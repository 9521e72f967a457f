"""Shared machinery of the benchmarks: the broker, topics, forwarder processes and their figures."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import psutil
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, not in its stubs
    AdminClient,
    NewTopic,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from stream.app import GC_THRESHOLDS  # noqa: E402
from tests.forwarder.harness import Forwarder, forwarder_config, start_forwarder  # noqa: E402
from tests.kafka_helpers import ENV_FILE, Broker, broker_answers, read_bootstrap  # noqa: E402
from tests.sandbox_helpers import SandboxProcess, running_sandbox  # noqa: E402
from traffic.generator import ClickstreamGenerator, Mix  # noqa: E402

LOCAL_KAFKA = REPO_ROOT / "scripts" / "local_kafka.py"
KAFKA_VERSION = "4.1.1"
POISON_RATIO = {"realistic": 0.01, "order_completed": 0.0, "page": 0.0}
# Product defaults, spelled out so the results say what they were measured with.
LINGER_MS = 500
COMMIT_POLL_S = 0.25
# The sandbox's per-account rate limit out of the way: a benchmark measures the sender.
UNLIMITED_SANDBOX = ("--rate-limit", "1000000")
START_POLL_S = 0.05


@contextmanager
def forwarder_gc() -> Iterator[None]:
    """The garbage collector as the forwarder runs it after start-up (stream.app): survivors
    frozen, a larger young generation; restored on exit."""
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def load() -> float:
    return os.getloadavg()[0]


def machine() -> dict[str, Any]:
    """Versions and hardware every figure was measured with."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kafka": KAFKA_VERSION,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "note": (
            "the broker, the sandbox and this benchmark's own producer share these cores with "
            "the forwarder; other work on the machine shows in the recorded load averages"
        ),
    }


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def medians(runs: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """The runs, and per key the median of the runs that have a figure for it."""
    summary: dict[str, Any] = {"runs": runs}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        summary[key] = median(values) if values else None
    return summary


@contextmanager
def broker() -> Iterator[Broker]:
    """The local broker; started (and stopped afterwards) when none is running.

    A broker named by KAFKA_BOOTSTRAP_SERVERS (a shared one, as the test fixtures use) is used
    as it is and never stopped.
    """
    shared = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if shared:
        if not broker_answers(shared):
            raise SystemExit(f"KAFKA_BOOTSTRAP_SERVERS={shared} does not answer")
        yield Broker(shared)
        return
    started = False
    status = subprocess.run(
        [sys.executable, str(LOCAL_KAFKA), "status"], capture_output=True, check=False
    )
    if status.returncode != 0:
        subprocess.run([sys.executable, str(LOCAL_KAFKA), "up"], check=True)
        started = True
    try:
        bootstrap = read_bootstrap(ENV_FILE)
        if bootstrap is None:
            raise SystemExit("no local broker: make kafka-up")
        yield Broker(bootstrap)
    finally:
        if started:
            subprocess.run([sys.executable, str(LOCAL_KAFKA), "down"], check=False)


@dataclass(frozen=True)
class Topic:
    name: str
    mix: Mix
    events: int
    ends: dict[int, int]


def create_topic(kafka: Broker, partitions: int, **config: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
    )
    futures[name].result(timeout=30)
    kafka.wait_for_topic(name, partitions)
    return name


def produce_mix(kafka: Broker, mix: Mix, events: int, partitions: int, seed: int = 1) -> Topic:
    """A topic pre-filled with `events` generated messages of `mix` (keyed by visitor)."""
    name = create_topic(kafka, partitions)
    generator = ClickstreamGenerator(seed, mix=mix, poison_ratio=POISON_RATIO[mix])
    kafka.produce(name, ((m.key, m.value) for m in generator.messages(events)))
    return Topic(name, mix, events, kafka.end_offsets(name))


def drop_topics(kafka: Broker, names: list[str]) -> None:
    if names:
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        for future in admin.delete_topics(names).values():
            future.result(timeout=30)


class Progress:
    """Reads a group's committed offsets with one long-lived consumer (cheap to poll)."""

    def __init__(self, kafka: Broker, group_id: str, topic: Topic) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "group.id": group_id,
                "enable.auto.commit": False,
            }
        )
        self._partitions = [TopicPartition(topic.name, p) for p in topic.ends]
        self._ends = topic.ends

    def done(self) -> bool:
        committed = self._consumer.committed(self._partitions, timeout=10)
        return all(tp.offset >= self._ends[tp.partition] for tp in committed)

    def committed(self) -> int:
        """Offsets committed over all partitions (the topic's messages start at offset 0)."""
        committed = self._consumer.committed(self._partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)

    def close(self) -> None:
        self._consumer.close()


def peak_rss_mib(pid: int) -> float:
    """The process's high-water resident set (VmHWM), start-up included."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def histogram_quantile(samples: dict[str, float], name: str, q: float) -> float | None:
    """Prometheus' histogram_quantile over the exposition samples of `name` (linear in bucket)."""
    buckets = []
    for key, value in samples.items():
        if key.startswith(f"{name}_bucket{{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            span = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / span if span else 1
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def metric_sum(samples: dict[str, float], name: str, *labels: str) -> float:
    return sum(
        value
        for key, value in samples.items()
        if key.partition("{")[0] == name and all(label in key for label in labels)
    )


@dataclass
class Fleet:
    """Forwarders of one consumer group against one sandbox, with their figures."""

    kafka: Broker
    sandbox: SandboxProcess
    topic: Topic
    directory: Path
    group_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    forwarders: list[Forwarder] = field(default_factory=list)

    def config(self, dlq: str, **sections: dict[str, Any]) -> dict[str, Any]:
        batching = {"linger_ms": LINGER_MS, **sections.pop("batching", {})}
        return forwarder_config(
            self.kafka.bootstrap,
            self.sandbox,
            [self.topic.name],
            group_id=self.group_id,
            dead_letter_topic=dlq,
            sources=None,  # named, so `sections` can only be configuration sections
            batching=batching,
            **sections,
        )

    def start(self, config: dict[str, Any], count: int = 1) -> None:
        for index in range(count):
            self.forwarders.append(start_forwarder(config, self.directory, f"forwarder-{index}"))

    def samples(self) -> list[dict[str, float]]:
        return [forwarder.metrics() for forwarder in self.forwarders]

    def consumed(self) -> float:
        return sum(metric_sum(s, "capi_stream_events_consumed_total") for s in self.samples() if s)

    def check_alive(self) -> None:
        for forwarder in self.forwarders:
            if forwarder.process.poll() is not None:
                raise RuntimeError(f"forwarder exited: {forwarder.log()[-3000:]}")

    def stop(self) -> None:
        for forwarder in self.forwarders:
            forwarder.stop()

    def sandbox_last_arrival(self) -> float:
        """Unix time the sandbox received its last processed event (the drain's last request)."""
        recorded = self.sandbox.stats()["events"]["recorded"]
        last = self.sandbox.request("GET", f"/_admin/events?since={recorded - 1}&limit=1").body
        return float(last["events"][-1]["received_at"])


@contextmanager
def fleet(kafka: Broker, topic: Topic, directory: Path, *sandbox_args: str) -> Iterator[Fleet]:
    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(*UNLIMITED_SANDBOX, *sandbox_args))
        group = Fleet(kafka, sandbox, topic, directory)
        stack.callback(group.stop)
        yield group


def drain(
    group: Fleet,
    progress: Progress,
    timeout_s: float,
    sample: Callable[[], None] | None = None,
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Waits from the first consumed message until every offset is committed.

    Returns (elapsed seconds, forwarder CPU seconds in that span, final metric samples summed,
    timing). Elapsed ends when the last request reached the sandbox: offsets are committed every
    second, so the commit of the last offset comes up to a second later (`seconds_to_commit`
    in timing), idle time that is the commit cadence, not throughput. Timing also has, as shares
    of the elapsed time, the forwarders' event-loop threads on a CPU (`loop_running`) and
    runnable but waiting for one (`loop_waiting`: the machine's other work, not starvation), the
    CPU seconds of those threads (`loop_cpu_s`) and of librdkafka's own threads
    (`librdkafka_cpu_s`), and the sandbox's CPU (`sandbox_cpu`); and the CPUs the whole machine
    kept busy on average (`machine_busy`, from /proc/stat). Time before the first message
    (process start, group join) is not counted.
    """
    processes = [psutil.Process(f.process.pid) for f in group.forwarders]
    sandbox = psutil.Process(group.sandbox.process.pid)
    deadline = time.monotonic() + timeout_s
    while group.consumed() == 0:
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("forwarder consumed nothing")
        time.sleep(START_POLL_S)
    began, began_wall = time.monotonic(), time.time()
    cpu_before = sum(cpu_seconds(p) for p in processes)
    sandbox_before = cpu_seconds(sandbox)
    schedule_before = [main_thread_schedule_s(p.pid) for p in processes]
    librdkafka_before = sum(librdkafka_cpu_s(p) for p in processes)
    machine_before = machine_busy_s()
    next_sample = began
    while not progress.done():
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("forwarder did not commit everything in time")
        if sample is not None and time.monotonic() >= next_sample:
            sample()
            next_sample += 0.5
        time.sleep(COMMIT_POLL_S)
    to_commit = time.monotonic() - began
    cpu = sum(cpu_seconds(p) for p in processes) - cpu_before
    librdkafka = sum(librdkafka_cpu_s(p) for p in processes) - librdkafka_before
    machine = (machine_busy_s() - machine_before) / to_commit
    elapsed = min(to_commit, max(group.sandbox_last_arrival() - began_wall, 1e-3))
    schedule = [
        (running - running_before, waiting - waiting_before)
        for (running, waiting), (running_before, waiting_before) in zip(
            (main_thread_schedule_s(p.pid) for p in processes), schedule_before, strict=True
        )
    ]
    timing = {
        "seconds_to_commit": round(to_commit, 2),
        "loop_running": sum(running for running, _ in schedule) / len(schedule) / elapsed,
        "loop_waiting": sum(waiting for _, waiting in schedule) / len(schedule) / elapsed,
        "loop_cpu_s": sum(running for running, _ in schedule),
        "librdkafka_cpu_s": librdkafka,
        "sandbox_cpu": (cpu_seconds(sandbox) - sandbox_before) / elapsed,
        "machine_busy": machine,
    }
    totals: dict[str, float] = {}
    for samples in group.samples():
        for key, value in samples.items():
            totals[key] = totals.get(key, 0.0) + value
    return elapsed, cpu, totals, timing


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, anything but idle and iowait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def main_thread_schedule_s(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the process's main thread
    (the forwarder's event loop), from the scheduler's own accounting."""
    with open(f"/proc/{pid}/schedstat") as stat:
        running_ns, waiting_ns, _ = stat.read().split()
    return int(running_ns) / 1e9, int(waiting_ns) / 1e9


def librdkafka_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the process's threads librdkafka started (named rdk:…): fetching,
    decompressing and the producers' sending, outside any Python code."""
    total = 0.0
    for thread in process.threads():
        try:
            name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text()
        except OSError:  # the thread ended in between
            continue
        if name.startswith("rdk:"):
            total += thread.user_time + thread.system_time
    return total


def make_dlq(kafka: Broker) -> str:
    return kafka.create_topic()


def tempdir(stack: ExitStack) -> Path:
    import tempfile

    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="capi-bench-")))
