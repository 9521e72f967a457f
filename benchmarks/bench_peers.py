"""Side by side: capi-stream and the same job written in Quix Streams drain the same topic.

Each run: a fresh consumer group drains the pre-produced topic of a mix through a fresh sandbox,
capi-stream and the Quix Streams job (benchmarks/peers/quix_job.py, in its own venv: Quix pins
versions of confluent-kafka and pydantic older than capi-stream's) taking turns, the order
alternating between rounds. Both are measured the same way, from outside: from the first offset
commit the group makes to the commit of the last offset, the events committed in between over the
wall-clock seconds and over the process's CPU seconds; peak RSS over the whole process life.

Redpanda Connect, the other peer the performance issue names, is not measured: the library's
package list marks it not to use (its licence is not open source), and the open-source Benthos
core it builds on has no Kafka input.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from benchmarks.lab import (
    REPO_ROOT,
    UNLIMITED_SANDBOX,
    Progress,
    Topic,
    cpu_seconds,
    fleet,
    make_dlq,
    medians,
    peak_rss_mib,
    tempdir,
)
from tests.kafka_helpers import Broker
from tests.processes import stop_process
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess, running_sandbox

PEERS = REPO_ROOT / "benchmarks" / "peers"
QUIX_REQUIREMENTS = PEERS / "quix-requirements.txt"
QUIX_VENV = REPO_ROOT / ".local" / "peers" / "quix"
DRAIN_TIMEOUT_S = 1800.0
POLL_S = 0.1


def quix_python() -> Path:
    """The Quix Streams venv's interpreter, (re)built when its requirements changed."""
    python = QUIX_VENV / "bin" / "python"
    stamp = QUIX_VENV / ".requirements-sha256"
    wanted = hashlib.sha256(QUIX_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes"),
            *("-r", str(QUIX_REQUIREMENTS)),
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def measure(kafka: Broker, topics: dict[str, Topic], rounds: int) -> dict[str, Any]:
    """Per mix: each side's runs and medians (events/s, events per CPU-second, peak RSS)."""
    python = quix_python()
    results: dict[str, Any] = {}
    for mix, topic in topics.items():
        sides: dict[str, Callable[[], dict[str, float]]] = {
            "capi-stream": partial(_capi_stream, kafka, topic),
            "quix-streams": partial(_quix, kafka, topic, python),
        }
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for round_ in range(rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                figures = sides[side]()
                runs[side].append(figures)
                print(
                    f"  peers {mix} {side}: {figures['events_per_s']:,.0f} ev/s, "
                    f"{figures['events_per_cpu_s']:,.0f} ev/CPU-s, "
                    f"{figures['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
        results[mix] = {side: medians(done, done[0]) for side, done in runs.items()}
    return results


def _capi_stream(kafka: Broker, topic: Topic) -> dict[str, float]:
    with ExitStack() as stack:
        group = stack.enter_context(fleet(kafka, topic, tempdir(stack)))
        group.start(group.config(make_dlq(kafka)))
        forwarder = group.forwarders[0]
        figures = _drain(kafka, topic, group.group_id, forwarder.process.pid, group.check_alive)
        figures["delivered"] = group.sandbox.stats()["events"]["processed"]
        return figures


def _quix(kafka: Broker, topic: Topic, python: Path) -> dict[str, float]:
    group_id = f"bench-quix-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(*UNLIMITED_SANDBOX))
        directory = tempdir(stack)
        log = directory / "quix.log"
        process = stack.enter_context(
            _quix_job(python, kafka, topic, group_id, sandbox, directory, log)
        )

        def check_alive() -> None:
            if process.poll() is not None:
                raise RuntimeError(f"Quix job exited: {log.read_text()[-3000:]}")

        figures = _drain(kafka, topic, group_id, process.pid, check_alive)
        figures["delivered"] = sandbox.stats()["events"]["processed"]
        return figures


@contextmanager
def _quix_job(
    python: Path,
    kafka: Broker,
    topic: Topic,
    group_id: str,
    sandbox: SandboxProcess,
    directory: Path,
    log: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        str(python),
        str(PEERS / "quix_job.py"),
        *("--bootstrap", kafka.bootstrap, "--topic", topic.name, "--group", group_id),
        *("--url", sandbox.url, "--token", sandbox.token, "--ad-account", DEFAULT_AD_ACCOUNT),
        *("--state-dir", str(directory / "state")),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process, 30.0)


def _drain(
    kafka: Broker, topic: Topic, group_id: str, pid: int, check_alive: Callable[[], None]
) -> dict[str, float]:
    """Commit to commit: the events the group commits after its first commit, per wall and CPU
    second of the process in that span."""
    process = psutil.Process(pid)
    progress = Progress(kafka, group_id, topic)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        first = 0
        while first == 0:
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group_id} committed nothing")
            time.sleep(POLL_S)
            first = progress.committed()
        began, cpu_before = time.monotonic(), cpu_seconds(process)
        total = sum(topic.ends.values())
        while progress.committed() < total:
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {group_id} did not commit everything in time")
            time.sleep(POLL_S)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(process) - cpu_before
        counted = total - first
        return {
            "events_counted": counted,
            "seconds": round(elapsed, 2),
            "events_per_s": counted / elapsed,
            "events_per_cpu_s": counted / cpu,
            "peak_rss_mib": peak_rss_mib(pid),
        }
    finally:
        progress.close()
