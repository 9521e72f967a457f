"""`make soak`: a seeded chaos soak of the real forwarder with an oracle; exits 1 if a check fails.

    .venv/bin/python scripts/soak.py [--duration 460] [--seed 1] [--events 300000] [--out DIR]
                                     [--bootstrap HOST:PORT]

Starts its own Kafka broker (restarted once mid-run), a sandbox and 1 to 3 `capi-stream run`
processes; produces the seeded workload (two sources, six partitions each, ~1 % poison of every
reason) over the first 80 % of the window, with the poison schedule mid-stream (every kind of bad
message: ~1 MB non-JSON, huge arrays, messages over kafka.max_message_bytes, foreign ad
accounts, odd numbers, a BOM, PII in URLs; three of each on different partitions) while the
chaos schedule runs; then drains, stops everything and checks delivery, the DLQ (reasons,
headers, truncation), duplicates, hashes, committed offsets, exits, peak RSS and PII hygiene
(also of every event the sandbox received). Writes report.json, series.json and soak.png to --out
(default .local/soak). --bootstrap uses a running broker instead of starting one (the broker
restart is then left out of the chaos).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.soak.chaos import Plan  # noqa: E402 - after the path setup
from tests.soak.runner import SoakOptions, run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=460.0, help="chaos window (seconds)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rss-limit-mb", type=float, default=400.0)
    parser.add_argument("--drain-timeout", type=float, default=90.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".local" / "soak")
    parser.add_argument(
        "--bootstrap", help="a running broker to use (no own broker, so no broker restart)"
    )
    args = parser.parse_args()
    plan = Plan.full(args.duration, args.events)
    if args.bootstrap:
        plan = dataclasses.replace(plan, broker_restart=False)
    result = run_soak(
        SoakOptions(
            out_dir=args.out,
            seed=args.seed,
            plan=plan,
            rss_limit_mb=args.rss_limit_mb,
            drain_timeout_s=args.drain_timeout,
            bootstrap=args.bootstrap,
        )
    )
    for name, check in result.report["checks"].items():
        print(f"{'PASS' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    summary = result.report["summary"]
    print(
        f"events {summary['events_produced']:,}; delivered {summary['distinct_events_delivered']:,}"
        f" (+{summary['duplicate_deliveries']} duplicates);"
        f" DLQ {summary['dlq_distinct_by_reason']};"
        f" peak RSS {summary['peak_rss_mb_max']:.0f} MiB; drain after outage"
        f" {summary['drain_after_outage_s']} s"
    )
    for kind, tally in summary["poison_by_kind"].items():
        print(f"poison {kind}: {', '.join(f'{k} {v}' for k, v in tally.items())}")
    print(f"report {result.report_path}; plot {result.plot_path}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
