"""Sends one encoded request to the Conversions API and returns the raw answer."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import aiohttp

from stream.logs import RateLimitedLogger
from stream.pinterest.classify import ApiResponse


class PinterestClient:
    """One aiohttp session for the whole process, its keep-alive pool sized to the concurrency.

    Transport failures come back as an `ApiResponse` with `error` set instead of raising, so
    the caller classifies every answer the same way.
    """

    def __init__(
        self,
        api_base_url: str,
        token: str,
        request_timeout_s: float,
        connections: int,
        ca_file: Path | None = None,
    ) -> None:
        self._base = api_base_url.rstrip("/")
        self._token = token
        # Per request rather than on the session, so a rotated token applies from the next one.
        self._auth = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._connections = connections
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None
        self._log = RateLimitedLogger(logging.getLogger(__name__))

    async def start(self) -> None:
        ssl_context: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(self._ca_file))
        connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=self._connections, ssl=ssl_context
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"Content-Type": "application/json"},
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
        except (aiohttp.ClientError, OSError):
            return ApiResponse(None, error="connection")
