"""Proxies: the forwarder reaches the API through HTTPS_PROXY / HTTP_PROXY, and NO_PROXY exempts.

Each test runs the real forwarder with a real relaying proxy process between it and the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from stream.pinterest.client import environment_proxy, without_credentials
from tests.forwarder.harness import running_forwarder, wait_until
from tests.forwarder.scenario import Scenario, scenario
from tests.kafka_helpers import Broker
from tests.network.helpers import ApiCA, RelayProxy, proxy_environment
from tests.sandbox_helpers import SandboxProcess


def deliver(run: Scenario, config: dict[str, object], tmp_path: Path, env: dict[str, str]) -> None:
    with running_forwarder(config, tmp_path, env=env):
        wait_until(run.committed, 60, "all committed")


def api_requests(sandbox: SandboxProcess) -> int:
    total: int = sandbox.stats()["requests"]["total"]
    return total


@pytest.mark.parametrize("bypass", [False, True], ids=["through-proxy", "no-proxy-matches"])
def test_https_api_through_https_proxy_unless_no_proxy_matches(
    kafka: Broker,
    new_topic: Callable[..., str],
    https_sandbox: SandboxProcess,
    api_ca: ApiCA,
    relay_proxy: RelayProxy,
    tmp_path: Path,
    bypass: bool,
) -> None:
    run = scenario(kafka, new_topic, seed=8, count=40)
    config = run.config(https_sandbox)
    config["pinterest"]["ca_file"] = str(api_ca.ca_file)
    sandbox_host = urlsplit(https_sandbox.url).netloc
    env = proxy_environment(https=relay_proxy.url, no="example.com,127.0.0.1" if bypass else "")
    deliver(run, config, tmp_path, env)
    assert https_sandbox.stats()["events"]["received"] == len(run.valid)
    if bypass:
        assert relay_proxy.relayed() == []
    else:
        tunnels = relay_proxy.relayed()
        assert tunnels, "the forwarder never used the proxy"
        assert set(tunnels) == {f"CONNECT {sandbox_host}"}


def test_http_loopback_api_through_http_proxy(
    kafka: Broker,
    new_topic: Callable[..., str],
    sandbox: SandboxProcess,
    relay_proxy: RelayProxy,
    tmp_path: Path,
) -> None:
    run = scenario(kafka, new_topic, seed=9, count=40)
    # HTTPS_PROXY is for https:// URLs only: it must not catch this one.
    env = proxy_environment(https="http://127.0.0.1:9", http=relay_proxy.url)
    deliver(run, run.config(sandbox), tmp_path, env)
    relayed = relay_proxy.relayed()
    # Forwarded one request per connection, so every API request shows: all of them came through.
    assert len(relayed) == api_requests(sandbox) > 0
    assert all(line.startswith(f"POST {sandbox.url}/v5/ad_accounts/") for line in relayed)


def test_environment_proxy_follows_the_scheme_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in proxy_environment(
        https="http://user:pw@proxy.internal:3128", http="http://plain.internal:3128"
    ).items():
        monkeypatch.setenv(name, value)
    assert environment_proxy("https://api.pinterest.com") == "http://user:pw@proxy.internal:3128"
    assert environment_proxy("http://127.0.0.1:8780") == "http://plain.internal:3128"
    monkeypatch.setenv("no_proxy", ".pinterest.com,localhost")
    assert environment_proxy("https://api.pinterest.com") is None
    assert environment_proxy("https://api.example.com") == "http://user:pw@proxy.internal:3128"
    monkeypatch.setenv("no_proxy", "*")
    assert environment_proxy("https://api.example.com") is None
    assert without_credentials("http://user:pw@proxy.internal:3128") == "http://proxy.internal:3128"
