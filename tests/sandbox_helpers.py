"""Runs `capi-stream sandbox` as a real subprocess for tests, and builds valid Pinterest events.

Usage from any test (the fixtures are registered in tests/conftest.py):

    def test_something(sandbox: SandboxProcess) -> None:
        settings = ...(api_base_url=sandbox.url, access_token=sandbox.token)
        sandbox.set_faults(error_503=0.5, reject_event_ids="^bad-")
        ...
        events = sandbox.wait_for_events(10)   # recorded processed events, polled with a deadline
        assert sandbox.stats()["events"]["duplicate"] == 0

    def test_other(sandbox_factory) -> None:
        sandbox = sandbox_factory("--ad-account", "123", "--rate-limit", "10")

Every sandbox started here is stopped when its fixture or `with running_sandbox(...)` block ends,
whatever the test's outcome.
"""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.processes import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOKEN = "sandbox-token"
DEFAULT_AD_ACCOUNT = "549764106778"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LISTENING = "capi-stream sandbox listening on "


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def valid_event(event_id: str = "event-1", **overrides: Any) -> dict[str, Any]:
    """A minimal, valid, current web checkout event; keyword arguments replace top-level keys."""
    event: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()) - 5,
        "event_id": event_id,
        "user_data": {
            "em": [sha256("jane.doe@example.com")],
            "external_id": [sha256("user-1")],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        },
        "custom_data": {"currency": "USD", "value": "72.39", "order_id": event_id},
    }
    event.update(overrides)
    return event


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the sandbox: status, lower-cased headers, and the parsed JSON body."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class SandboxProcess:
    """A running `capi-stream sandbox`; `url` is what `pinterest.api_base_url` should be.

    Over HTTPS (`--tls-cert`), requests trust only `ca_file`.
    """

    process: subprocess.Popen[bytes]
    url: str
    token: str
    log_file: Path
    record_file: Path | None = None
    ca_file: Path | None = None

    # --- admin API -------------------------------------------------------------------------
    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Changes the named fault knobs (see stream.sandbox.faults); returns all knobs."""
        answer = self.request("PUT", "/_admin/faults", knobs)
        assert answer.status == 200, answer.body
        result: dict[str, Any] = answer.body
        return result

    def clear_faults(self) -> None:
        """Back to the knobs the sandbox was started with."""
        assert self.request("DELETE", "/_admin/faults").status == 200

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/_admin/faults").body
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/_stats").body
        return result

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Recorded processed events (`{"seq", "ad_account_id", "received_at", "event"}`)."""
        collected: list[dict[str, Any]] = []
        while True:
            body = self.request("GET", f"/_admin/events?since={since}&limit=10000").body
            collected.extend(body["events"])
            if not body["events"]:
                return collected
            since = body["next"]

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls until at least `count` events are recorded; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if len(events) >= count or time.monotonic() > deadline:
                assert len(events) >= count, f"{len(events)} of {count} events after {timeout}s"
                return events
            time.sleep(0.05)

    def reset(self) -> None:
        """Clears counters, dedup memory, rate-limit windows and recorded events."""
        assert self.request("POST", "/_admin/reset").status == 200

    # --- Pinterest API ---------------------------------------------------------------------
    def send(
        self,
        events: list[dict[str, Any]] | dict[str, Any] | bytes,
        ad_account: str = DEFAULT_AD_ACCOUNT,
        *,
        token: str | None = None,
        test: bool = False,
        timeout: float = 30.0,
    ) -> Answer:
        """POSTs a batch (a list of events, a whole body, or raw bytes) like a Pinterest client."""
        body = events if isinstance(events, bytes | dict) else {"data": events}
        path = f"/v5/ad_accounts/{ad_account}/events" + ("?test=true" if test else "")
        return self.request(
            "POST",
            path,
            body,
            headers={"Authorization": f"Bearer {self.token if token is None else token}"},
            timeout=timeout,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        data = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        request = urllib.request.Request(  # noqa: S310 - always a loopback URL
            self.url + path, data=data, method=method, headers=headers or {}
        )
        request.add_header("Content-Type", "application/json")
        context = None if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                status, raw, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, got = error.code, error.read(), error.headers
        parsed = orjson.loads(raw) if raw and got.get_content_type() == "application/json" else raw
        return Answer(status, {key.lower(): value for key, value in got.items()}, parsed)

    # --- lifecycle -------------------------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; its log goes with it (read
        `log()` before stopping): every test starts sandboxes, and CI machines keep their /tmp."""
        stop_process(self.process, STOP_TIMEOUT_S, STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.log_file.parent, ignore_errors=True)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def start_sandbox(
    *extra_args: str, token: str = DEFAULT_TOKEN, ca_file: Path | None = None
) -> SandboxProcess:
    """Starts a sandbox on a free loopback port and waits until `/_stats` answers.

    With `--tls-cert`/`--tls-key` among `extra_args`, pass the `ca_file` that signed the cert.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="capi-sandbox-"))
    log_file = log_dir / "sandbox.log"
    record_file = None
    if "--record" in extra_args:
        record_file = Path(extra_args[extra_args.index("--record") + 1])
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "sandbox",
                "--port",
                "0",
                "--token",
                token,
                *extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = _read_url(process, log_file)
        sandbox = SandboxProcess(process, url, token, log_file, record_file, ca_file)
        _wait_ready(sandbox)
    except BaseException:
        process.kill()
        process.wait(STOP_TIMEOUT_S)
        shutil.rmtree(log_dir, ignore_errors=True)
        raise
    return sandbox


def _read_url(process: subprocess.Popen[bytes], log_file: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffered:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                raise RuntimeError(
                    f"sandbox did not start (exit {process.poll()}): {log_file.read_text()[-2000:]}"
                )
            if selector.select(min(left, 0.5)):
                chunk = os.read(process.stdout.fileno(), 4096)
                buffered += chunk
    line = buffered.split(b"\n", 1)[0].decode()
    if not line.startswith(LISTENING):
        raise RuntimeError(f"unexpected first line from the sandbox: {line!r}")
    return line.removeprefix(LISTENING)


def _wait_ready(sandbox: SandboxProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if sandbox.request("GET", "/_stats", timeout=2.0).status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox never answered /_stats: {sandbox.log()[-2000:]}")
        time.sleep(0.05)


@contextmanager
def running_sandbox(
    *extra_args: str, token: str = DEFAULT_TOKEN, ca_file: Path | None = None
) -> Iterator[SandboxProcess]:
    """A sandbox for the duration of the block, stopped even if the block raises."""
    sandbox = start_sandbox(*extra_args, token=token, ca_file=ca_file)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    """A fresh sandbox with default settings (any ad account, token `sandbox-token`)."""
    with running_sandbox() as started:
        yield started


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxProcess]]:
    """`sandbox_factory(*flags, token=...)` starts sandboxes that all stop at teardown."""
    started: list[SandboxProcess] = []

    def start(*extra_args: str, token: str = DEFAULT_TOKEN) -> SandboxProcess:
        sandbox = start_sandbox(*extra_args, token=token)
        started.append(sandbox)
        return sandbox

    try:
        yield start
    finally:
        for sandbox in started:
            sandbox.stop()
