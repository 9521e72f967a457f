"""TLS to the API: the forwarder verifies the certificate and trusts `pinterest.ca_file`."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from stream.generator import ClickstreamGenerator
from tests.forwarder.harness import REPO_ROOT, forwarder_config, running_forwarder, wait_until
from tests.kafka_helpers import Broker
from tests.sandbox_helpers import DEFAULT_TOKEN, SandboxProcess


@dataclass(frozen=True)
class ApiCA:
    ca_file: Path
    cert: Path
    key: Path


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ApiCA:
    """A throwaway CA and a server certificate it signed for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    openssl(
        directory,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=capi-stream test API CA",
    )
    openssl(
        directory,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        directory,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "san.ext",
    )
    return ApiCA(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@pytest.fixture
def https_sandbox(test_ca: ApiCA, tmp_path: Path) -> Iterator[SandboxProcess]:
    """`capi-stream sandbox --tls-cert --tls-key`, stopped whatever the test's outcome."""
    log_file = tmp_path / "sandbox.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "sandbox",
                "--port",
                "0",
                "--tls-cert",
                str(test_ca.cert),
                "--tls-key",
                str(test_ca.key),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    sandbox = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("capi-stream sandbox listening on https://"), log_file.read_text()
        sandbox = SandboxProcess(process, line.split()[-1], DEFAULT_TOKEN, log_file)
        yield sandbox
    finally:
        if sandbox is not None:
            sandbox.stop()
        else:
            process.kill()
            process.wait(10)


def stats(sandbox: SandboxProcess, ca_file: Path) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(sandbox.url + "/_stats", context=context, timeout=5) as answer:  # noqa: S310
        result: dict[str, object] = orjson.loads(answer.read())
        return result


def received(sandbox: SandboxProcess, ca_file: Path) -> int:
    events = stats(sandbox, ca_file)["events"]
    assert isinstance(events, dict)
    count: int = events["received"]
    return count


def test_sandbox_serves_https_only_to_clients_trusting_its_ca(
    https_sandbox: SandboxProcess, test_ca: ApiCA
) -> None:
    assert "events" in stats(https_sandbox, test_ca.ca_file)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(https_sandbox.url + "/_stats", timeout=5)  # noqa: S310


def test_forwarder_refuses_an_unknown_ca_and_delivers_with_ca_file(
    kafka: Broker, new_topic, https_sandbox: SandboxProcess, test_ca: ApiCA, tmp_path: Path
) -> None:
    topic, dlq = new_topic(), new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    messages = list(ClickstreamGenerator(seed=5, poison_ratio=0.0).messages(300))
    kafka.produce(topic, [(m.key, m.value) for m in messages])
    expected = sum(1 for m in messages if m.kind == "valid")
    config = forwarder_config(
        kafka.bootstrap,
        https_sandbox,
        [topic],
        group_id=group,
        dead_letter_topic=dlq,
        sending={"backoff_max_s": 1.0},
    )
    with running_forwarder(config, tmp_path, "default-trust") as forwarder:
        wait_until(
            lambda: "certificate is not trusted" in forwarder.log(), 30, "a certificate error"
        )
        time.sleep(2)  # give it time to (wrongly) deliver: this measures, it synchronises nothing
        assert received(https_sandbox, test_ca.ca_file) == 0
    assert kafka.committed_offsets(group, topic) == {0: -1001}
    assert kafka.read_all(dlq) == [], "a TLS failure is retried, never dead-lettered"

    config["pinterest"]["ca_file"] = str(test_ca.ca_file)
    with running_forwarder(config, tmp_path, "with-ca-file"):
        wait_until(
            lambda: kafka.committed_offsets(group, topic) == kafka.end_offsets(topic),
            60,
            "all committed over HTTPS",
        )
    assert received(https_sandbox, test_ca.ca_file) == expected
