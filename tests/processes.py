"""Stopping a child process the tests or benchmarks started: SIGTERM, then SIGKILL if it hangs."""

from __future__ import annotations

import subprocess


def stop_process(
    process: subprocess.Popen[bytes], grace_s: float, kill_wait_s: float = 10.0
) -> None:
    """SIGTERM and up to `grace_s` to exit, then SIGKILL; nothing if it already exited."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(kill_wait_s)
