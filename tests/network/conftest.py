"""Fixtures for the network tests: a relaying proxy process, a throwaway CA, an HTTPS sandbox."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.local_kafka import make_ca_and_certificate
from tests.network.helpers import ApiCA, RelayProxy
from tests.network.relay_proxy import LISTENING
from tests.sandbox_helpers import REPO_ROOT, SandboxProcess, running_sandbox

START_TIMEOUT_S = 30.0


@pytest.fixture
def relay_proxy(tmp_path: Path) -> Iterator[RelayProxy]:
    log_file = tmp_path / "proxy.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.network.relay_proxy"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while LISTENING not in log_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the relay proxy did not start: {log_file.read_text()}")
            time.sleep(0.05)
        url = log_file.read_text().split(LISTENING, 1)[1].split()[0]
        yield RelayProxy(url, log_file)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def api_ca(tmp_path_factory: pytest.TempPathFactory) -> ApiCA:
    """A throwaway CA and a server certificate it signed for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    make_ca_and_certificate(directory, "server", days=2, ca_name="capi-stream test API CA")
    return ApiCA(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@pytest.fixture
def https_sandbox(api_ca: ApiCA) -> Iterator[SandboxProcess]:
    tls = ("--tls-cert", str(api_ca.cert), "--tls-key", str(api_ca.key))
    with running_sandbox(*tls, ca_file=api_ca.ca_file) as sandbox:
        assert sandbox.url.startswith("https://"), sandbox.log()
        yield sandbox
