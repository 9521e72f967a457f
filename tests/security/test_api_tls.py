"""TLS to the API: the forwarder verifies the certificate and trusts `pinterest.ca_file`."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.local_kafka import make_ca_and_certificate
from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import scenario
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import SandboxProcess, running_sandbox


@dataclass(frozen=True)
class ApiCA:
    ca_file: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ApiCA:
    """A throwaway CA and a server certificate it signed for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    make_ca_and_certificate(directory, "server", days=2, ca_name="capi-stream test API CA")
    return ApiCA(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@pytest.fixture
def https_sandbox(test_ca: ApiCA) -> Iterator[SandboxProcess]:
    """`capi-stream sandbox --tls-cert --tls-key`, trusted through the test CA only, stopped
    whatever the test's outcome."""
    tls = ("--tls-cert", str(test_ca.cert), "--tls-key", str(test_ca.key))
    with running_sandbox(*tls, ca_file=test_ca.ca_file) as sandbox:
        assert sandbox.url.startswith("https://"), sandbox.log()
        yield sandbox


def received(sandbox: SandboxProcess) -> int:
    count: int = sandbox.stats()["events"]["received"]
    return count


def test_sandbox_serves_https_only_to_clients_trusting_its_ca(
    https_sandbox: SandboxProcess,
) -> None:
    assert "events" in https_sandbox.stats()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(https_sandbox.url + "/_stats", timeout=5)  # noqa: S310


def test_forwarder_refuses_an_unknown_ca_and_delivers_with_ca_file(
    kafka: Broker, new_topic, https_sandbox: SandboxProcess, test_ca: ApiCA, tmp_path: Path
) -> None:
    run = scenario(kafka, new_topic, seed=5, count=300)
    config = run.config(https_sandbox, sending={"backoff_max_s": 1.0})
    with running_forwarder(config, tmp_path, "default-trust") as forwarder:
        wait_until(
            lambda: "certificate is not trusted" in forwarder.log(), 30, "a certificate error"
        )
        time.sleep(2)  # give it time to (wrongly) deliver: this measures, it synchronises nothing
        assert received(https_sandbox) == 0
    assert kafka.committed_offsets(run.group, run.topic) == {0: -1001}
    assert kafka.read_all(run.dlq) == [], "a TLS failure is retried, never dead-lettered"

    config["pinterest"]["ca_file"] = str(test_ca.ca_file)
    with running_forwarder(config, tmp_path, "with-ca-file"):
        wait_until(run.committed, 60, "all committed over HTTPS")
    assert received(https_sandbox) == len(run.valid)
