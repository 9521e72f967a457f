"""The sandbox's HTTP server: Pinterest's events endpoint, its admin API, stats and a status page.

Routes:

    POST   /v5/ad_accounts/{ad_account_id}/events[?test=true]   Pinterest's Conversions API
    GET    /v5/ad_accounts/{ad_account_id}/conversion_eqs?lookback_period=1d|14d
           [&source_platform=…][&ingestion_source=…]   Event Quality Score of the recorded
                                     events (thresholds in `quality`); not counted in /_stats
    GET    /_stats                   counters as JSON (see `stats.Stats.snapshot`)
    GET    /                         the same for a person (HTML)
    GET    /_admin/faults            current fault knobs (see `faults`)
    PUT    /_admin/faults            change the knobs named in a JSON object; others stay
    DELETE /_admin/faults            back to the knobs the sandbox was started with
    GET    /_admin/events?since=N&limit=M   recorded events with seq ≥ N, as
                                     `{"events": [...], "next": seq to ask next}`
    POST   /_admin/reset             clears counters, dedup memory, rate windows and the in-memory
                                     events (the --record file is kept)

An events request is answered in this order: injected latency; outage window (503, code 4197);
the random fate (500/502/503, 429, connection reset, hang); token (401, code 2, also while
`token_revoked`); ad account id format (404); ad account allowed (403, code 29); rate limit
(429, code 8); body against the schema (400, code 4196, message names the path); the
`invalid_request_event_ids` fault (400); then each event: processed or failed in request order,
200, or 422 (code 953) when none was processed. With `?test=true` only the first 20 events are
evaluated and nothing is counted as processed or recorded. The admin API is unauthenticated: the
sandbox only ever listens on loopback.

A conversion_eqs request is answered in this order: the `eqs_error` fault; token (401, also
while `token_revoked`); ad account id format (404); ad account allowed (403); query parameters
against the spec's enums (400); then the score. The events endpoint's other faults and its
rate limit do not apply to it.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import random
import re
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from stream.errors import ConfigurationError
from stream.sandbox.checks import BodyChecker, RequestInvalid, all_pass, evaluate, warning_for
from stream.sandbox.faults import Faults
from stream.sandbox.page import render_page
from stream.sandbox.quality import LOOKBACK_SECONDS, score_events
from stream.sandbox.ratelimit import RateLimiter, limit_header
from stream.sandbox.recording import Recorder
from stream.sandbox.stats import Stats
from stream.spec import INGESTION_SOURCES, SOURCE_PLATFORMS

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCOUNT_ID: Final = re.compile(r"\d{1,18}")
TEST_MODE_EVENTS: Final = 20
# Spellings of `?test=` that a client's boolean serialisation may produce (true, 1, …).
TRUTHY: Final = frozenset({"true", "1", "yes", "on", "t", "y"})
HANG_POLL_S: Final = 0.1
_PROCESSED: Final = {"status": "processed", "error_message": "", "warning_message": ""}
_MESSAGES: Final = {
    400: (4196, "The request was invalid."),
    401: (2, "Authentication failed."),
    403: (29, "You are not permitted to access that resource."),
    404: (2, "AdAccount not found."),
    429: (
        8,
        "This request exceeded a rate limit. This can happen if the client exceeds one of the "
        "published rate limits within a short time window.",
    ),
    405: (405, "Method not allowed."),
    500: (1, "Internal error."),
    502: (1, "Bad gateway."),
    503: (
        4197,
        "The endpoint has been ramped down and is currently not accepting any traffic.",
    ),
}


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How a sandbox is started; `ad_accounts` empty means any well-formed id is accepted."""

    host: str = "127.0.0.1"
    port: int = 8780
    token: str = "sandbox-token"  # noqa: S105 - the documented public sandbox default
    ad_accounts: frozenset[str] = frozenset()
    record: Path | None = None
    keep_events: int = 100_000
    dedup_capacity: int = 1_000_000
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer has Pinterest's JSON body, even aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error(exc.status, HTTPStatus(exc.status).phrase + ".", allow)


def _error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    code, default = _MESSAGES.get(status, (status, HTTPStatus(status).phrase + "."))
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "message": message or default}),
        content_type="application/json",
        headers=headers,
    )


class Sandbox:
    """The emulator's state and request handlers; `application()` wires them into aiohttp."""

    def __init__(self, config: SandboxConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.faults = config.faults
        self.stats = Stats(config.dedup_capacity)
        self._checker = BodyChecker()
        self.recorder = Recorder(config.record, config.keep_events, self._checker.events_of)
        self._limiter = RateLimiter()
        self._clock = clock
        # Fault draws need reproducibility (--seed), not unpredictability.
        self._rng = random.Random(config.seed)  # noqa: S311
        self._token = config.token.encode()
        self.closing = False

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[json_errors])
        app.router.add_post("/v5/ad_accounts/{ad_account_id}/events", self.post_events)
        app.router.add_get(
            "/v5/ad_accounts/{ad_account_id}/conversion_eqs", self.get_conversion_eqs
        )
        app.router.add_get("/_stats", self.get_stats)
        app.router.add_get("/", self.get_page)
        app.router.add_get("/_admin/faults", self.get_faults)
        app.router.add_put("/_admin/faults", self.put_faults)
        app.router.add_delete("/_admin/faults", self.delete_faults)
        app.router.add_get("/_admin/events", self.get_events)
        app.router.add_post("/_admin/reset", self.post_reset)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        self.closing = True
        self.recorder.close()

    async def post_events(self, request: web.Request) -> web.StreamResponse:
        faults = self.faults
        delay = faults.delay_s(self._rng)
        if delay:
            await asyncio.sleep(delay)
        if faults.outage_until > self._clock():
            return self._counted(_error(503))
        fate = faults.draw(self._rng)
        if fate == "reset":
            self.stats.count_request("reset")
            return self._reset(request)
        if fate == "hang":
            self.stats.count_request("hang")
            return await self._hang(request)
        if fate == "throttle_429":
            headers = {
                "x-ratelimit-limit": limit_header(faults.rate_limit),
                "x-ratelimit-remaining": "0",
            }
            return self._counted(_error(429, headers=headers | {"x-ratelimit-reset": "1"}))
        if fate != "ok":
            return self._counted(_error(int(fate.removeprefix("error_"))))
        if faults.token_revoked or not self._authorized(request):
            return self._counted(_error(401))
        account = request.match_info["ad_account_id"]
        if not ACCOUNT_ID.fullmatch(account):
            return self._counted(_error(404))
        if self.config.ad_accounts and account not in self.config.ad_accounts:
            return self._counted(_error(403))
        quota = self._limiter.take(account, faults.rate_limit, self._clock())
        headers = quota.headers()
        if not quota.allowed:
            return self._counted(_error(429, headers=headers))
        raw = await request.read()
        test = request.query.get("test", "").strip().lower() in TRUTHY
        # A batch decodes into thousands of short-lived containers without cycles, which
        # reference counting frees; letting the cyclic collector rescan them costs more than
        # all the checks together.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._counted(self._process(account, raw, faults, test, headers))
        finally:
            if collecting:
                gc.enable()

    def _process(
        self, account: str, raw: bytes, faults: Faults, test: bool, headers: dict[str, str]
    ) -> web.Response:
        decoded = self._checker.decode(raw)
        if isinstance(decoded, RequestInvalid):
            return _error(400, decoded.message, headers)
        events = decoded.events
        if faults.invalid_request_event_ids is not None:
            refused = re.compile(faults.invalid_request_event_ids).search
            for index, event in enumerate(events):
                if refused(event.event_id):
                    message = (
                        f"Invalid request: event_id refused by the sandbox's "
                        f"invalid_request_event_ids fault - at `$.data[{index}].event_id`"
                    )
                    return _error(400, message, headers)
        body = self._answer(account, events, decoded.hashes_checked, faults, test, raw)
        status = 200 if body["num_events_processed"] or not body["events"] else 422
        if status == 422:
            body = {
                "code": 953,
                "message": "The action could not be processed properly due to some or all data "
                "provided being invalid.",
                "details": body,
            }
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )

    def _answer(
        self,
        account: str,
        events: list[Any],
        hashes_checked: bool,
        faults: Faults,
        test: bool,
        raw: bytes,
    ) -> dict[str, Any]:
        now = self._clock()
        now_s = int(now)
        received = len(events)
        if test:
            events = events[:TEST_MODE_EVENTS]
        reject = (
            re.compile(faults.reject_event_ids).search
            if faults.reject_event_ids is not None
            else None
        )
        results: list[dict[str, Any]]
        processed: list[Any]
        reasons: list[str] = []
        if reject is None and events and all_pass(events, now_s, hashes_checked):
            results = [_PROCESSED] * len(events)
            processed = events
        else:
            results, processed = [], []
            for event in events:
                verdict = evaluate(event, now_s, hashes_checked)
                if verdict is None and reject is not None and reject(event.event_id):
                    verdict = (
                        "rejected_by_fault",
                        "Event rejected by the sandbox's reject_event_ids fault.",
                    )
                if verdict is not None:
                    reasons.append(verdict[0])
                    results.append(
                        {"status": "failed", "error_message": verdict[1], "warning_message": ""}
                    )
                else:
                    processed.append(event)
                    warning = warning_for(event)
                    results.append(
                        _PROCESSED
                        if not warning
                        else {
                            "status": "processed",
                            "error_message": "",
                            "warning_message": warning,
                        }
                    )
        if test:
            self.stats.count_test(len(events))
        else:
            if reasons:
                self.stats.count_failed(account, reasons)
            if processed:
                self.stats.count_processed(account, processed, now)
                positions = (
                    None
                    if len(processed) == received
                    else tuple(
                        i for i, result in enumerate(results) if result["status"] == "processed"
                    )
                )
                self.recorder.record(account, now, processed, raw, positions)
        return {
            "num_events_received": received,
            "num_events_processed": len(processed),
            "events": results,
        }

    async def get_conversion_eqs(self, request: web.Request) -> web.Response:
        faults = self.faults
        if faults.eqs_error is not None:
            throttled = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}
            return _error(faults.eqs_error, headers=throttled if faults.eqs_error == 429 else None)
        if faults.token_revoked or not self._authorized(request):
            return _error(401)
        account = request.match_info["ad_account_id"]
        if not ACCOUNT_ID.fullmatch(account):
            return _error(404)
        if self.config.ad_accounts and account not in self.config.ad_accounts:
            return _error(403)
        query = request.query
        lookback = query.get("lookback_period")
        if lookback not in LOOKBACK_SECONDS:
            return _error(400, "Invalid request: lookback_period must be 1d or 14d")
        platform = query.get("source_platform")
        if platform is not None and platform not in SOURCE_PLATFORMS:
            return _error(400, "Invalid request: unknown source_platform")
        source = query.get("ingestion_source")
        if source is not None and source not in INGESTION_SOURCES:
            return _error(400, "Invalid request: unknown ingestion_source")
        events = self.recorder.recent(account, self._clock() - LOOKBACK_SECONDS[lookback])
        # Scoring 100,000 kept events takes about half a second: in a thread, so the events
        # endpoint keeps answering meanwhile.
        body = await asyncio.to_thread(score_events, events, lookback, platform, source)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._token
        )

    def _counted(self, response: web.Response) -> web.Response:
        self.stats.count_request(str(response.status))
        return response

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 makes close() send RST, which is what a dropped connection looks like.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        # aiohttp does not cancel a handler when its client leaves, so watch the connection.
        while not self.closing:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(HANG_POLL_S)
        return web.Response(status=504)

    async def get_stats(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self._stats_json()), content_type="application/json")

    def _stats_json(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["events"]["recorded"] = self.recorder.total
        snapshot["faults"] = self.faults.as_json(self._clock())
        return snapshot

    async def get_page(self, _request: web.Request) -> web.Response:
        return web.Response(text=render_page(self._stats_json()), content_type="text/html")

    async def get_faults(self, _request: web.Request) -> web.Response:
        return self._faults_response()

    def _faults_response(self) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.faults.as_json(self._clock())), content_type="application/json"
        )

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "the body must be a JSON object of fault knobs")
        if not isinstance(changes, dict):
            return _error(400, "the body must be a JSON object of fault knobs")
        try:
            self.faults = self.faults.updated(changes, self._clock())
        except ConfigurationError as exc:
            return _error(400, str(exc))
        logger.info("fault knobs changed: %s", sorted(changes))
        return self._faults_response()

    async def delete_faults(self, _request: web.Request) -> web.Response:
        self.faults = self.config.faults
        return self._faults_response()

    async def get_events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            return _error(400, "since and limit must be integers")
        events, next_seq = self.recorder.since(since, max(0, limit))
        return web.Response(
            body=b'{"events":%b,"next":%d}' % (events, next_seq), content_type="application/json"
        )

    async def post_reset(self, _request: web.Request) -> web.Response:
        self.stats.reset()
        self.recorder.reset()
        self._limiter.reset()
        return web.Response(body=b'{"reset":true}', content_type="application/json")


async def serve(config: SandboxConfig, started: Callable[[str], None], stop: asyncio.Event) -> None:
    """Runs a sandbox until `stop` is set; `started` gets its base URL once it listens."""
    sandbox = Sandbox(config)
    runner = web.AppRunner(sandbox.application(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        tls = None
        if config.tls_cert is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=tls)
        await site.start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if tls is not None else "http"
        url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        logger.info("sandbox listening on %s", url)
        started(url)
        await stop.wait()
    finally:
        sandbox.closing = True
        await runner.cleanup()
