"""`capi-stream quality`: Pinterest's Event Quality Score per ad account, for people or scripts.

Reads both lookback periods (1d, 14d) of each ad account with the ads:read token
(`pinterest.quality.access_token`, else `pinterest.access_token`) and prints, per ingestion
source and platform, the overall status, every component's coverage and overlap per event type,
and the issues Pinterest names. Exit status 1 when any request failed (token refused, no access,
rate limited, …): what did answer is still printed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from stream.errors import ConfigurationError
from stream.quality import (
    EqsClient,
    QualityPollError,
    QualityScore,
    quality_token,
)
from stream.settings import load_settings
from stream.spec import LOOKBACK_PERIODS

AD_ACCOUNT_ID: Final = re.compile(r"\d{1,18}")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--ad-account",
        action="append",
        metavar="ID",
        help="read this ad account instead of the configured ones (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


@dataclass(slots=True)
class AccountQuality:
    """What Pinterest answered for one ad account: scores per lookback, or why not."""

    ad_account_id: str
    scores: dict[str, list[QualityScore]] = field(default_factory=dict)
    errors: dict[str, QualityPollError] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    token = quality_token(settings)
    if token is None:
        raise ConfigurationError(
            "pinterest.quality.access_token",
            "a token with the ads:read scope (or pinterest.access_token) is required",
        )
    accounts = args.ad_account or sorted(settings.configured_ad_accounts())
    if not accounts:
        raise ConfigurationError("pinterest.ad_account_id", "no ad account is configured")
    for account in accounts:
        if not AD_ACCOUNT_ID.fullmatch(account):
            raise ConfigurationError("--ad-account", "an ad account id is 1 to 18 digits")
    client = EqsClient(
        settings.pinterest.api_base_url,
        settings.pinterest.quality.request_timeout_s,
        settings.pinterest.ca_file,
    )
    results = asyncio.run(read_all(client, token, accounts))
    if args.json:
        sys.stdout.write(orjson.dumps(as_json(results), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(settings.pinterest.api_base_url, results))
    return 1 if any(result.errors for result in results) else 0


async def read_all(client: EqsClient, token: str, accounts: list[str]) -> list[AccountQuality]:
    """Every account, both lookback periods, one request at a time."""
    await client.start()
    try:
        results = []
        for account in accounts:
            result = AccountQuality(account)
            for lookback in LOOKBACK_PERIODS:
                try:
                    result.scores[lookback] = await client.fetch(account, lookback, token)
                except QualityPollError as exc:
                    result.errors[lookback] = exc
            results.append(result)
        return results
    finally:
        await client.close()


def as_json(results: list[AccountQuality]) -> dict[str, Any]:
    """`{"ad_accounts": [{"ad_account_id", "scores": [...], "errors": [...]}]}`; each score has
    Pinterest's EventQualityScore fields, coverage and overlap in percent as Pinterest sends."""
    return {
        "ad_accounts": [
            {
                "ad_account_id": result.ad_account_id,
                "scores": [
                    _score_json(score)
                    for lookback in LOOKBACK_PERIODS
                    for score in result.scores.get(lookback, [])
                ],
                "errors": [
                    {
                        "lookback_period": lookback,
                        "reason": error.reason,
                        "status": error.status,
                        "message": error.message,
                    }
                    for lookback, error in result.errors.items()
                ],
            }
            for result in results
        ]
    }


def _score_json(score: QualityScore) -> dict[str, Any]:
    components: dict[str, dict[str, Any]] = {}
    for c in score.components:
        details: dict[str, Any] = {"coverage": c.coverage}
        if c.overlap is not None:
            details["overlap"] = c.overlap
        details["issues"] = [
            {"id": issue.id, "name": issue.name, "reason": issue.reason} for issue in c.issues
        ]
        components.setdefault(c.component, {})[c.event_name] = details
    return {
        "ingestion_source": score.ingestion_source,
        "source_platform": score.source_platform,
        "lookback_period": score.lookback_period,
        "overall_status": score.overall_status,
        "quality_components": components,
    }


def render(base_url: str, results: list[AccountQuality]) -> str:
    lines = [f"capi-stream quality → {base_url} (Pinterest's Event Quality Score)"]
    for result in results:
        lines.append("")
        lines.append(f"ad account {result.ad_account_id}")
        for lookback in LOOKBACK_PERIODS:
            error = result.errors.get(lookback)
            if error is not None:
                lines.append(f"  last {lookback}: not read: {error}")
                if error.hint:
                    lines.append(f"    {error.hint}")
                continue
            scores = result.scores.get(lookback, [])
            if not scores:
                lines.append(f"  last {lookback}: no events scored yet")
            for score in scores:
                lines.extend(_describe(score))
    failed = sum(bool(result.errors) for result in results)
    lines.append("")
    lines.append(
        "result: OK"
        if not failed
        else f"result: FAILED ({failed} of {len(results)} ad accounts not fully read)"
    )
    return "\n".join(lines) + "\n"


def _describe(score: QualityScore) -> list[str]:
    lines = [
        f"  {score.ingestion_source} / {score.source_platform}, last {score.lookback_period}: "
        f"{score.overall_status}",
        f"    {'component':<24}{'event':<20}{'coverage':>9}{'overlap':>9}  issues",
    ]
    for c in score.components:
        overlap = f"{c.overlap:g} %" if c.overlap is not None else "-"
        lines.append(
            f"    {c.component:<24}{c.event_name:<20}{c.coverage:>7g} %{overlap:>9}"
            f"  {len(c.issues) or '-'}"
        )
    for c, issue in score.issues:
        lines.append(f"    issue {c.component}/{c.event_name}: {issue.name} ({issue.id})")
        lines.append(f"      {issue.reason}")
    return lines
