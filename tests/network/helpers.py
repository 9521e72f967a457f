"""What the network tests share: the relay proxy's handle, the test CA, proxy variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.network.relay_proxy import LISTENING


@dataclass(frozen=True)
class RelayProxy:
    """tests/network/relay_proxy.py running as a process; `url` goes in HTTPS_PROXY."""

    url: str
    log_file: Path

    def relayed(self) -> list[str]:
        """One line per relayed request: `CONNECT host:port` or `POST http://…`."""
        lines = self.log_file.read_text().splitlines()
        return [line for line in lines if not line.startswith(LISTENING)]


@dataclass(frozen=True)
class ApiCA:
    ca_file: Path
    cert: Path
    key: Path


def proxy_environment(https: str = "", http: str = "", no: str = "") -> dict[str, str]:
    """Proxy variables in both spellings (the lower-case one wins), so none inherited from the
    machine running the tests can change the outcome."""
    values = {"https_proxy": https, "http_proxy": http, "no_proxy": no}
    return {**values, **{name.upper(): value for name, value in values.items()}}
