"""Runs the real `capi-stream run` as a subprocess for tests, and stops it whatever happens.

with running_forwarder(config, tmp_path) as forwarder:
    wait_until(lambda: kafka.committed_offsets(group, topic) == kafka.end_offsets(topic))
    assert forwarder.metric("capi_stream_dead_letters_total", reason="too_old") == 3
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.processes import stop_process
from tests.sandbox_helpers import DEFAULT_AD_ACCOUNT, SandboxProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
METRICS_LINE = re.compile(r"metrics on (http://\S+)/metrics")


def forwarder_config(
    bootstrap: str,
    sandbox: SandboxProcess,
    topics: list[str] | None = None,
    *,
    group_id: str,
    dead_letter_topic: str,
    sources: list[dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A complete configuration for a forwarder against the local broker and a sandbox."""
    config: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "dead_letter_topic": dead_letter_topic,
        },
        "pinterest": {
            "api_base_url": sandbox.url,
            "access_token": sandbox.token,
            "ad_account_id": DEFAULT_AD_ACCOUNT,
        },
        "sources": sources or [{"topic": topic} for topic in topics or []],
        "batching": {"linger_ms": 100},
        "shutdown": {"grace_period_s": 10},
        "metrics": {"host": "127.0.0.1", "port": 0},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Polls `condition` until it holds; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.1)


@dataclass
class Forwarder:
    process: subprocess.Popen[bytes]
    log_file: Path
    base_url: str = ""
    exit_codes: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def readyz(self) -> tuple[int, str]:
        return self.get("/readyz")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by its exposition name (with labels)."""
        samples: dict[str, float] = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            sample, _, label_text = key.partition("{")
            if sample != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += value
        return total

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        stop_process(self.process, 30.0)


def start_forwarder(
    config: dict[str, Any],
    directory: Path,
    name: str = "forwarder",
    env: Mapping[str, str] | None = None,
) -> Forwarder:
    """Starts `capi-stream run --config` and waits until its metrics server answers; `env` is
    added to the test's environment (less its CAPI_STREAM_* variables)."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log_file = directory / f"{name}.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream", "run", "--config", str(config_file)],
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")},
                **(env or {}),
            },
        )
    forwarder = Forwarder(process, log_file)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not forwarder.base_url:
            found = METRICS_LINE.findall(forwarder.log())
            if found:
                forwarder.base_url = found[-1]
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"forwarder did not start: {forwarder.log()[-3000:]}")
            else:
                time.sleep(0.05)
    except BaseException:
        forwarder.stop()
        raise
    return forwarder


@contextmanager
def running_forwarder(
    config: dict[str, Any],
    directory: Path,
    name: str = "forwarder",
    env: Mapping[str, str] | None = None,
) -> Iterator[Forwarder]:
    """A forwarder for the duration of the block, stopped even if the block raises."""
    forwarder = start_forwarder(config, directory, name, env)
    try:
        yield forwarder
    finally:
        forwarder.stop()
