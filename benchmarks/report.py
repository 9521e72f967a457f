"""Turns the benchmark results into the goal verdicts, a Markdown summary and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.bench_bookkeeping import table as bookkeeping_table

GOAL_REALISTIC_EVENTS_PER_S = 60_000
GOAL_FLOOR_RATIO = 0.85
# Issue 20: per CPU, the forwarder within 15 % of the bare consume + transform loop of the same
# run; in wall-clock terms never starved (wall-clock rate within 15 % of its per-CPU rate).
GOAL_CEILING_RATIO = 0.85
GOAL_FED_RATIO = 0.85
GOAL_LATENCY_MARGIN_S = 0.1
GOAL_RSS_MIB = 250
GOAL_LATENCY_BOUND_RATIO = 0.8
# Issue 20's aim side by side with the same job in Quix Streams (events/s at the API).
GOAL_QUIX_RATIO = 2.0


NOTES = (
    "- **Profile** (`py-spy record --pid` on the forwarder for 12-15 s of a 1,000,000 page / "
    "600,000 realistic event drain, after answers were settled in one call): "
    "`Transformer.transform` is 43 % of the forwarder's samples on page messages and 61 % on the "
    "realistic mix; the rest is the consumer thread (consume and record building, 8-13 %), "
    "dispatching (the HTTP request, parsing and classifying Pinterest's answer with a warning "
    "per event, 6-9 %; settling the answer, 5-7 %), batching (6-9 %), the event loop's own "
    "work (3-5 %) and ingest's loop, none above 3 % alone. Settling was 20 % of a page drain "
    "before it took an answer at a time. The gap to the floor is that per-message Python "
    "spread over a dozen places, fixed per message, so it weighs most on the cheapest (page) "
    "messages.",
    "- **Bookkeeping in place costs 2-3x its isolated figure.** Timed inside the forwarder "
    "(temporary `perf_counter` timers around each stage during a 200,000-event realistic "
    "drain, not part of the product): ingest's loop besides the transform 6.8 µs per event "
    "(isolated, in the bookkeeping table's runs on 2026-12-01: 2.0-2.8), of which "
    "`Batcher.add` 2.5 and tracking 0.5; building the request 2.3; classifying the answer 1.1 "
    "(isolated 0.46-0.58); settling it 3.3 (isolated 1.3-1.5: offsets 0.95, delivery metrics "
    "1.7, buffer 0.3). `Batcher.add` timed in the floor's own loop costs 3.0 µs too, against "
    "0.8-0.9 µs on events built beforehand: after "
    "each transform the CPU's caches hold the transform's code and data, not the "
    "bookkeeping's. Transforming a whole poll first and booking it afterwards was ~3 % faster "
    "in process but not measurably end to end (three interleaved 200,000-event drains each: "
    "17,036 against 17,316 events per CPU-second, medians), so the forwarder books each "
    "message right after its transform.",
    "- **Neither the garbage collector, the buffer's size nor the other core's load explains "
    "it** (measured 2026-12-02, three interleaved 200,000-event realistic drains each, medians): "
    "with the collector disabled after start-up 17,138 events per CPU-second against 18,382 "
    "as it runs; with `buffer.max_events` 10,000 instead of 50,000 (fewer objects held, a "
    "smaller heap to allocate among) 17,746 against 19,029. Floor passes with the other core "
    "kept busy (a spin loop, or a JSON encode/decode loop) read as on a quiet machine: "
    "realistic 22.4k and 22.4k against 21.7k events per CPU-second, medians of 11 rounds.",
    "- **The 60,000 events/s goal** was set on a core that ran the bare map+hash reference of "
    "`benchmarks/bench_transform.py` at ~90,000 events/s; during these runs it measured "
    "~49,000 (the machine was ~1.8x slower, and loaded by other work). Wall-clock figures are "
    "further cut because the broker, the sandbox and the benchmark producer share the 2 cores: "
    "events per forwarder CPU-second is what one dedicated core would give.",
    "- **Steady state**: the messages are generated before the clock starts and their append "
    "times read back afterwards, so during the run the benchmark only produces; still, the "
    "forwarder (~0.6 of a core), the broker, the sandbox (validating and recording every "
    "event) and the producer load the 2 cores to ~2, and anything else running on the machine "
    "shows as a backlog: a run beside other work gave p50 5-8 s at the same rate, and when "
    "the generator still ran during the stream p99 was 1-4 s. The timeline of a clean run is "
    "flat (p99 0.2-0.3 s in every second) but for its last second, where the final partial "
    "batches wait out the linger.",
    "- **Peak RSS** is highest with API latency, where up to 20 requests of 1,000 events are in "
    "flight on top of the default buffer (50,000 events / 64 MiB, ~75 MiB of RSS) and "
    "librdkafka's prefetch (16 MiB queue, ~2.4x that in RSS); `buffer.max_events` or an 8 MiB "
    "`queued.max.messages.kbytes` bound it for small pods at some cost in throughput.",
    "- **Scale-out**: the second process takes CPU from the same 2 cores that already run the "
    "first forwarder, the broker and the sandbox, so it cannot add throughput here.",
)


def _noise_note(results: dict[str, Any]) -> list[str]:
    """The spread of the floor's passes in this run: how much the machine's speed moved."""
    floors = results.get("floor", {}).get("mixes", {})
    spreads = [
        f"{mix} {_n(min(figures['runs']))}-{_n(max(figures['runs']))}"
        for mix, figures in sorted(floors.items())
        if len(figures.get("runs", [])) > 1
    ]
    if not spreads:
        return []
    return [
        "- **Noise**: the same in-process pass over the same messages gave, in this run, "
        f"{'; '.join(spreads)} events/CPU-s: this machine's speed drifts that much within "
        "minutes. The floor is therefore measured between the end-to-end runs, on their own "
        "messages, and each ratio is one of medians."
    ]


def _mixes(results: dict[str, Any]) -> dict[str, Any]:
    mixes: dict[str, Any] = results.get("end_to_end", {}).get("mixes", {})
    return mixes


def _rss_values(results: dict[str, Any]) -> list[float]:
    """The peak RSS of every forwarder run of every scenario."""
    groups = [
        *_mixes(results).values(),
        *results.get("latency", {}).get("latency_ms", {}).values(),
        *results.get("scale_out", {}).get("processes", {}).values(),
    ]
    if "steady" in results:
        groups.append(results["steady"])
    return [
        run["peak_rss_mib"]
        for group in groups
        for run in group.get("runs", [])
        if run.get("peak_rss_mib") is not None
    ]


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with the measured figure and how far it is from the target."""
    verdicts: list[dict[str, Any]] = []

    def add(goal: str, measured: float | None, target: float, higher_is_better: bool) -> None:
        if measured is None:
            return
        met = measured >= target if higher_is_better else measured <= target
        verdicts.append(
            {
                "goal": goal,
                "measured": measured,
                "target": target,
                "met": met,
                "off_by_pct": 0.0 if met else 100 * abs(measured - target) / target,
            }
        )

    mixes = _mixes(results)
    floor = results.get("floor", {}).get("mixes", {})
    if "realistic" in mixes:
        add(
            "end-to-end realistic mix, events/s (wall clock, one forwarder)",
            mixes["realistic"]["events_per_s"],
            GOAL_REALISTIC_EVENTS_PER_S,
            True,
        )
    for mix, figures in mixes.items():
        if mix in floor:
            base = floor[mix]["events_per_cpu_s"]
            add(
                f"{mix}: end-to-end per forwarder CPU-second / floor",
                figures["events_per_cpu_s"] / base,
                GOAL_FLOOR_RATIO,
                True,
            )
            add(
                f"{mix}: end-to-end wall-clock events/s / floor",
                figures["events_per_s"] / base,
                GOAL_FLOOR_RATIO,
                True,
            )
    ceilings = results.get("ceiling", {}).get("mixes", {})
    for mix, figures in mixes.items():
        bare = ceilings.get(mix, {}).get("events_per_cpu_s")
        if bare and figures.get("events_per_cpu_s"):
            add(
                f"{mix}: end-to-end per forwarder CPU-second / consume + transform ceiling",
                figures["events_per_cpu_s"] / bare,
                GOAL_CEILING_RATIO,
                True,
            )
        if figures.get("events_per_cpu_s"):
            add(
                f"{mix}: end-to-end wall-clock events/s / per forwarder CPU-second (fed)",
                figures["events_per_s"] / figures["events_per_cpu_s"],
                GOAL_FED_RATIO,
                True,
            )
    steady = results.get("steady")
    if steady and steady.get("latency_p99_s") is not None:
        add(
            "steady state p99 Kafka-append → Pinterest-ack, seconds",
            steady["latency_p99_s"],
            results["parameters"]["linger_ms"] / 1000 + GOAL_LATENCY_MARGIN_S,
            False,
        )
    rss = _rss_values(results)
    if rss:
        add("peak RSS of any forwarder, MiB", max(rss), GOAL_RSS_MIB, False)
    latency = results.get("latency", {}).get("latency_ms", {})
    if "300" in latency and "realistic" in mixes:
        add(
            "throughput at 300 ms API latency / no latency",
            latency["300"]["events_per_s"] / mixes["realistic"]["events_per_s"],
            GOAL_LATENCY_BOUND_RATIO,
            True,
        )
    for mix, sides in results.get("peers", {}).get("mixes", {}).items():
        add(
            f"{mix}: events/s, capi-stream / the same job in Quix Streams",
            sides["capi-stream"]["events_per_s"] / sides["quix-streams"]["events_per_s"],
            GOAL_QUIX_RATIO,
            True,
        )
    return verdicts


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:,.0f} ms"


def _identity(identity: dict[str, Any] | None) -> list[str]:
    if not identity:
        return []
    uplift, memory = identity["uplift"], identity["memory"]
    without, with_, reference = uplift["without"], uplift["with"], uplift["traits_on_every_event"]
    return [
        "## Identity enrichment (realistic mix, users identify once, later events without traits)",
        "",
        "| | bottom-funnel events with em | events with external_id | messages / CPU-s |",
        "|---|---:|---:|---:|",
        f"| without enrichment | {without['bottom_funnel_with_em']:.1%} | "
        f"{without['with_external_id']:.1%} | {_n(without['messages_per_cpu_s'])} |",
        f"| with `enrich: identity` | {with_['bottom_funnel_with_em']:.1%} | "
        f"{with_['with_external_id']:.1%} | {_n(with_['messages_per_cpu_s'])} |",
        f"| reference: traits on every event, no enrichment | "
        f"{reference['bottom_funnel_with_em']:.1%} | {reference['with_external_id']:.1%} | "
        f"{_n(reference['messages_per_cpu_s'])} |",
        "",
        f"The identify calls allow e-mail on {uplift['bottom_funnel_allowed_em']:.1%} of the "
        f"bottom-funnel events. Enrichment costs {uplift['cost']:.0%} of the transform stage's "
        f"messages per CPU-second ({with_['store_writes_per_message']} store writes, i.e. "
        "changelog records, per message). With "
        f"{memory['identities']:,} identities stored over 6 partitions: RSS "
        f"{memory['rss_before_mib']} → {memory['rss_peak_mib']} MiB (+{memory['rss_added_mib']}), "
        f"disk {memory['disk_mib']} MiB ({memory['disk_bytes_per_identity']} B per identity), "
        f"{_n(memory['learn_per_s'])} learned/s, {_n(memory['lookups_per_s'])} lookups/s.",
        "",
        f"Command: `{identity['command']}`",
        "",
    ]


def markdown(results: dict[str, Any], chart_name: str) -> str:
    machine = results["machine"]
    parameters = results["parameters"]
    lines = [
        f"# Benchmark results {results['date'][:10]}",
        "",
        f"Command: `{results['command']}` (took {results['duration_s']:.0f} s). "
        f"N = {parameters['events']:,} events per forwarder run, {parameters['partitions']} "
        f"partitions, linger {parameters['linger_ms']} ms, medians of {parameters['runs']} "
        "run(s).",
        "",
        f"Machine: {machine['cpus']} x {machine['cpu']}, {machine['memory_gib']} GiB; "
        f"{machine['platform']}; Python {machine['python']}; Kafka {machine['kafka']} (KRaft, "
        f"local); confluent-kafka {machine['confluent_kafka']} / librdkafka "
        f"{machine['librdkafka']}. Load average {results['load_at_start']:.2f} at start, "
        f"{results['load_at_end']:.2f} at end. **Only {machine['cpus']} cores: the broker, the "
        "sandbox (which validates every event too) and the benchmark's producer share them with "
        "the forwarder**, so wall-clock events/s understate what the forwarder does with a core "
        "of its own; events per forwarder CPU-second are the load-independent figure.",
        "",
        f"![chart]({chart_name})",
        "",
    ]
    floor = results.get("floor", {}).get("mixes", {})
    mixes = _mixes(results)
    if floor or mixes:
        lines += [
            "## Floor and end-to-end",
            "",
            "| mix | bytes/msg | floor ev/CPU-s | e2e ev/s (wall) | e2e ev/fwd-CPU-s | "
            "CPU-s / 1000 ev | ratio CPU | ratio wall | p50 / p99 delivery | peak RSS | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for mix in sorted(set(floor) | set(mixes)):
            f = floor.get(mix, {})
            e = mixes.get(mix, {})
            base = f.get("events_per_cpu_s")
            ratio_cpu = e["events_per_cpu_s"] / base if base and e else None
            ratio_wall = e["events_per_s"] / base if base and e else None
            lines.append(
                f"| {mix} | {_n(f.get('bytes_per_event'))} | {_n(base)} | "
                f"{_n(e.get('events_per_s'))} | {_n(e.get('events_per_cpu_s'))} | "
                f"{_n(e.get('cpu_s_per_1000'), 3)} | {_n(ratio_cpu, 2)} | {_n(ratio_wall, 2)} | "
                f"{_ms(e.get('latency_p50_s'))} / {_ms(e.get('latency_p99_s'))} | "
                f"{_n(e.get('peak_rss_mib'))} MiB | {_n(e.get('load_before'), 2)} |"
            )
        lines += [
            "",
            "Floor: decode → map → hash → validate → batch-encode of the topic's own N messages "
            "in one process (CPU time), by a fresh Transformer per pass, so its hash memo starts "
            "cold as the forwarder's does; measured right after each end-to-end run and its "
            "ceiling, so both sides of a ratio share the machine's state. End-to-end: the "
            "pre-produced topic drained by one `capi-stream run` until every offset is "
            "committed, timed from its first consumed message to the arrival of its last "
            "request at the sandbox (the last commit follows within the 1 s commit interval). "
            "Delivery latency (forwarder histogram, "
            "Kafka timestamp → ack) in a backlog drain is dominated by how long the backlog "
            "waited, so it is reported but not meaningful here; see steady state.",
            "",
        ]
        if "floor" in results:
            lines += [f"Floor command: `{results['floor']['command']}`  ", ""]
        if "end_to_end" in results:
            lines += [f"End-to-end command: `{results['end_to_end']['command']}`", ""]
    lines += _ceiling_lines(results)
    lines += _thread_lines(results)
    lines += _bookkeeping_lines(results)
    latency = results.get("latency", {}).get("latency_ms", {})
    if latency:
        lines += [
            "## Latency-bound (sandbox answers after a fixed delay; realistic mix)",
            "",
            "| API latency | ev/s (wall) | vs no latency | max concurrency limit | max in flight |",
            "|---|---:|---:|---:|---:|",
        ]
        baseline = mixes.get("realistic", {}).get("events_per_s")
        for ms, figures in latency.items():
            share = figures["events_per_s"] / baseline if baseline else None
            lines.append(
                f"| {ms} ms | {_n(figures['events_per_s'])} | {_n(share, 2)} | "
                f"{_n(figures.get('max_concurrency_limit'))} | {_n(figures.get('max_inflight'))} |"
            )
        lines += ["", f"Command: `{results['latency']['command']}`", ""]
    steady = results.get("steady")
    if steady:
        lines += [
            "## Steady state (realistic mix at a fixed rate)",
            "",
            f"Rate {steady['rate']:,.0f} events/s (~50 % of the measured end-to-end maximum) for "
            f"{results['steady']['runs'][0]['seconds']:.0f} s per run. Latency per event = "
            "arrival of its request at the sandbox - the broker's append time (LogAppendTime "
            "topic), after a 5 s warm-up; the sandbox acknowledges a few ms later.",
            "",
            "| p50 | p99 | max | slowest second's p99 | seconds with p99 over the goal | "
            "forwarder CPU share | peak RSS |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {_ms(steady['latency_p50_s'])} | {_ms(steady['latency_p99_s'])} | "
            f"{_ms(steady['latency_max_s'])} | {_ms(steady.get('slowest_second_p99_s'))} | "
            f"{_seconds_over(results)} | {_n(steady['cpu_share'], 2)} | "
            f"{_n(steady['peak_rss_mib'])} MiB |",
            "",
            "Slowest second: the p99 of the events appended in each second, the worst second of "
            "the run (median over runs); seconds over the goal: per run, how many of its seconds "
            "had a p99 above linger + 100 ms. A few slow seconds are a hiccup (the machine, a "
            "pause); a climb through the run would be a backlog.",
            "",
            f"Command: `{steady['command']}`",
            "",
        ]
    scale = results.get("scale_out", {}).get("processes", {})
    if scale:
        lines += [
            "## Scale-out (one consumer group, realistic mix)",
            "",
            "| forwarders | ev/s (wall) | ev per forwarder-CPU-s | peak RSS (each) |",
            "|---:|---:|---:|---:|",
        ]
        for count, figures in scale.items():
            lines.append(
                f"| {count} | {_n(figures['events_per_s'])} | {_n(figures['events_per_cpu_s'])} "
                f"| {_n(figures['peak_rss_mib'])} MiB |"
            )
        lines += [
            "",
            "On 2 cores shared with the broker and the sandbox a second process mostly competes "
            "for the same CPU; scale-out pays off with cores to spare.",
            "",
            f"Command: `{results['scale_out']['command']}`",
            "",
        ]
    lines += _identity(results.get("identity"))
    lines += _peer_lines(results)
    verdicts = results.get("goals", [])
    if verdicts:
        lines += [
            "## Goals",
            "",
            "| goal | measured | target | met | short by |",
            "|---|---:|---:|---|---:|",
        ]
        for verdict in verdicts:
            lines.append(
                f"| {verdict['goal']} | {_n(verdict['measured'], 2)} | "
                f"{_n(verdict['target'], 2)} | {'yes' if verdict['met'] else 'no'} | "
                f"{'' if verdict['met'] else _n(verdict['off_by_pct']) + ' %'} |"
            )
        lines.append("")
    lines += ["## What limits the figures", "", *NOTES, *_noise_note(results), ""]
    return "\n".join(lines)


def _ceiling_lines(results: dict[str, Any]) -> list[str]:
    ceilings = results.get("ceiling", {}).get("mixes", {})
    if not ceilings:
        return []
    mixes = _mixes(results)
    floor = results.get("floor", {}).get("mixes", {})
    consume = results.get("consume", {}).get("mixes", {})
    answers = results.get("bookkeeping", {}).get("mixes", {})
    lines = [
        "## Per CPU-second: end-to-end against the consume + transform ceiling",
        "",
        "| mix | e2e ev/fwd-CPU-s | ceiling ev/CPU-s | e2e / ceiling | floor ev/CPU-s | "
        "e2e / floor | e2e ev/s (wall) | wall / per-CPU | ceiling ev/s (wall) | "
        "ceiling empty polls | consume only ev/CPU-s | e2e / floor at best | "
        "event loop on a CPU / waiting for one | sandbox CPU / whole machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mix in sorted(ceilings):
        c = ceilings[mix]
        e = mixes.get(mix, {})
        f = floor.get(mix, {})
        per_cpu = e.get("events_per_cpu_s")
        consumed = consume.get(mix, {}).get("events_per_cpu_s")

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        lines.append(
            f"| {mix} | {_n(per_cpu)} | {_n(c.get('events_per_cpu_s'))} | "
            f"{_n(ratio(per_cpu, c.get('events_per_cpu_s')), 2)} | "
            f"{_n(f.get('events_per_cpu_s'))} | "
            f"{_n(ratio(per_cpu, f.get('events_per_cpu_s')), 2)} | "
            f"{_n(e.get('events_per_s'))} | {_n(ratio(e.get('events_per_s'), per_cpu), 2)} | "
            f"{_n(c.get('events_per_s'))} | {_n(c.get('empty_polls'))} "
            f"({_n(c.get('empty_poll_s'), 1)} s) | {_n(consumed)} | "
            f"{_n(_best_floor_ratio(f, consumed, answers.get(mix, {}).get('classify')), 2)} | "
            f"{_n(e.get('loop_running'), 2)} / {_n(e.get('loop_waiting'), 2)} | "
            f"{_n(e.get('sandbox_cpu'), 2)} / {_n(e.get('machine_busy'), 2)} |"
        )
    lines += [
        "",
        "Ceiling: right after each end-to-end run, the same topic drained in the benchmark's own "
        "process by a bare loop with the forwarder's consumer settings, record building and "
        "Transformer, and nothing else (benchmarks/ceiling.py); CPU of all its threads, from the "
        "first message to the last. e2e / ceiling is what bookkeeping, sending and settling "
        "cost per CPU; wall / per-CPU below 1 means the forwarder waited (for the consumer, or "
        "for CPU the broker and the sandbox took on these shared cores). Which of the two: "
        "the scheduler's own accounting of the forwarder's event-loop thread over the drain "
        "(/proc/PID/schedstat), the share of the time it ran on a CPU and the share it was "
        "runnable but waiting for one; what is left of 1 is the time it had nothing to do (the "
        f"drain's last partial batches lingering {results['parameters']['linger_ms']} ms before "
        "they are sent among it). "
        "Sandbox CPU: CPU-seconds per second the sandbox (which validates every event against "
        "the spec) took on the same 2 cores; whole machine: CPUs busy on average during the "
        "drain, every process included (/proc/stat), out of 2. The end-to-end time runs "
        "from the first consumed message to the arrival of the last request at the sandbox; "
        "the commit of the last offset follows within the 1 s commit interval (in the JSON as "
        "seconds_to_commit).",
        "",
        "Consume only: the same loop without the transform, right after the ceiling: what "
        "taking a message off Kafka costs any forwarder before it does anything with it. "
        "e2e / floor at best: the ratio a forwarder would reach if consuming and reading "
        "Pinterest's answer (the bookkeeping table's classify, when measured) were all it did "
        "besides the floor's work — no tracking, batching bookkeeping, HTTP, settling or "
        "metrics. Where it is near or below the 0.85 goal, the goal cannot be met by reducing "
        "bookkeeping.",
        "",
        f"Command: `{results['ceiling']['command']}`",
        "",
    ]
    return lines


def _thread_lines(results: dict[str, Any]) -> list[str]:
    """Where the forwarder's CPU goes, by thread, against the floor: µs per event."""
    mixes = {m: e for m, e in _mixes(results).items() if e.get("loop_us_per_event")}
    if not mixes:
        return []
    floor = results.get("floor", {}).get("mixes", {})
    lines = [
        "## Where the forwarder's CPU goes, by thread (µs per event)",
        "",
        "| mix | floor | event loop | of which beyond the floor | librdkafka's threads | "
        "other threads | end-to-end | floor / event loop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mix in sorted(mixes):
        e = mixes[mix]
        floor_per_cpu_s = floor.get(mix, {}).get("events_per_cpu_s")
        floor_us = 1e6 / floor_per_cpu_s if floor_per_cpu_s else None
        loop_us = e["loop_us_per_event"]
        per_cpu = e.get("events_per_cpu_s")
        lines.append(
            f"| {mix} | {_n(floor_us, 1)} | {_n(loop_us, 1)} | "
            f"{_n(loop_us - floor_us if floor_us else None, 1)} | "
            f"{_n(e.get('librdkafka_us_per_event'), 1)} | "
            f"{_n(e.get('other_threads_us_per_event'), 1)} | "
            f"{_n(1e6 / per_cpu if per_cpu else None, 1)} | "
            f"{_n(floor_us / loop_us if floor_us else None, 2)} |"
        )
    lines += [
        "",
        "From the same end-to-end runs (medians): the forwarder's event-loop thread, which runs "
        "the transform and every piece of bookkeeping, on a CPU (/proc/PID/schedstat); "
        "librdkafka's own threads (rdk:…: fetching, the producers' sending); the other threads "
        "(the consumer's polling thread: consume() and building each record, and short-lived "
        "worker threads). Beyond the floor: what the event loop spends per event besides the "
        "floor's decode → map → hash → validate → batch-encode. floor / event loop is the "
        "e2e / floor ratio the forwarder would reach if consuming cost nothing at all.",
        "",
    ]
    return lines


def _seconds_over(results: dict[str, Any]) -> str:
    goal = results["parameters"]["linger_ms"] / 1000 + GOAL_LATENCY_MARGIN_S
    counts = [
        f"{sum(p99 > goal for p99 in run['p99_by_second_s'])} of {len(run['p99_by_second_s'])}"
        for run in results["steady"]["runs"]
        if "p99_by_second_s" in run
    ]
    return ", ".join(counts) or "-"


def _best_floor_ratio(
    floor: dict[str, Any], consumed_per_cpu_s: float | None, answer_us: float | None
) -> float | None:
    """Floor cost / (floor cost + consuming + reading the answer), per event."""
    floor_per_cpu_s = floor.get("events_per_cpu_s")
    if not floor_per_cpu_s or not consumed_per_cpu_s:
        return None
    floor_us = 1e6 / float(floor_per_cpu_s)
    return floor_us / (floor_us + 1e6 / consumed_per_cpu_s + (answer_us or 0.0))


def _peer_lines(results: dict[str, Any]) -> list[str]:
    peers = results.get("peers", {}).get("mixes", {})
    if not peers:
        return []
    lines = [
        "## Side by side: the same job in Quix Streams",
        "",
        "| mix | ev/s capi-stream | ev/s Quix | ratio | ev/CPU-s capi-stream | ev/CPU-s Quix | "
        "ratio | peak RSS capi-stream | peak RSS Quix |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mix, sides in peers.items():
        ours, quix = sides["capi-stream"], sides["quix-streams"]
        lines.append(
            f"| {mix} | {_n(ours['events_per_s'])} | {_n(quix['events_per_s'])} | "
            f"{_n(ours['events_per_s'] / quix['events_per_s'], 2)} | "
            f"{_n(ours['events_per_cpu_s'])} | {_n(quix['events_per_cpu_s'])} | "
            f"{_n(ours['events_per_cpu_s'] / quix['events_per_cpu_s'], 2)} | "
            f"{_n(ours['peak_rss_mib'])} MiB | {_n(quix['peak_rss_mib'])} MiB |"
        )
    lines += [
        "",
        "Each run a fresh group drains the mix's topic through a fresh sandbox, capi-stream and "
        "benchmarks/peers/quix_job.py (Quix Streams 3.28, with capi-stream's own Transformer, "
        "batches of 1,000 per partition and checkpoint, httpx) taking turns; both measured from "
        "outside, from the group's first offset commit to the commit of the last offset (events "
        "committed in between over wall-clock and process CPU seconds). The Quix job drops "
        "invalid messages instead of dead-lettering them and has no metrics, which only makes "
        "it cheaper. Redpanda Connect is not measured: its licence is not open source, and the "
        "Benthos core it builds on has no Kafka input.",
        "",
        f"Command: `{results['peers']['command']}`",
        "",
    ]
    return lines


def _bookkeeping_lines(results: dict[str, Any]) -> list[str]:
    figures = results.get("bookkeeping", {}).get("mixes", {})
    if not figures:
        return []
    return [
        "## Per-event budget of bookkeeping (µs of CPU per event, each stage in isolation)",
        "",
        *bookkeeping_table(figures),
        "",
        "From benchmarks/bench_bookkeeping.py (its docstring says what each stage covers): the "
        "best of several passes over the same generated messages, transformed beforehand.",
        "",
        f"Command: `{results['bookkeeping']['command']}`",
        "",
    ]


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    floor = results.get("floor", {}).get("mixes", {})
    mixes = _mixes(results)
    names = [m for m in ("order_completed", "realistic", "page") if m in floor or m in mixes]
    width = 0.27
    series = (
        ("floor (ev/CPU-s)", [floor.get(m, {}).get("events_per_cpu_s") or 0 for m in names]),
        ("e2e (ev/fwd-CPU-s)", [mixes.get(m, {}).get("events_per_cpu_s") or 0 for m in names]),
        ("e2e (ev/s wall)", [mixes.get(m, {}).get("events_per_s") or 0 for m in names]),
    )
    for index, (label, values) in enumerate(series):
        axes[0].bar(
            [i + (index - 1) * width for i in range(len(names))], values, width, label=label
        )
    axes[0].axhline(GOAL_REALISTIC_EVENTS_PER_S, color="grey", linestyle="--", linewidth=0.8)
    axes[0].set_xticks(range(len(names)), names)
    axes[0].set_title("Floor vs end-to-end (one forwarder)")
    axes[0].set_ylabel("events/s")
    axes[0].legend(fontsize=8)

    latency = results.get("latency", {}).get("latency_ms", {})
    labels = ["0", *latency]
    values = [mixes.get("realistic", {}).get("events_per_s") or 0]
    values += [figures["events_per_s"] for figures in latency.values()]
    axes[1].bar([f"{label} ms" for label in labels], values, color="tab:purple")
    axes[1].set_title("Realistic mix vs API latency")
    axes[1].set_ylabel("events/s (wall)")

    scale = results.get("scale_out", {}).get("processes", {})
    steady = results.get("steady")
    if scale:
        axes[2].bar(
            [f"{count} forwarder(s)" for count in scale],
            [figures["events_per_s"] for figures in scale.values()],
            color="tab:green",
        )
        axes[2].set_ylabel("events/s (wall)")
    title = "Scale-out (realistic)"
    if steady and steady.get("latency_p99_s") is not None:
        title += (
            f"\nsteady {steady['rate']:,.0f}/s: p50 {1000 * steady['latency_p50_s']:.0f} ms,"
            f" p99 {1000 * steady['latency_p99_s']:.0f} ms"
        )
    axes[2].set_title(title)
    figure.suptitle(
        f"capi-stream benchmarks {results['date'][:10]} — {results['machine']['cpus']} cores "
        "shared by forwarder, broker and sandbox"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
