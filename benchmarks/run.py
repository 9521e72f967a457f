"""`make bench`: every benchmark scenario, written to benchmarks/results/<date>.{json,md,png}.

    .venv/bin/python benchmarks/run.py                      # what `make bench` runs
    .venv/bin/python benchmarks/run.py --quick              # 1 run, fewer events (development)
    .venv/bin/python benchmarks/run.py --events 1000000     # the issue's full N (≈1 h here)
    .venv/bin/python benchmarks/run.py --only floor,end_to_end

Scenarios: floor (in-process, one core, a fresh Transformer per pass over the topic's N messages;
with end_to_end it is measured between its runs), bookkeeping (in-process: µs per event of each
bookkeeping stage, benchmarks/bench_bookkeeping.py), end_to_end (per input mix, one forwarder;
each run followed by the consume + transform ceiling and the floor on the same messages), latency
(sandbox latency 100/300 ms), steady (fixed rate at ~50 % of the measured maximum), scale_out
(2 forwarders in one group), identity (enrichment's uplift and cost, RSS and disk with 1,000,000
identities: benchmarks/bench_identity.py in its own process), peers (per mix, capi-stream and the
same job in Quix Streams drain the same topic in turns: benchmarks/bench_peers.py). Figures are
medians of `--runs` runs; they are figures, not pass/fail checks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks import (  # noqa: E402
    bench_bookkeeping,
    bench_peers,
    ceiling,
    floor,
    report,
    scenarios,
)
from benchmarks.lab import (  # noqa: E402
    LINGER_MS,
    broker,
    drop_topics,
    load,
    machine,
    medians,
    produce_mix,
)
from traffic.generator import Mix  # noqa: E402

MIXES: tuple[Mix, ...] = ("order_completed", "realistic", "page")
SCENARIOS = (
    "floor",
    "bookkeeping",
    "end_to_end",
    "latency",
    "steady",
    "scale_out",
    "identity",
    "peers",
)
IDENTITIES = 1_000_000
LATENCIES_MS = (100, 300)
PARTITIONS = 6


def _command(args: argparse.Namespace, only: str) -> str:
    parts = [".venv/bin/python", "benchmarks/run.py", "--only", only]
    parts += ["--events", str(args.events), "--runs", str(args.runs)]
    if only == "bookkeeping":
        parts += ["--sample-events", str(args.sample_events)]
    if only == "steady":
        parts += ["--steady-seconds", str(args.steady_seconds)]
    return shlex.join(parts)


CEILING_KEYS = ("events_per_s", "events_per_cpu_s", "empty_polls", "empty_poll_s")
E2E_KEYS = (
    "events_per_s",
    "events_per_cpu_s",
    "cpu_s_per_1000",
    "peak_rss_mib",
    "latency_p50_s",
    "latency_p99_s",
    "max_concurrency_limit",
    "max_inflight",
    "load_before",
    "seconds_to_commit",
    "loop_running",
    "loop_waiting",
    "loop_us_per_event",
    "librdkafka_us_per_event",
    "other_threads_us_per_event",
    "machine_busy",
    "sandbox_cpu",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, help="events per forwarder run (200,000)")
    parser.add_argument("--runs", type=int, help="runs per figure, median reported (3)")
    parser.add_argument(
        "--sample-events",
        type=int,
        help="messages per mix for bookkeeping (20,000; identity takes 5x)",
    )
    parser.add_argument("--steady-seconds", type=float, help="steady-state duration (60)")
    parser.add_argument("--steady-rate", type=float, help="events/s (default: 50 %% of measured)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--quick", action="store_true", help="1 run, 50,000 events, 20 s steady")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--report-only", type=Path, help="rewrite .md and .png of a results JSON")
    args = parser.parse_args()
    if args.report_only is not None:
        _write_report(json.loads(args.report_only.read_text()), args.report_only.with_suffix(""))
        return
    # --quick changes the defaults only: explicit values still win.
    defaults = (1, 50_000, 20.0, 5_000) if args.quick else (3, 200_000, 60.0, 20_000)
    for name, default in zip(
        ("runs", "events", "steady_seconds", "sample_events"), defaults, strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {sorted(unknown)}")
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "parameters": {
            "events": args.events,
            "runs": args.runs,
            "partitions": PARTITIONS,
            "linger_ms": LINGER_MS,
            "quick": args.quick,
        },
        "load_at_start": load(),
    }

    if "floor" in selected and "end_to_end" not in selected:
        print(f"floor: {args.events:,} messages per mix, {args.runs} passes", flush=True)
        results["floor"] = {
            "command": _command(args, "floor"),
            "mixes": floor.measure(MIXES, args.events, max(3, args.runs)),
        }
        for mix, figures in results["floor"]["mixes"].items():
            print(f"  {mix}: {figures['events_per_cpu_s']:,.0f} events/CPU-s", flush=True)

    if "identity" in selected:
        results["identity"] = _identity(args)

    if "bookkeeping" in selected:
        print(f"bookkeeping: {args.sample_events:,} messages per mix", flush=True)
        results["bookkeeping"] = {
            "command": _command(args, "bookkeeping"),
            "mixes": {
                mix: bench_bookkeeping.measure(mix, args.sample_events, max(5, args.runs))
                for mix in MIXES
            },
        }
        for mix, figures in results["bookkeeping"]["mixes"].items():
            print(f"  {mix}: {figures['event_loop_total']:.2f} µs/event", flush=True)

    with broker() as kafka:
        topics: dict[str, Any] = {}
        try:
            needs = {
                "end_to_end": MIXES,
                "latency": ("realistic",),
                "scale_out": ("realistic",),
                "peers": MIXES,
            }
            wanted = sorted({mix for name in selected for mix in needs.get(name, ())})
            for mix in wanted:
                begun = time.monotonic()
                topics[mix] = produce_mix(kafka, mix, args.events, PARTITIONS)
                print(f"produced {args.events:,} {mix} in {time.monotonic() - begun:.0f}s")
            _forwarder_scenarios(args, selected, kafka, topics, results)
            if "peers" in selected:
                print(f"peers: capi-stream and Quix Streams, {args.runs} run(s)", flush=True)
                results["peers"] = {
                    "command": _command(args, "peers"),
                    "mixes": bench_peers.measure(kafka, {m: topics[m] for m in MIXES}, args.runs),
                }
        finally:
            drop_topics(kafka, [topic.name for topic in topics.values()])

    results["load_at_end"] = load()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["goals"] = report.goals(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / datetime.date.today().isoformat()
    if args.quick:
        stem = stem.with_name(stem.name + "-quick")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    _write_report(results, stem)
    print(f"wrote {stem}.json, .md and .png in {results['duration_s']:.0f}s")
    print(stem.with_suffix(".md").read_text())


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    identities = IDENTITIES // 10 if args.quick else IDENTITIES
    command = [
        sys.executable,
        "benchmarks/bench_identity.py",
        "--events",
        str(args.sample_events * 5),
        "--identities",
        str(identities),
        "--runs",
        str(max(3, args.runs)),
    ]
    print(f"identity: {args.sample_events * 5:,} messages, {identities:,} identities", flush=True)
    completed = subprocess.run(command, capture_output=True, check=True, cwd=REPO_ROOT, text=True)
    figures: dict[str, Any] = json.loads(completed.stdout)
    figures["command"] = shlex.join([".venv/bin/python", *command[1:]])
    return figures


def _write_report(results: dict[str, Any], stem: Path) -> None:
    report.chart(results, stem.with_suffix(".png"))
    stem.with_suffix(".md").write_text(report.markdown(results, stem.with_suffix(".png").name))


def _forwarder_scenarios(
    args: argparse.Namespace,
    selected: list[str],
    kafka: Any,
    topics: dict[str, Any],
    results: dict[str, Any],
) -> None:
    if "end_to_end" in selected:
        runs: dict[str, list[dict[str, Any]]] = {mix: [] for mix in MIXES}
        ceilings: dict[str, list[dict[str, Any]]] = {mix: [] for mix in MIXES}
        consuming: dict[str, list[dict[str, Any]]] = {mix: [] for mix in MIXES}
        # The floor is measured between the runs, on the topic's own messages: a ratio of two
        # figures taken minutes apart on shared cores would measure the machine's drift too.
        floor_inputs = {mix: floor.inputs(mix, args.events) for mix in MIXES}
        floors: dict[str, list[float]] = {mix: [] for mix in MIXES}
        for mix in MIXES:
            floor.warm_up(floor_inputs[mix])
        for run in range(args.runs):
            for mix in MIXES:  # interleaved, so a burst of outside load hits every mix alike
                figures = scenarios.forward(kafka, topics[mix])
                runs[mix].append(figures)
                print(
                    f"end_to_end {mix} run {run + 1}: {figures['events_per_s']:,.0f} events/s, "
                    f"{figures['cpu_s_per_1000']:.3f} CPU-s/1000, "
                    f"{figures['peak_rss_mib']:.0f} MiB, load {figures['load_before']:.2f}",
                    flush=True,
                )
                bare = ceiling.measure(kafka, topics[mix])
                ceilings[mix].append(bare)
                print(
                    f"ceiling {mix} run {run + 1}: {bare['events_per_s']:,.0f} events/s, "
                    f"{bare['events_per_cpu_s']:,.0f} events/CPU-s, "
                    f"{bare['empty_polls']} empty polls",
                    flush=True,
                )
                consumed = ceiling.measure(kafka, topics[mix], transform=False)
                consuming[mix].append(consumed)
                print(
                    f"consume {mix} run {run + 1}: "
                    f"{consumed['events_per_cpu_s']:,.0f} events/CPU-s",
                    flush=True,
                )
                floors[mix].append(floor.one_pass(floor_inputs[mix]))
                print(f"floor {mix} run {run + 1}: {floors[mix][-1]:,.0f} events/CPU-s", flush=True)
        results["end_to_end"] = {
            "command": _command(args, "end_to_end"),
            "mixes": {mix: medians(r, E2E_KEYS) for mix, r in runs.items()},
        }
        results["ceiling"] = {
            "command": _command(args, "end_to_end"),
            "mixes": {mix: medians(r, CEILING_KEYS) for mix, r in ceilings.items()},
        }
        results["consume"] = {
            "command": _command(args, "end_to_end"),
            "mixes": {mix: medians(r, CEILING_KEYS) for mix, r in consuming.items()},
        }
        results["floor"] = {
            "command": _command(args, "end_to_end"),
            "interleaved": True,
            "mixes": {mix: floor.summary(floors[mix], floor_inputs[mix]) for mix in MIXES},
        }

    if "latency" in selected:
        latency_runs: dict[str, list[dict[str, Any]]] = {str(ms): [] for ms in LATENCIES_MS}
        for run in range(args.runs):
            for ms in LATENCIES_MS:
                figures = scenarios.forward(
                    kafka, topics["realistic"], sandbox_args=("--latency-ms", str(ms))
                )
                latency_runs[str(ms)].append(figures)
                print(
                    f"latency {ms} ms run {run + 1}: {figures['events_per_s']:,.0f} events/s, "
                    f"concurrency limit up to {figures['max_concurrency_limit']}",
                    flush=True,
                )
        results["latency"] = {
            "command": _command(args, "latency"),
            "latency_ms": {ms: medians(r, E2E_KEYS) for ms, r in latency_runs.items()},
        }

    if "steady" in selected:
        rate = args.steady_rate
        if rate is None:
            measured = results.get("end_to_end", {}).get("mixes", {}).get("realistic", {})
            if not measured:
                raise SystemExit("steady needs --steady-rate or the end_to_end scenario")
            rate = round(measured["events_per_s"] / 2, -2)
        steady_runs = []
        for run in range(args.runs):
            figures = scenarios.steady(kafka, rate, args.steady_seconds, PARTITIONS)
            steady_runs.append(figures)
            print(
                f"steady {rate:,.0f}/s run {run + 1}: p50 {figures['latency_p50_s']:.3f}s "
                f"p99 {figures['latency_p99_s']:.3f}s",
                flush=True,
            )
        results["steady"] = {
            "command": _command(args, "steady"),
            **medians(
                steady_runs,
                (
                    "latency_p50_s",
                    "latency_p99_s",
                    "latency_max_s",
                    "slowest_second_p99_s",
                    "peak_rss_mib",
                    "cpu_share",
                ),
            ),
            "rate": rate,
        }

    if "scale_out" in selected:
        two = []
        for run in range(args.runs):
            figures = scenarios.forward(kafka, topics["realistic"], processes=2)
            two.append(figures)
            print(f"scale_out 2 run {run + 1}: {figures['events_per_s']:,.0f} events/s", flush=True)
        one = results.get("end_to_end", {}).get("mixes", {}).get("realistic")
        if one is None:
            one = medians(
                [scenarios.forward(kafka, topics["realistic"]) for _ in range(args.runs)],
                E2E_KEYS,
            )
        results["scale_out"] = {
            "command": _command(args, "scale_out"),
            "processes": {"1": one, "2": medians(two, E2E_KEYS)},
        }


if __name__ == "__main__":
    main()
