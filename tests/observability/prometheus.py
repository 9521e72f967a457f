"""A real Prometheus on a free loopback port for tests, stopped whatever happens."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrometheusProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def api(self, path: str, **params: str | float) -> Any:
        """GET /api/v1/<path>; returns `data`, raising on an error answer."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback URL built by this module
                f"{self.url}/api/v1/{path}?{query}", timeout=10
            ) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api(
            "query_range", query=expr, start=start, end=end, step=step
        )["result"]
        return result

    def firing(self) -> set[str]:
        return {
            alert["labels"]["alertname"]
            for alert in self.api("alerts")["alerts"]
            if alert["state"] == "firing"
        }

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@contextmanager
def running_prometheus(
    directory: Path,
    prometheus_bin: Path,
    targets: list[str],
    rule_files: Sequence[Path] = (),
    scrape_interval: str = "1s",
    target_labels: dict[str, str] | None = None,
) -> Iterator[PrometheusProcess]:
    """Prometheus scraping `targets` (host:port) every `scrape_interval`, evaluating rules.

    `target_labels` are attached to every scraped series, as Kubernetes service discovery
    attaches `namespace` and `pod`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "capi-stream",
                "static_configs": [{"targets": targets, "labels": target_labels or {}}],
            },
        ],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log_file = directory / "prometheus.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                str(prometheus_bin / "prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    prometheus = PrometheusProcess(process, f"http://127.0.0.1:{port}", log_file)
    try:
        _wait_ready(prometheus)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(prometheus: PrometheusProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        if prometheus.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"prometheus did not start: {prometheus.log()[-3000:]}")
        time.sleep(0.1)
