"""`capi-stream verify`: the Kafka checks, then one test event per ad account; every problem."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from stream import __version__
from stream.commands.verify_kafka import Finding, check_kafka
from stream.errors import ConfigurationError
from stream.pinterest.client import PinterestClient, environment_proxy, without_credentials
from stream.settings import Settings, load_settings

# A reserved domain (RFC 2606): the hash can never be a real person's email.
TEST_EMAIL: Final = "capi-stream-verify@example.com"
TEST_EXTERNAL_ID: Final = "capi-stream-verify"
# TEST-NET-1 (RFC 5737): documentation address, routes nowhere.
TEST_IP: Final = "192.0.2.1"
RATE_LIMIT_PREFIX: Final = "x-ratelimit-"

SETUP_HINTS: Final = {
    401: "token rejected: check pinterest.access_token (or access_token_file); it must be a "
    "conversions token that is still valid",
    403: "ad account refused: the token has no access to this ad account; check "
    "pinterest.ad_account_id (or the source's ad_account_id) and the token's owner",
    404: "ad account not found: check the id in pinterest.ad_account_id (or the source's)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--ad-account",
        action="append",
        metavar="ID",
        help="verify this ad account instead of the configured ones (repeatable)",
    )
    parser.add_argument(
        "--only",
        choices=("kafka", "pinterest"),
        help="check only Kafka or only the Pinterest API (default: both)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="longest wait for each Kafka check (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    pinterest = args.only in (None, "pinterest")
    token = settings.pinterest.token_value()
    accounts = args.ad_account or configured_accounts(settings)
    if pinterest and token is None:
        raise ConfigurationError(
            "pinterest.access_token", "an access token (or access_token_file) is required"
        )
    if pinterest and not accounts:
        raise ConfigurationError("pinterest.ad_account_id", "no ad account is configured")
    findings = check_kafka(settings, args.timeout) if args.only in (None, "kafka") else None
    answers = asyncio.run(send_all(settings, token, accounts)) if pinterest and token else None
    sys.stdout.write(render(settings, findings, answers))
    kafka_ok = all(finding.problem is None for finding in findings or ())
    return 0 if kafka_ok and all(answer.ok for answer in answers or ()) else 1


def configured_accounts(settings: Settings) -> list[str]:
    """Every source's ad account, each once, in source order."""
    accounts = (settings.ad_account_for(source) for source in settings.sources)
    return list(dict.fromkeys(account for account in accounts if account is not None))


def synthetic_event(now: float) -> dict[str, Any]:
    """A clearly marked page visit of a fixed test identity, already hashed."""
    return {
        "event_name": "page_visit",
        "action_source": "web",
        "event_time": int(now),
        "event_id": f"capi-stream-verify-{uuid.uuid4()}",
        "user_data": {
            "em": [hashlib.sha256(TEST_EMAIL.encode()).hexdigest()],
            "external_id": [hashlib.sha256(TEST_EXTERNAL_ID.encode()).hexdigest()],
            "client_ip_address": TEST_IP,
            "client_user_agent": f"capi-stream-verify/{__version__}",
        },
    }


@dataclass(frozen=True, slots=True)
class Answer:
    """Pinterest's answer for one ad account (or the transport failure in its place)."""

    ad_account_id: str
    event_id: str
    status: int | None
    elapsed_ms: float
    body: Any = None
    rate_limit: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        body = self.body if isinstance(self.body, dict) else {}
        details = body.get("details") if self.status == 422 else body
        events = details.get("events") if isinstance(details, dict) else None
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    @property
    def ok(self) -> bool:
        return self.status == 200 and all(e.get("status") == "processed" for e in self.events)


async def send_all(settings: Settings, token: str, accounts: list[str]) -> list[Answer]:
    client = PinterestClient(
        settings.pinterest.api_base_url,
        token,
        settings.sending.request_timeout_s,
        connections=1,
        ca_file=settings.pinterest.ca_file,
        ca_file_only=settings.pinterest.ca_file_only,
    )
    await client.start()
    try:
        return [await send_one(client, account) for account in accounts]
    finally:
        await client.close()


async def send_one(client: PinterestClient, account: str) -> Answer:
    event = synthetic_event(time.time())
    started = time.monotonic()
    response = await client.send(account, True, orjson.dumps({"data": [event]}))
    elapsed = _ms(started)
    if response.status is None:
        return Answer(account, event["event_id"], None, elapsed, error=response.error)
    # Pinterest sends `120000, 120000;w=60;name="…"`: the first figure is the one that counts.
    limits = tuple(
        (name.lower(), value.split(",", 1)[0].strip())
        for name, value in (response.headers or {}).items()
        if name.lower().startswith(RATE_LIMIT_PREFIX)
    )
    try:
        body = orjson.loads(response.body) if response.body else None
    except orjson.JSONDecodeError:
        body = None
    return Answer(account, event["event_id"], response.status, elapsed, body, limits)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def render(settings: Settings, findings: list[Finding] | None, answers: list[Answer] | None) -> str:
    """The report: the Kafka findings, each ad account's answer, and one result line."""
    lines: list[str] = []
    summary: list[str] = []
    failed = False
    if findings is not None:
        lines.append(f"Kafka {settings.kafka.bootstrap_servers} (nothing is written)")
        for finding in findings:
            state = "OK" if finding.problem is None else f"FAILED: {finding.problem}"
            detail = f" ({finding.detail})" if finding.detail else ""
            lines.append(f"  {finding.subject}: {state}{detail}")
        problems = sum(finding.problem is not None for finding in findings)
        failed = failed or problems > 0
        plural = "s" if problems > 1 else ""
        summary.append(f"Kafka: {problems} problem{plural}" if problems else "Kafka: OK")
    if answers is not None:
        if lines:
            lines.append("")
        lines += _pinterest_header(settings)
        for answer in answers:
            lines.append("")
            lines.extend(_describe(answer))
        good = sum(answer.ok for answer in answers)
        failed = failed or good < len(answers)
        summary.insert(0, f"{good} of {len(answers)} ad accounts accepted the test event")
    lines.append("")
    lines.append(f"result: {'FAILED' if failed else 'OK'} ({'; '.join(summary)})")
    return "\n".join(lines) + "\n"


def _pinterest_header(settings: Settings) -> list[str]:
    base_url = settings.pinterest.api_base_url
    proxy = environment_proxy(base_url)
    route = f" through the proxy {without_credentials(proxy)}" if proxy else ""
    return [
        f"capi-stream verify → {base_url}{route} (?test=true: Pinterest validates, records "
        "nothing)",
        f"test event: page_visit, web, hashed identity of {TEST_EMAIL}",
    ]


def _describe(answer: Answer) -> list[str]:
    lines = [f"ad account {answer.ad_account_id}  (event_id {answer.event_id})"]
    if answer.status is None:
        lines.append(f"  no answer after {answer.elapsed_ms:.0f} ms ({answer.error})")
        lines.append("  check pinterest.api_base_url, the network path and proxies")
        return lines
    lines.append(f"  HTTP {answer.status} in {answer.elapsed_ms:.0f} ms")
    status = answer.status
    if status in (200, 422):
        lines.append("  token: OK")
        lines.append("  ad account: OK")
        for index, event in enumerate(answer.events):
            lines.append(f"  event {index}: {event.get('status', '?')}")
            for kind in ("error_message", "warning_message"):
                # Pinterest sends "", null or nothing for "no message": all mean none.
                if event.get(kind):
                    lines.append(f"    {kind.split('_')[0]}: {event[kind]}")
    elif status in SETUP_HINTS:
        lines.append(f"  {SETUP_HINTS[status]}")
    elif status == 429:
        lines.append("  rate limited: token and account not checked; try again after the reset")
    elif status == 400:
        lines.append("  request refused as malformed (a bug in capi-stream or a changed API)")
    elif status >= 500:
        lines.append("  Pinterest is unavailable right now; token and account not checked")
    else:
        lines.append("  unexpected answer")
    if status != 200 and isinstance(answer.body, dict) and "message" in answer.body:
        lines.append(f"  Pinterest says: code {answer.body.get('code')}: {answer.body['message']}")
    if answer.rate_limit:
        lines.append("  rate limit: " + ", ".join(f"{k}: {v}" for k, v in answer.rate_limit))
    else:
        lines.append("  rate limit: no x-ratelimit-* headers in the answer")
    return lines
