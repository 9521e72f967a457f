"""`make soak`: a seeded chaos soak of the real forwarder with an oracle; exits 1 if a check fails.

    .venv/bin/python scripts/soak.py [--duration 460] [--seed 1] [--events 300000] [--out DIR]

Starts its own Kafka broker (restarted once mid-run), a sandbox and 1 to 3 `capi-stream run`
processes; produces the seeded workload (two sources, six partitions each, ~1 % poison of every
reason) over the first 80 % of the window while the chaos schedule runs; then drains, stops
everything and checks delivery, the DLQ, duplicates, hashes, committed offsets, peak RSS and PII
hygiene. Writes report.json, series.json and soak.png to --out (default .local/soak).
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    result = run_soak(
        SoakOptions(
            out_dir=args.out,
            seed=args.seed,
            plan=Plan.full(args.duration, args.events),
            rss_limit_mb=args.rss_limit_mb,
            drain_timeout_s=args.drain_timeout,
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
    print(f"report {result.report_path}; plot {result.plot_path}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
