"""`make run` (scripts/run_local.py): everything starts, progress shows, and everything stops."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from tests.forwarder.harness import wait_until
from tests.kafka_helpers import Broker

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_run_local_shows_progress_and_ctrl_c_leaves_no_process(
    kafka: Broker, tmp_path: Path
) -> None:
    topic = f"run-local-{uuid.uuid4().hex[:8]}"
    output = tmp_path / "run_local.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "scripts/run_local.py",
                "--topic",
                topic,
                "--dead-letter-topic",
                f"{topic}-dlq",
                "--metrics-port",
                "0",
                "--rate",
                "500",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    children: list[psutil.Process] = []
    try:
        progress = re.compile(r"consumed\s+[\d,]+\s+delivered\s+([\d,]+)\s+dead-lettered")

        def delivering() -> bool:
            found = progress.findall(output.read_text(errors="replace"))
            return bool(found) and int(found[-1].replace(",", "")) > 0

        wait_until(delivering, 60, "a progress line with deliveries")
        # The demo enriches: identify calls first, later events get their hashed e-mail back.
        added = re.compile(r"e-mails added\s+([\d,]+)")

        def enriching() -> bool:
            found = added.findall(output.read_text(errors="replace"))
            return bool(found) and int(found[-1].replace(",", "")) > 0

        wait_until(enriching, 60, "a progress line with e-mails added by enrichment")
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 2, "sandbox and forwarder run as child processes"
        text = output.read_text(errors="replace")
        assert "/metrics" in text
        assert "events/s" in text
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert "stopped" in output.read_text(errors="replace")
    deadline = time.monotonic() + 10
    while any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children):
        assert time.monotonic() < deadline, "a child process outlived make run"
        time.sleep(0.1)
