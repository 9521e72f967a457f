"""Sends one encoded request to the Conversions API and returns the raw answer."""

from __future__ import annotations

import logging
import ssl
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from stream.errors import ConfigurationError
from stream.logs import RateLimitedLogger
from stream.pinterest.classify import ApiResponse

log = logging.getLogger(__name__)


class PinterestClient:
    """One aiohttp session for the whole process, its keep-alive pool sized to the concurrency.

    Transport failures come back as an `ApiResponse` with `error` set instead of raising, so
    the caller classifies every answer the same way. The proxy the environment names for the
    API (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) is used.
    """

    def __init__(
        self,
        api_base_url: str,
        token: str,
        request_timeout_s: float,
        connections: int,
        ca_file: Path | None = None,
        ca_file_only: bool = False,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._token = token
        # Per request rather than on the session, so a rotated token applies from the next one.
        self._auth = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._connections = connections
        self._ca_file = ca_file
        self._ca_file_only = ca_file_only
        self.proxy = environment_proxy(self._base)
        self._session: aiohttp.ClientSession | None = None
        self._log = RateLimitedLogger(log)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._connections,
            limit_per_host=self._connections,
            ssl=api_ssl_context(self._ca_file, self._ca_file_only),
        )
        if self.proxy is not None:
            log.info("Pinterest API through the proxy %s", without_credentials(self.proxy))
        # The proxy is resolved once here rather than with trust_env=True: that would look the
        # environment up again on every request, in a thread, and also send credentials from
        # ~/.netrc, which aiohttp refuses to combine with our Authorization header.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"Content-Type": "application/json"},
            proxy=self.proxy,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def set_token(self, token: str) -> bool:
        """Uses `token` from the next request on; True when it differs from the current one."""
        if token == self._token:
            return False
        self._token = token
        self._auth = {"Authorization": f"Bearer {token}"}
        return True

    def url(self, ad_account_id: str, test: bool) -> str:
        url = f"{self._base}/v5/ad_accounts/{ad_account_id}/events"
        return url + "?test=true" if test else url

    async def send(self, ad_account_id: str, test: bool, body: bytes) -> ApiResponse:
        session = self._session
        if session is None:
            raise RuntimeError("PinterestClient.start() was not awaited")
        try:
            async with session.post(
                self.url(ad_account_id, test), data=body, headers=self._auth
            ) as response:
                payload = await response.read()
                return ApiResponse(response.status, payload, dict(response.headers))
        except TimeoutError:
            return ApiResponse(None, error="timeout")
        except aiohttp.ClientConnectorCertificateError as exc:
            # Retried like any connection error, but an untrusted certificate is a setup
            # problem the operator must see: say why, and which setting fixes it.
            self._log.error(
                "tls",
                "the API's TLS certificate is not trusted (%s); "
                "if it is signed by a private CA, set pinterest.ca_file",
                exc.certificate_error,
            )
            return ApiResponse(None, error="connection")
        except aiohttp.ClientHttpProxyError as exc:
            self._log.error(
                "proxy",
                "the proxy refused to reach the API (HTTP %d %s); check HTTPS_PROXY, NO_PROXY "
                "and the proxy's allow-list and credentials",
                exc.status,
                exc.message,
            )
            return ApiResponse(None, error="connection")
        except aiohttp.ClientProxyConnectionError:
            self._log.error(
                "proxy",
                "cannot connect to the proxy %s; check HTTPS_PROXY and NO_PROXY",
                without_credentials(self.proxy or ""),
            )
            return ApiResponse(None, error="connection")
        except (aiohttp.ClientError, OSError):
            return ApiResponse(None, error="connection")


def api_ssl_context(ca_file: Path | None, ca_file_only: bool) -> ssl.SSLContext | bool:
    """The trust for the API: the system CAs, plus `ca_file` if given, or `ca_file` alone if
    `ca_file_only`. True means aiohttp's default (the system CAs)."""
    if ca_file is None:
        return True
    try:
        if ca_file_only:
            return ssl.create_default_context(cafile=str(ca_file))
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError("pinterest.ca_file", f"cannot load {ca_file}: {reason}") from None
    return context


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`: HTTPS_PROXY for https://, HTTP_PROXY for
    http:// (lower-case names win), none if NO_PROXY matches the host."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme) or None


def without_credentials(url: str) -> str:
    """`url` without its user-info part, for logs."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
