"""Runs one soak: broker, sandbox, forwarders, paced production with poison mid-stream, chaos,
sampling, oracle."""

from __future__ import annotations

import logging
import random
import secrets
import shutil
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from stream.settings import Settings
from tests.forwarder.harness import Forwarder, forwarder_config, start_forwarder
from tests.fuzz.predict import Predictor
from tests.kafka_helpers import Broker, local_kafka, read_bootstrap
from tests.sandbox_helpers import SandboxProcess, start_sandbox
from tests.soak.chaos import CLEAR, ChaosEvent, Plan, knobs_for, schedule
from tests.soak.oracle import (
    Check,
    DeadLetterSeen,
    PiiScanner,
    dead_letter_from_headers,
    judge,
    judge_poison,
    read_deliveries,
    scan_sent,
    sent_text,
)
from tests.soak.plot import plot
from tests.soak.poison import KINDS, Poison, poison_schedule
from tests.soak.workload import (
    INVALID_REQUEST_PATTERN,
    REJECT_PATTERN,
    SECOND_AD_ACCOUNT,
    Expectation,
    Produced,
    name_needles,
    partition_of,
    workload,
)

log = logging.getLogger("soak")

PARTITIONS = 6
DLQ_PARTITIONS = 3
SAMPLE_EVERY_S = 1.0
OFFSETS_EVERY_S = 2.0
SAVE_SCRAPE_EVERY = 10
# A killed member is replaced only once its session expires; keep that short.
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
# Poison goes in between these shares of the workload: mid-stream, with traffic on both sides.
POISON_FROM, POISON_TO = 0.2, 0.7


@dataclass(frozen=True, slots=True)
class SoakOptions:
    out_dir: Path
    seed: int
    plan: Plan
    rss_limit_mb: float = 400.0
    drain_timeout_s: float = 180.0
    # None: the soak starts (and restarts) its own broker under out_dir/kafka.
    bootstrap: str | None = None


@dataclass(frozen=True, slots=True)
class SoakResult:
    passed: bool
    report: dict[str, Any]
    report_path: Path
    plot_path: Path


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Member:
    """One forwarder process of the pool; `slot` is its place in the consumer count."""

    slot: int
    name: str
    forwarder: Forwarder
    peak_rss_mb: float = 0.0
    ended: str = ""


class Pool:
    """The forwarder processes: start, kill -9 (and restart), scale; thread-safe."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self._config = config
        self._directory = directory
        self._lock = threading.Lock()
        self._serial = 0
        self.live: dict[int, Member] = {}
        self.history: list[Member] = []

    def start(self, slot: int) -> Member:
        with self._lock:
            self._serial += 1
            name = f"forwarder-{slot}-{self._serial}"
        forwarder = start_forwarder(self._config, self._directory, name)
        member = Member(slot, name, forwarder)
        with self._lock:
            self.live[slot] = member
            self.history.append(member)
        return member

    def members(self) -> list[Member]:
        with self._lock:
            return list(self.live.values())

    def is_live(self, member: Member) -> bool:
        """Still in the pool: neither killed, retired nor stopped by the soak (each of which
        takes it out before signalling it)."""
        with self._lock:
            return self.live.get(member.slot) is member

    def kill(self, slot: int) -> None:
        with self._lock:
            member = self.live.pop(slot)
        member.forwarder.kill()
        member.ended = "killed"
        self.start(slot)

    def scale(self, count: int) -> None:
        for slot in range(count):
            if slot not in self.live:
                self.start(slot)
        for slot in sorted(self.live, reverse=True):
            if slot >= count:
                self.retire(slot)

    def retire(self, slot: int) -> None:
        """SIGTERM without waiting: the process drains on its own; `stop_all` collects it."""
        with self._lock:
            member = self.live.pop(slot)
        member.forwarder.process.terminate()
        member.ended = "sigterm"

    def stop_all(self) -> dict[str, int | None]:
        with self._lock:
            for member in self.live.values():
                member.forwarder.process.terminate()
                member.ended = "sigterm"
            self.live.clear()
        codes: dict[str, int | None] = {}
        for member in self.history:
            member.forwarder.stop()
            codes[member.name] = member.forwarder.process.returncode
        return codes


@dataclass
class Production:
    """What was produced: an expectation and a (topic, partition, offset) per message."""

    expectations: list[Expectation] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    partitions: array[int] = field(default_factory=lambda: array("b"))
    offsets: array[int] = field(default_factory=lambda: array("q"))
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    # Each poison message and its place in `expectations`.
    poison: list[tuple[int, Poison]] = field(default_factory=list)
    failures: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def location(self, index: int) -> tuple[str, int, int] | None:
        offset = self.offsets[index]
        if offset < 0:
            return None
        return (self.topics[index], self.partitions[index], offset)


def poison_slots(poisons: list[Poison], events: int, seed: int) -> dict[int, list[Poison]]:
    """Before which workload message each poison message goes: seeded, mid-stream."""
    first, last = int(POISON_FROM * events), int(POISON_TO * events)
    rng = random.Random(seed + 11)
    slots = sorted(rng.choices(range(first, max(first + 1, last)), k=len(poisons)))
    placed: dict[int, list[Poison]] = {}
    for slot, poison in zip(slots, poisons, strict=True):
        placed.setdefault(slot, []).append(poison)
    return placed


def produce(
    bootstrap: str,
    topics: dict[str, str],
    plan: Plan,
    seed: int,
    now: float,
    window_s: float,
    production: Production,
    abort: threading.Event,
    poisons: list[Poison],
) -> None:
    """Produces the workload at a steady pace over `window_s`, the poison messages among it,
    recording where each one landed."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "message.timeout.ms": 600_000,
            "message.max.bytes": 2 * plan.poison.source_max_bytes,
        }
    )
    placed = poison_slots(poisons, plan.events, seed)

    def send(item: Produced, partition: int) -> None:
        position = len(production.expectations)
        production.expectations.append(item.expectation)
        production.topics.append(topics[item.source])
        production.partitions.append(partition)
        production.offsets.append(-1)

        def delivered(err: object, message: Any) -> None:
            if err is None:
                production.offsets[position] = message.offset()
            else:
                production.failures += 1

        while True:
            try:
                producer.produce(
                    topics[item.source],
                    value=item.value,
                    key=item.key,
                    partition=partition,
                    on_delivery=delivered,
                )
                return
            except BufferError:
                producer.poll(0.1)

    started = time.monotonic()
    rate = plan.events / window_s
    for index, item in enumerate(workload(seed, now, plan.events)):
        if abort.is_set():
            break
        for poison in placed.get(index, ()):
            production.poison.append((len(production.expectations), poison))
            production.emails.update(poison.emails)
            production.phones.update(poison.phones)
            send(poison.produced, poison.partition)
        if (item.source == "web" and len(item.pii) == 2) or item.source == "crm":
            production.emails.add(item.pii[0])
            production.phones.add(item.pii[1])
        send(item, partition_of(item.key, PARTITIONS))
        if index % 500 == 0:
            producer.poll(0)
            ahead = started + index / rate - time.monotonic()
            if ahead > 0:
                abort.wait(ahead)  # pacing the production rate, not synchronising anything
    while producer.flush(1.0) and not abort.is_set():
        pass
    production.done.set()


class Offsets:
    """Committed and end offsets of the source topics, read with a consumer outside the group."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._partitions = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]

    def committed(self) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {}
        for tp in self._consumer.committed(self._partitions, timeout=5):
            result.setdefault(tp.topic, {})[tp.partition] = tp.offset
        return result

    def ends(self) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = {}
        for tp in self._partitions:
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
            result.setdefault(tp.topic, {})[tp.partition] = high
        return result

    def caught_up(self, ends: dict[str, dict[int, int]]) -> bool:
        committed = self.committed()
        return all(
            committed.get(topic, {}).get(p, -1) >= end
            for topic, e in ends.items()
            for p, end in e.items()
        )

    def close(self) -> None:
        self._consumer.close()


class Sampler:
    """Every second: RSS, buffered events, in-flight requests and concurrency of each process."""

    def __init__(self, pool: Pool, offsets: Offsets, scrapes: Path, t0: float) -> None:
        self._pool = pool
        self._offsets = offsets
        self._scrapes = scrapes
        self._t0 = t0
        self.rows: list[dict[str, Any]] = []
        # Forwarders that ended while still in the pool: no kill, retirement or stop of the
        # soak's ended them.
        self.unscheduled_exits: dict[str, int] = {}
        self.stop = threading.Event()
        self._ticks = 0

    def run(self) -> None:
        last_offsets = 0.0
        lag: int | None = None
        while not self.stop.wait(SAMPLE_EVERY_S):
            self._ticks += 1
            now = time.monotonic()
            row: dict[str, Any] = {"t": round(now - self._t0, 2), "rss_mb": {}, "buffered": 0.0}
            row.update(inflight=0.0, concurrency=0.0)
            for member in self._pool.members():
                code = member.forwarder.process.poll()
                if code is not None and self._pool.is_live(member):
                    self.unscheduled_exits.setdefault(member.name, code)
                pid = member.forwarder.process.pid
                rss = _rss_mb(pid)
                if rss is not None:
                    member.peak_rss_mb = max(member.peak_rss_mb, rss)
                    row["rss_mb"][member.name] = round(rss, 1)
                self._scrape(member, row)
            if now - last_offsets >= OFFSETS_EVERY_S:
                last_offsets = now
                try:
                    ends, committed = self._offsets.ends(), self._offsets.committed()
                    lag = sum(
                        end - max(0, committed.get(t, {}).get(p, 0))
                        for t, e in ends.items()
                        for p, end in e.items()
                    )
                except KafkaException:
                    lag = None  # the broker is restarting
            row["lag"] = lag
            self.rows.append(row)

    def _scrape(self, member: Member, row: dict[str, Any]) -> None:
        try:
            status, text = member.forwarder.get("/metrics")
        except OSError:
            return
        if status != 200:
            return
        if self._ticks % SAVE_SCRAPE_EVERY == 0:
            (self._scrapes / f"{member.name}-{self._ticks:05d}.txt").write_text(text)
        for line in text.splitlines():
            if line.startswith("capi_stream_buffered_events "):
                row["buffered"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("capi_stream_inflight_requests "):
                row["inflight"] += float(line.rsplit(" ", 1)[1])
            elif line.startswith("capi_stream_concurrency_limit{"):
                row["concurrency"] += float(line.rsplit(" ", 1)[1])


@dataclass
class ChaosLog:
    entries: list[dict[str, Any]] = field(default_factory=list)
    drain_after_outage_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: ChaosEvent, started: float, ended: float, note: str = "") -> None:
        entry = event.describe() | {"started_s": round(started, 1), "ended_s": round(ended, 1)}
        if note:
            entry["note"] = note
        with self.lock:
            self.entries.append(entry)


def run_api_chaos(
    events: list[ChaosEvent],
    sandbox: SandboxProcess,
    offsets: Offsets,
    t0: float,
    chaos: ChaosLog,
    abort: threading.Event,
) -> None:
    for event in events:
        if abort.wait(max(0.0, t0 + event.at_s - time.monotonic())):
            return
        started = time.monotonic() - t0
        sandbox.set_faults(**knobs_for(event.name, event.duration_s))
        if abort.wait(event.duration_s):
            return
        sandbox.set_faults(**CLEAR)
        ended = time.monotonic() - t0
        chaos.add(event, started, ended)
        if event.name == "api_outage":
            _time_drain(offsets, t0 + ended, chaos, abort)


def _time_drain(
    offsets: Offsets, outage_end: float, chaos: ChaosLog, abort: threading.Event
) -> None:
    """How long until everything produced by the end of the outage is committed."""

    def wait() -> None:
        try:
            target = offsets.ends()
            while not abort.is_set():
                if offsets.caught_up(target):
                    chaos.drain_after_outage_s = round(time.monotonic() - outage_end, 1)
                    return
                abort.wait(0.5)
        except KafkaException:
            log.warning("could not time the drain after the outage (broker unavailable)")

    # A separate consumer: the Offsets one is used by the sampler thread.
    threading.Thread(target=wait, name="drain-timer", daemon=True).start()


def run_process_chaos(
    events: list[ChaosEvent],
    pool: Pool,
    restart_broker: Callable[[], None],
    rng_seed: int,
    t0: float,
    chaos: ChaosLog,
    abort: threading.Event,
) -> None:
    import random

    rng = random.Random(rng_seed)
    for event in events:
        if abort.wait(max(0.0, t0 + event.at_s - time.monotonic())):
            return
        started = time.monotonic() - t0
        note = ""
        if event.action == "kill_9":
            slots = sorted(member.slot for member in pool.members())
            victim = rng.choice(slots)
            pool.kill(victim)
            note = f"slot {victim} of {len(slots)}"
        elif event.action == "broker_restart":
            restart_broker()
        else:
            pool.scale(event.consumers)
        chaos.add(event, started, time.monotonic() - t0, note)


def create_topic(broker: Broker, name: str, partitions: int, max_message_bytes: int) -> str:
    admin = broker.admin()  # must outlive the future, or librdkafka cancels the request
    config = {"max.message.bytes": str(max_message_bytes)}
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
    admin.create_topics([topic])[name].result(timeout=30)
    broker.wait_for_topic(name, partitions)
    return name


def _wait(condition: Callable[[], bool], timeout_s: float, abort: threading.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    while not abort.is_set():
        try:
            if condition():
                return True
        except KafkaException:
            pass  # the broker may still be coming back
        if time.monotonic() > deadline:
            return False
        abort.wait(1.0)
    return False


def run_soak(options: SoakOptions, progress: Callable[[str], None] = print) -> SoakResult:
    out = options.out_dir.resolve()
    for stale in ("logs", "metrics", "kafka"):
        shutil.rmtree(out / stale, ignore_errors=True)
    logs, scrapes = out / "logs", out / "metrics"
    logs.mkdir(parents=True)
    scrapes.mkdir()
    record = out / "sandbox-record.jsonl"
    record.unlink(missing_ok=True)
    plan, seed = options.plan, options.seed
    token = f"soak-token-{secrets.token_hex(12)}"
    own_broker = options.bootstrap is None
    broker_dir, env_file = out / "kafka", out / "kafka.env"
    abort = threading.Event()
    threads: list[threading.Thread] = []
    sandbox: SandboxProcess | None = None
    pool: Pool | None = None
    offsets: Offsets | None = None
    try:
        if own_broker:
            progress("starting the soak's own Kafka broker")
            local_kafka("up", broker_dir, env_file)
            bootstrap = read_bootstrap(env_file)
            assert bootstrap is not None
        else:
            assert options.bootstrap is not None
            bootstrap = options.bootstrap
        broker = Broker(bootstrap)
        run_id = uuid.uuid4().hex[:8]
        # Source topics take the poison beyond 1 MiB; a dead-letter topic smaller than the
        # near-1 MiB poison makes its dead letters be cut to fit.
        source_bytes, dlq_bytes = plan.poison.source_max_bytes, plan.poison.dlq_max_bytes
        topics = {
            name: create_topic(broker, f"soak-{run_id}-{name}", PARTITIONS, source_bytes)
            for name in ("web", "crm")
        }
        dlq = create_topic(broker, f"soak-{run_id}-dlq", DLQ_PARTITIONS, dlq_bytes)
        group = f"soak-{run_id}"
        sandbox = start_sandbox(
            "--record",
            str(record),
            "--keep-events",
            "1000",
            "--reject-event-ids",
            REJECT_PATTERN,
            "--invalid-request-event-ids",
            INVALID_REQUEST_PATTERN,
            "--seed",
            str(seed),
            token=token,
        )
        config = forwarder_config(
            bootstrap,
            sandbox,
            group_id=group,
            dead_letter_topic=dlq,
            sources=[
                {"topic": topics["web"], "format": "segment"},
                {"topic": topics["crm"], "format": "pinterest", "action_source": "offline"},
            ],
            # The CRM messages name a second ad account of their own: it must be configured.
            pinterest={"allowed_ad_accounts": [SECOND_AD_ACCOUNT]},
            kafka={"properties": FAST_GROUP},
            batching={"max_events": 500, "linger_ms": 200},
            sending={
                "request_timeout_s": 5.0,
                "backoff_max_s": 5.0,
                "setup_error_probe_s": 2.0,
            },
            buffer={"max_events": 20_000, "max_bytes": 32 * 1024 * 1024},
            shutdown={"grace_period_s": 10},
        )
        now = time.time()
        # What becomes of each poison message is what the forwarder's own transform says.
        predictor = Predictor(Settings(**config))
        poisons = poison_schedule(plan.poison, seed, now, predictor, topics, PARTITIONS)
        pool = Pool(config, logs)
        offsets = Offsets(bootstrap, group, list(topics.values()))
        pool.start(0)
        t0 = time.monotonic()
        events = schedule(plan, seed)
        progress(
            f"soak seed {seed}: {plan.events:,} events over {plan.window_s:.0f}s and "
            f"{len(poisons)} poison messages of {len(KINDS)} kinds; chaos: "
            + ", ".join(f"{e.name}@{e.at_s:.0f}s" for e in events)
        )
        production = Production()
        chaos = ChaosLog()

        def restart_broker() -> None:
            local_kafka("stop", broker_dir, env_file)
            local_kafka("up", broker_dir, env_file)

        sampler = Sampler(pool, offsets, scrapes, t0)
        threads = [
            threading.Thread(
                target=produce,
                args=(
                    bootstrap,
                    topics,
                    plan,
                    seed,
                    now,
                    plan.window_s * 0.8,
                    production,
                    abort,
                    poisons,
                ),
                name="producer",
            ),
            threading.Thread(
                target=run_api_chaos,
                args=(
                    [e for e in events if e.action == "api_fault"],
                    sandbox,
                    Offsets(bootstrap, group, list(topics.values())),
                    t0,
                    chaos,
                    abort,
                ),
                name="api-chaos",
            ),
            threading.Thread(
                target=run_process_chaos,
                args=(
                    [e for e in events if e.action != "api_fault"],
                    pool,
                    restart_broker,
                    seed,
                    t0,
                    chaos,
                    abort,
                ),
                name="process-chaos",
            ),
            threading.Thread(target=sampler.run, name="sampler"),
        ]
        for thread in threads:
            thread.start()
        for thread in threads[:3]:
            thread.join()
        progress(f"production and chaos done at {time.monotonic() - t0:.0f}s; draining")
        pool.scale(plan.consumers[-1])
        reader = offsets
        drained = _wait(
            lambda: reader.caught_up(reader.ends()),
            options.drain_timeout_s,
            abort,
        )
        drained_at = time.monotonic() - t0
        progress(f"{'drained' if drained else 'NOT drained'} at {drained_at:.0f}s; stopping")
        exit_codes = pool.stop_all()
        sampler.stop.set()
        threads[3].join()
        committed, ends = offsets.committed(), offsets.ends()
        letters: list[DeadLetterSeen] = []
        poison_at = {production.location(i): poison for i, poison in production.poison}
        with (out / "dlq-headers.jsonl").open("wb") as headers_file:
            for message in broker.read_all(dlq, timeout=120):
                headers = message.headers() or []  # type: ignore[attr-defined]
                letter = dead_letter_from_headers(headers)
                if letter.location in poison_at:
                    letter = replace(letter, value=message.value())  # type: ignore[attr-defined]
                letters.append(letter)
                headers_file.write(
                    orjson.dumps({k: (v or b"").decode(errors="replace") for k, v in headers})
                    + b"\n"
                )
        sandbox.stop()
        expected_hashes = {
            e.event_id: e.hashes
            for e in production.expectations
            if e.fate == "deliver" and e.event_id is not None
        }
        deliveries = read_deliveries(record, expected_hashes)
        locations = [production.location(i) for i in range(len(production.expectations))]
        verdict = judge(production.expectations, locations, deliveries, letters, committed, ends)
        poisoned = judge_poison(
            [(poison, production.location(i)) for i, poison in production.poison],
            letters,
            deliveries,
            plan.poison.dlq_max_bytes,
        )
        checks = [*verdict.checks, *poisoned.checks]
        wanted = plan.events + len(poisons)
        checks.append(
            Check(
                "all_produced",
                production.failures == 0 and len(production.expectations) == wanted,
                f"{len(production.expectations):,} produced ({len(production.poison)} poison), "
                f"{production.failures} failed",
            )
        )
        lag = sum(
            end - max(0, committed.get(topic, {}).get(p, 0))
            for topic, e in ends.items()
            for p, end in e.items()
        )
        checks.append(Check("lag_returns_to_zero", lag == 0, f"final lag {lag:,}"))
        # A process never sampled (started during the final stop) has no figure.
        peaks = {m.name: round(m.peak_rss_mb, 1) for m in pool.history if m.peak_rss_mb}
        worst = max(peaks.values(), default=0.0)
        checks.append(
            Check(
                "peak_rss_under_bound",
                0 < worst <= options.rss_limit_mb,
                f"peak {worst:.0f} MiB (bound {options.rss_limit_mb:.0f} MiB), "
                f"{len(peaks)} processes sampled",
            )
        )
        unclean = {n: c for n, c in exit_codes.items() if c not in (0, -9)}
        checks.append(
            Check(
                "processes_exit_cleanly",
                not unclean,
                f"exit codes {sorted(exit_codes.values(), key=str)}"
                + (f"; unclean: {unclean}" if unclean else ""),
            )
        )
        kills = sum(1 for entry in chaos.entries if entry["name"] == "kill_9")
        killed = sum(1 for member in pool.history if member.ended == "killed")
        checks.append(
            Check(
                "no_exit_but_the_scheduled_kills",
                not sampler.unscheduled_exits and killed == kills,
                f"{killed} processes killed by {kills} scheduled kill -9; ended on their own: "
                f"{sampler.unscheduled_exits or 'none'}",
            )
        )
        summary = (
            verdict.summary
            | poisoned.summary
            | {
                "peak_rss_mb": peaks,
                "peak_rss_mb_max": worst,
                "rss_limit_mb": options.rss_limit_mb,
                "drain_after_outage_s": chaos.drain_after_outage_s,
                "drained_at_s": round(drained_at, 1),
                "forwarder_processes": len(pool.history),
            }
        )
        per_second = deliveries.per_second
        first, last = int(now), max(per_second, default=int(now))
        series = {
            # Seconds without a delivery count as zero, so outages show as gaps, not ramps.
            "delivered_per_s": [
                (second - now, per_second.get(second, 0)) for second in range(first, last + 1)
            ],
            "samples": sampler.rows,
        }
        report: dict[str, Any] = {
            "seed": seed,
            "window_s": plan.window_s,
            "plan": {
                "events": plan.events,
                "api_faults_s": plan.api_faults,
                "kills": plan.kills,
                "broker_restart": plan.broker_restart,
                "consumers": list(plan.consumers),
            },
            "summary": summary,
            "chaos": sorted(chaos.entries, key=lambda e: e["started_s"]),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        report_path = out / "report.json"
        plot_path = out / "soak.png"
        plot(series, report["chaos"], plot_path, title=f"capi-stream soak, seed {seed}")
        report["plot"] = str(plot_path)
        report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        # Canaries that transform itself sends raw (a behaviour not landed yet) are told apart.
        sent_scanner = PiiScanner(production.emails, production.phones, (), [token])
        expected_leaks: set[str] = set()
        for _, poison in production.poison:
            if poison.outcome.fate == "deliver" and poison.outcome.event is not None:
                body = poison.outcome.event.body.decode(errors="replace")
                expected_leaks |= sent_scanner.found(sent_text(body))
        checks.append(scan_sent(record, sent_scanner, expected_leaks))
        report["checks"][checks[-1].name] = {"ok": checks[-1].ok, "detail": checks[-1].detail}
        scanner = PiiScanner(production.emails, production.phones, name_needles(), [token])
        emitted = [
            *sorted(logs.glob("*.log")),
            *sorted(scrapes.glob("*.txt")),
            out / "dlq-headers.jsonl",
            report_path,
        ]
        hits = scanner.scan(emitted)
        checks.append(
            Check(
                "no_pii_or_token_emitted",
                not hits,
                f"{len(emitted)} files scanned (logs, /metrics scrapes, DLQ headers, report); "
                f"hits: {hits or 'none'}",
            )
        )
        report["checks"]["no_pii_or_token_emitted"] = {"ok": not hits, "detail": checks[-1].detail}
        passed = all(c.ok for c in checks)
        report["passed"] = passed
        report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        # The series stay out of report.json (readable) but next to it for re-plotting.
        (out / "series.json").write_bytes(orjson.dumps(series))
        return SoakResult(passed, report, report_path, plot_path)
    finally:
        abort.set()
        for thread in threads:
            thread.join(timeout=30)
        if pool is not None:
            pool.stop_all()
        if sandbox is not None:
            sandbox.stop()
        if offsets is not None:
            offsets.close()
        if own_broker:
            local_kafka("down", broker_dir, env_file)
