"""Polls Pinterest's Event Quality Score (GET conversion_eqs) per ad account and exports it.

Pinterest rates what it received for an ad account per ingestion source (CONVERSIONS_API, TAG,
…), source platform (WEB, MOBILE, OFFLINE, …) and lookback period (1d, 14d): an overall status
(NEEDS_IMPROVEMENT, FAIR, GOOD) and, per quality component (hashed_email, ip_address, order_id,
…) and event type, the coverage in percent, the overlap with the Tag (external_event_id only)
and named issues. `QualityPoller` asks for both lookback periods of every configured ad account,
without filters so one answer covers every source and platform, and sets the `quality_*`
metrics (see `stream.metrics.QualityMetrics`); issue names and reasons go to the log and to
`capi-stream quality`, never into labels.

The poller is off the hot path: its own HTTP session with a single connection, one request at
a time with a pause between requests, a timeout per request, and a 401 or 429 ends the round
early. A failure (401, 403, 404, 429, 5xx, timeout, unreadable answer) is counted in
`quality_poll_errors_total{ad_account,reason}` and logged at most once per interval per kind;
it never touches delivery or readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import orjson

from stream.errors import CapiStreamError, ConfigurationError
from stream.logs import RateLimitedLogger
from stream.metrics import OTHER, QualityMetrics
from stream.pinterest.classify import retry_after
from stream.settings import Settings
from stream.spec import (
    EVENT_NAMES,
    INGESTION_SOURCES,
    LOOKBACK_PERIODS,
    QUALITY_COMPONENTS,
    SOURCE_PLATFORMS,
)

log = logging.getLogger(__name__)

# The gauge value of each overall status: higher is better, so alerts compare with `< 1`.
STATUS_VALUES: Final = {"NEEDS_IMPROVEMENT": 0.0, "FAIR": 1.0, "GOOD": 2.0}
# Pause between two requests of a round: a round is at most 2 requests per ad account, and
# the ads_read quota is shared with whatever else uses the token.
REQUEST_SPACING_S: Final = 1.0
MESSAGE_LIMIT: Final = 200

PollErrorReason = Literal[
    "unauthorized",
    "forbidden",
    "not_found",
    "rate_limited",
    "bad_request",
    "server_error",
    "timeout",
    "connection_error",
    "invalid_response",
    "no_token",
]
_REASON_OF_STATUS: Final[dict[int, PollErrorReason]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    429: "rate_limited",
}
_HINTS: Final[dict[PollErrorReason, str]] = {
    "unauthorized": "token refused: set pinterest.quality.access_token (or access_token_file) "
    "to a valid token with the ads:read scope",
    "forbidden": "the token may not read this ad account (it needs the ads:read scope and "
    "access to the account)",
    "not_found": "ad account not found: check the ad account id",
    "rate_limited": "rate limited (ads_read quota): the next round will try again",
    "no_token": "no readable token: set pinterest.quality.access_token(_file) or "
    "pinterest.access_token(_file)",
}
# Rounds end early on these: the next request would fail the same way.
_ENDS_ROUND: Final = frozenset({"unauthorized", "rate_limited", "no_token"})


class QualityPollError(CapiStreamError):
    """One conversion_eqs request failed; `reason` is a bounded metric label."""

    def __init__(
        self,
        reason: PollErrorReason,
        status: int | None = None,
        message: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        text = f"HTTP {status}" if status is not None else reason.replace("_", " ")
        super().__init__(f"{text}: {message}" if message else text)
        self.reason: PollErrorReason = reason
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def hint(self) -> str:
        return _HINTS.get(self.reason, "")


@dataclass(frozen=True, slots=True)
class QualityIssue:
    """A problem Pinterest found with one component of one event type."""

    id: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class ComponentScore:
    """One quality component for one event type; percentages as Pinterest sends them (0-100)."""

    component: str
    event_name: str
    coverage: float
    overlap: float | None
    issues: tuple[QualityIssue, ...]


@dataclass(frozen=True, slots=True)
class QualityScore:
    """Pinterest's verdict for one ingestion source, platform and lookback period."""

    ingestion_source: str
    source_platform: str
    lookback_period: str
    overall_status: str
    components: tuple[ComponentScore, ...]

    @property
    def issues(self) -> list[tuple[ComponentScore, QualityIssue]]:
        return [(c, issue) for c in self.components for issue in c.issues]


# (ingestion_source, platform) and (ingestion_source, platform, component, event_name)
StatusKey = tuple[str, str]
ComponentKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class QualitySeries:
    """One answer as metric samples: label values bounded, ratios 0-1, worst value on a clash."""

    status: dict[StatusKey, float]
    coverage: dict[ComponentKey, float]
    overlap: dict[ComponentKey, float]
    issues: dict[ComponentKey, float]


def parse_scores(body: Any) -> list[QualityScore]:
    """Pinterest's 200 body (an array of EventQualityScore) → scores; raises QualityPollError
    (invalid_response) naming the path of the first thing that does not fit the schema."""
    if not isinstance(body, list):
        raise _invalid("$", "an array")
    return [_score(item, f"$[{index}]") for index, item in enumerate(body)]


def _score(item: Any, path: str) -> QualityScore:
    if not isinstance(item, dict):
        raise _invalid(path, "an object")
    texts = {}
    for key in ("ingestion_source", "source_platform", "lookback_period", "overall_status"):
        value = item.get(key)
        if not isinstance(value, str):
            raise _invalid(f"{path}.{key}", "a string")
        texts[key] = value
    components = item.get("quality_components")
    if not isinstance(components, dict):
        raise _invalid(f"{path}.quality_components", "an object")
    scores = []
    for component, by_event in components.items():
        where = f"{path}.quality_components.{component}"
        if not isinstance(by_event, dict):
            raise _invalid(where, "an object")
        for event_name, details in by_event.items():
            scores.append(_component(component, event_name, details, f"{where}.{event_name}"))
    return QualityScore(
        texts["ingestion_source"],
        texts["source_platform"],
        texts["lookback_period"],
        texts["overall_status"],
        tuple(scores),
    )


def _component(component: str, event_name: str, details: Any, path: str) -> ComponentScore:
    if not isinstance(details, dict):
        raise _invalid(path, "an object")
    coverage = _number(details.get("coverage"), f"{path}.coverage")
    if coverage is None:
        raise _invalid(f"{path}.coverage", "a number")
    overlap = _number(details.get("overlap"), f"{path}.overlap")
    raw_issues = details.get("issues", [])
    if not isinstance(raw_issues, list):
        raise _invalid(f"{path}.issues", "an array")
    issues = []
    for index, raw in enumerate(raw_issues):
        fields = raw if isinstance(raw, dict) else {}
        values = [fields.get(key) for key in ("id", "name", "reason")]
        texts = [value for value in values if isinstance(value, str)]
        if len(texts) != len(values):
            raise _invalid(f"{path}.issues[{index}]", "an object with id, name and reason")
        issues.append(QualityIssue(*texts))
    return ComponentScore(component, event_name, coverage, overlap, tuple(issues))


def _number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(path, "a number")
    return float(value)


def _invalid(path: str, expected: str) -> QualityPollError:
    return QualityPollError("invalid_response", message=f"{path} is not {expected}")


def series_of(scores: Iterable[QualityScore], lookback: str) -> QualitySeries:
    """The metric samples of the scores for `lookback` (Pinterest answers what was asked).

    Values outside Pinterest's published vocabulary become `other`, so a surprise in an answer
    cannot grow the label sets; where two entries then share labels the worse one is kept.
    """
    status: dict[StatusKey, float] = {}
    coverage: dict[ComponentKey, float] = {}
    overlap: dict[ComponentKey, float] = {}
    issues: dict[ComponentKey, float] = {}
    for score in scores:
        if score.lookback_period != lookback:
            continue
        source = score.ingestion_source if score.ingestion_source in INGESTION_SOURCES else OTHER
        platform = score.source_platform if score.source_platform in SOURCE_PLATFORMS else OTHER
        value = STATUS_VALUES.get(score.overall_status)
        if value is not None:
            key = (source, platform)
            status[key] = min(value, status.get(key, value))
        for component in score.components:
            name = component.component if component.component in QUALITY_COMPONENTS else OTHER
            event = component.event_name if component.event_name in EVENT_NAMES else OTHER
            labels = (source, platform, name, event)
            ratio = component.coverage / 100.0
            coverage[labels] = min(ratio, coverage.get(labels, ratio))
            if component.overlap is not None:
                ratio = component.overlap / 100.0
                overlap[labels] = min(ratio, overlap.get(labels, ratio))
            issues[labels] = issues.get(labels, 0.0) + len(component.issues)
    return QualitySeries(status, coverage, overlap, issues)


class EqsClient:
    """GET /v5/ad_accounts/{id}/conversion_eqs over its own one-connection session."""

    def __init__(self, api_base_url: str, timeout_s: float, ca_file: Path | None = None) -> None:
        self._base = api_base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = self._new_session()

    def _new_session(self) -> aiohttp.ClientSession:
        ssl_context: ssl.SSLContext | bool = True
        if self._ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(self._ca_file))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, ssl=ssl_context), timeout=self._timeout
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, ad_account_id: str) -> str:
        return f"{self._base}/v5/ad_accounts/{ad_account_id}/conversion_eqs"

    async def fetch(self, ad_account_id: str, lookback: str, token: str) -> list[QualityScore]:
        """Every score of one ad account for one lookback period; raises QualityPollError.

        Opens the session on first use if `start()` was not awaited."""
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        try:
            async with session.get(
                self.url(ad_account_id),
                params={"lookback_period": lookback},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                status = response.status
                raw = await response.read()
                headers = dict(response.headers)
        except TimeoutError:
            raise QualityPollError("timeout") from None
        except (aiohttp.ClientError, OSError):
            raise QualityPollError("connection_error") from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status == 200:
            if body is None:
                raise QualityPollError("invalid_response", status, "the body is not JSON")
            return parse_scores(body)
        message = body.get("message") if isinstance(body, dict) else None
        text = message[:MESSAGE_LIMIT] if isinstance(message, str) else ""
        reason = _REASON_OF_STATUS.get(status, "server_error" if status >= 500 else "bad_request")
        wait = retry_after(headers, time.time()) if status == 429 else None
        raise QualityPollError(reason, status, text, wait)


class QualityPoller:
    """Polls every ad account's EQS for both lookback periods every `interval_s` seconds.

    Guarantees: one request in flight at most; nothing it does raises into the caller or
    changes delivery, readiness or the forwarder's connection pool; a failure is a counter and
    a rate-limited log line. The first round starts right after `start()`; `poll_once()` runs
    one round on its own.
    """

    def __init__(
        self,
        client: EqsClient,
        metrics: QualityMetrics,
        ad_accounts: Sequence[str],
        token: Callable[[], str | None],
        interval_s: float,
        *,
        spacing_s: float = REQUEST_SPACING_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._accounts = tuple(ad_accounts)
        self._token = token
        self._interval_s = interval_s
        self._spacing_s = spacing_s
        self._clock = clock
        self._log = RateLimitedLogger(log, interval_s=max(interval_s, 300.0))
        self._last_verdict: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="quality-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.close()

    async def _run(self) -> None:
        await self._client.start()
        log.info(
            "polling Pinterest's Event Quality Score of %d ad account(s) every %gs",
            len(self._accounts),
            self._interval_s,
        )
        while True:
            wait = 0.0
            try:
                wait = await self.poll_once()
            except Exception:  # a bug here must not end the poller, let alone the process
                log.exception("Event Quality Score poll failed unexpectedly")
            await asyncio.sleep(max(self._interval_s, wait))

    async def poll_once(self) -> float:
        """One round: each ad account, each lookback period, one request at a time. Returns
        how long Pinterest asked to wait (a 429's rate-limit reset), else 0."""
        first = True
        for account in self._accounts:
            for lookback in LOOKBACK_PERIODS:
                if not first:
                    await asyncio.sleep(self._spacing_s)
                first = False
                try:
                    scores = await self._fetch(account, lookback)
                except QualityPollError as exc:
                    self._failed(account, lookback, exc)
                    if exc.reason in _ENDS_ROUND:
                        return exc.retry_after_s or 0.0
                    continue
                self._scored(account, lookback, scores)
        return 0.0

    async def _fetch(self, account: str, lookback: str) -> list[QualityScore]:
        try:
            token = self._token()
        except ConfigurationError as exc:
            raise QualityPollError("no_token", message=str(exc)) from None
        if not token:
            raise QualityPollError("no_token")
        return await self._client.fetch(account, lookback, token)

    def _failed(self, account: str, lookback: str, exc: QualityPollError) -> None:
        self._metrics.poll_failed(account, exc.reason)
        hint = f" ({exc.hint})" if exc.hint else ""
        self._log.warning(
            f"{exc.reason}:{account}",
            "Event Quality Score of ad account %s (%s) not read: %s%s",
            account,
            lookback,
            exc,
            hint,
        )

    def _scored(self, account: str, lookback: str, scores: list[QualityScore]) -> None:
        series = series_of(scores, lookback)
        self._metrics.scored(
            account,
            lookback,
            series.status,
            series.coverage,
            series.overlap,
            series.issues,
            self._clock(),
        )
        verdict = tuple(
            sorted(
                (s.ingestion_source, s.source_platform, s.overall_status, tuple(s.issues))
                for s in scores
            )
        )
        if self._last_verdict.get((account, lookback)) == verdict:
            return
        self._last_verdict[(account, lookback)] = verdict
        for score in scores:
            if score.lookback_period == lookback:
                log_score(account, score)


def log_score(account: str, score: QualityScore) -> None:
    """One line per score; issue names and reasons are text for people, never labels."""
    issues = "; ".join(
        f"{c.component}/{c.event_name} ({c.coverage:g} %): {issue.name}: {issue.reason}"
        for c, issue in score.issues
    )
    level = logging.INFO if score.overall_status == "GOOD" and not issues else logging.WARNING
    log.log(
        level,
        "Event Quality Score of ad account %s, %s/%s over %s: %s%s",
        account,
        score.ingestion_source,
        score.source_platform,
        score.lookback_period,
        score.overall_status,
        f"; issues: {issues}" if issues else "",
    )


def quality_token(settings: Settings) -> str | None:
    """The ads:read token, falling back to the conversions token (read anew on each call)."""
    return settings.pinterest.quality.token_value() or settings.pinterest.token_value()


def quality_poller(settings: Settings, metrics: QualityMetrics) -> QualityPoller | None:
    """The poller for these settings, or None when `pinterest.quality.enabled` is false."""
    quality = settings.pinterest.quality
    if not quality.enabled:
        return None
    client = EqsClient(
        settings.pinterest.api_base_url, quality.request_timeout_s, settings.pinterest.ca_file
    )
    return QualityPoller(
        client,
        metrics,
        sorted(settings.configured_ad_accounts()),
        lambda: quality_token(settings),
        quality.poll_interval_s,
    )
