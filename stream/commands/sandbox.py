"""`capi-stream sandbox`: run a local Pinterest Conversions API emulator with fault injection.

Once listening it prints `capi-stream sandbox listening on <url>` on stdout (with `--port 0` the
URL carries the port the system chose). With `--tls-cert`/`--tls-key` it serves HTTPS and the URL
is `https://…`, for testing the forwarder's certificate checks. The admin API and fault knobs
are described in `stream.sandbox.server` and `stream.sandbox.faults`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import time
from pathlib import Path

import uvloop

from stream.errors import CapiStreamError, ConfigurationError
from stream.sandbox.faults import DEFAULT_RATE_LIMIT, PROBABILITY_KNOBS, Faults
from stream.sandbox.server import ACCOUNT_ID, SandboxConfig, serve


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8780, help="port (0: any free port)")
    parser.add_argument("--token", default="sandbox-token", help="accepted bearer token")
    parser.add_argument(
        "--ad-account",
        action="append",
        default=[],
        metavar="ID",
        help="accepted ad account (repeatable; default: any well-formed id)",
    )
    parser.add_argument(
        "--record", type=Path, metavar="FILE", help="append processed events (JSONL)"
    )
    parser.add_argument(
        "--keep-events", type=int, default=100_000, help="recent events kept for /_admin/events"
    )
    parser.add_argument(
        "--dedup-capacity", type=int, default=1_000_000, help="event keys remembered for dedup"
    )
    parser.add_argument("--seed", type=int, help="random seed for the fault draws")
    parser.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)"
    )
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    faults = parser.add_argument_group("fault injection (also settable via PUT /_admin/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay per request")
    faults.add_argument("--jitter-ms", type=float, default=0.0, help="extra random delay, up to")
    for knob in PROBABILITY_KNOBS:
        faults.add_argument(
            "--" + knob.replace("_", "-"),
            type=float,
            default=0.0,
            metavar="P",
            help=f"probability of the {knob.replace('_', ' ')} fault",
        )
    faults.add_argument(
        "--outage-seconds", type=float, default=0.0, help="503 (code 4197) for this long from start"
    )
    faults.add_argument("--reject-event-ids", metavar="REGEX", help="fail matching events")
    faults.add_argument(
        "--invalid-request-event-ids", metavar="REGEX", help="400 for requests with a match"
    )
    faults.add_argument("--token-revoked", action="store_true", help="answer 401 to everything")
    faults.add_argument(
        "--rate-limit", type=int, default=DEFAULT_RATE_LIMIT, help="requests/minute per ad account"
    )


def build_config(args: argparse.Namespace, now: float) -> SandboxConfig:
    """The sandbox configuration from parsed flags; ConfigurationError names a bad flag."""
    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError("--host", "the sandbox only listens on a loopback address")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigurationError("--tls-cert", "--tls-cert and --tls-key go together")
    for account in args.ad_account:
        if not ACCOUNT_ID.fullmatch(account):
            raise ConfigurationError("--ad-account", "an ad account id is 1 to 18 digits")
    knobs = {
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "reject_event_ids": args.reject_event_ids,
        "invalid_request_event_ids": args.invalid_request_event_ids,
        "token_revoked": args.token_revoked,
        "rate_limit": args.rate_limit,
        "outage_seconds": args.outage_seconds,
    }
    knobs.update({knob: getattr(args, knob) for knob in PROBABILITY_KNOBS})
    try:
        faults = Faults().updated(knobs, now)
    except ConfigurationError as exc:
        raise ConfigurationError("--" + exc.key.replace("_", "-"), str(exc)) from exc
    return SandboxConfig(
        host=args.host,
        port=args.port,
        token=args.token,
        ad_accounts=frozenset(args.ad_account),
        record=args.record,
        keep_events=args.keep_events,
        dedup_capacity=args.dedup_capacity,
        faults=faults,
        seed=args.seed,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(build_config(args, time.time())))
    return 0


async def _main(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def announce(url: str) -> None:
        print(f"capi-stream sandbox listening on {url}", flush=True)

    try:
        await serve(config, announce, stop)
    except OSError as exc:
        raise CapiStreamError(
            f"sandbox cannot listen on {config.host}:{config.port}: {exc}"
        ) from exc
