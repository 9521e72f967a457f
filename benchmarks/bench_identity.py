"""Identity enrichment: the match-key uplift on realistic traffic, its CPU cost, and the memory
and disk of 1,000,000 stored identities.

    .venv/bin/python benchmarks/bench_identity.py                 # what `make bench` runs
    .venv/bin/python benchmarks/bench_identity.py --events 20000 --identities 100000   # quick

Uplift and cost: the realistic Segment mix as server-side libraries send it (`identify_first`: a
known user identifies once, later events carry only userId/anonymousId) through
`Transformer.transform`, without enrichment and with it on one RocksDB store (as one partition
owns it; the changelog write is a librdkafka `produce` per change, counted, not timed). "Allowed"
is what the identify calls make possible: bottom-funnel events of users who identified with an
e-mail before the event. CPU is process time (RocksDB's threads included), with the garbage
collector as the forwarder runs it (benchmarks.lab.forwarder_gc), best of `--runs`; it is also
given for the reference: the same generator with traits on every event (browser
libraries), i.e. what events carrying those identifiers cost without any lookup.

Memory: `--identities` users learned into RocksDB stores spread over 6 partitions as the
forwarder keeps them, then as many random lookups; RSS (this process) and disk are reported.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.lab import forwarder_gc  # noqa: E402
from stream.identity.profile import NOTHING_LEARNED, IdentityProfiles  # noqa: E402
from stream.identity.rocks import RocksResources, RocksStore  # noqa: E402
from stream.models import PinterestEvent  # noqa: E402
from stream.settings import PinterestSettings, Settings, SourceSettings  # noqa: E402
from stream.spec import BOTTOM_FUNNEL_EVENTS  # noqa: E402
from stream.transform import Transformer  # noqa: E402
from traffic.generator import ClickstreamGenerator  # noqa: E402

PARTITIONS = 6
TTL_S = 30 * 86_400.0


class CountingStore:
    """A RocksStore counting its writes (each is one changelog record in the forwarder)."""

    def __init__(self, local: RocksStore) -> None:
        self.local = local
        self.get = local.get
        self.writes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        self.local.put(key, value)

    def delete(self, key: bytes) -> None:
        self.local.delete(key)


def allowed(messages: list[bytes]) -> tuple[int, int]:
    """Bottom-funnel track events, and those whose user identified with an e-mail before."""
    identified: set[str] = set()
    names = {"Product Added": 1, "Checkout Started": 1, "Order Completed": 1, "Signed Up": 1}
    total = possible = 0
    for value in messages:
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(message, dict):
            continue
        anonymous = message.get("anonymousId")
        if (
            message.get("type") == "identify"
            and isinstance(anonymous, str)
            and message.get("traits", {}).get("email")
        ):
            identified.add(anonymous)
        elif message.get("type") == "track" and message.get("event") in names:
            total += 1
            possible += anonymous in identified
    return total, possible


def transform_all(
    messages: list[bytes], enrich: bool, directory: Path
) -> tuple[float, dict[str, float], int]:
    """CPU seconds, the shares of events carrying em / external_id, and the store writes."""
    source = SourceSettings(topic="web", enrich="identity" if enrich else None)
    settings = Settings(sources=[source], pinterest=PinterestSettings(ad_account_id="1"))
    transformer = Transformer(settings)
    store = CountingStore(RocksStore(directory / "p0", RocksResources(), TTL_S)) if enrich else None
    now = int(time.time() * 1000)
    with forwarder_gc():
        started = time.process_time()
        results = [transformer.transform(source, value, now, store) for value in messages]
        cpu = time.process_time() - started
    events = [r for r in results if type(r) is PinterestEvent]
    bottom = [orjson.loads(e.body) for e in events if e.event_name in BOTTOM_FUNNEL_EVENTS]
    every = [orjson.loads(e.body) for e in events]
    shares = {
        "events": len(events),
        "bottom_funnel_events": len(bottom),
        "bottom_funnel_with_em": sum("em" in e["user_data"] for e in bottom) / max(1, len(bottom)),
        "with_external_id": sum("external_id" in e["user_data"] for e in every)
        / max(1, len(every)),
    }
    writes = store.writes if store is not None else 0
    if store is not None:
        store.local.close()
    return cpu, shares, writes


def _best(messages: list[bytes], enrich: bool, runs: int) -> tuple[int, dict[str, float], int]:
    """Messages per CPU-second of the best of `runs`, with the shares and writes of the last."""
    best = float("inf")
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            cpu, shares, writes = transform_all(messages, enrich, Path(directory))
        best = min(best, cpu)
    return round(len(messages) / best), shares, writes


def uplift(events: int, runs: int) -> dict[str, Any]:
    messages = [
        m.value
        for m in ClickstreamGenerator(seed=11, poison_ratio=0.0, identify_first=True).messages(
            events
        )
    ]
    total, possible = allowed(messages)
    results: dict[str, Any] = {"messages": len(messages)}
    for enrich in (False, True):
        messages_per_cpu_s, shares, writes = _best(messages, enrich, runs)
        results["with" if enrich else "without"] = {
            **shares,
            "messages_per_cpu_s": messages_per_cpu_s,
            "store_writes_per_message": round(writes / len(messages), 3),
        }
    # The same users as browser libraries send them (traits on every event): what the enriched
    # events cost when the producer itself carries the identifiers.
    reference = [m.value for m in ClickstreamGenerator(seed=11, poison_ratio=0.0).messages(events)]
    messages_per_cpu_s, shares, _ = _best(reference, False, runs)
    results["traits_on_every_event"] = {**shares, "messages_per_cpu_s": messages_per_cpu_s}
    results["bottom_funnel_allowed_em"] = possible / max(1, total)
    results["cost"] = (
        1 - results["with"]["messages_per_cpu_s"] / results["without"]["messages_per_cpu_s"]
    )
    return results


def memory(identities: int, seed: int = 3) -> dict[str, Any]:
    """RSS and disk with `identities` users (e-mail, phone, names, city, external_id) stored."""
    process = psutil.Process()
    rng = random.Random(seed)
    profiles = IdentityProfiles(TTL_S)
    before = process.memory_info().rss
    peak = before
    with tempfile.TemporaryDirectory() as directory:
        resources = RocksResources()
        stores = [
            RocksStore(Path(directory) / f"p{p}", resources, TTL_S) for p in range(PARTITIONS)
        ]
        started = time.perf_counter()
        for user in range(identities):
            user_data = {
                field: [f"{rng.getrandbits(256):064x}"]
                for field in ("em", "ph", "fn", "ln", "ct", "zp", "external_id")
            }
            message = {"userId": f"user-{user}", "anonymousId": f"anon-{user}"}
            profiles.learn(
                stores[user % PARTITIONS], user % PARTITIONS, message, user_data, 1, NOTHING_LEARNED
            )
            if user % 50_000 == 0:
                peak = max(peak, process.memory_info().rss)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        hits = 0
        for _ in range(identities):
            user = rng.randrange(identities)
            event: dict[str, Any] = {"event_time": 2, "user_data": {}}
            profiles.enrich(
                stores[user % PARTITIONS],
                user % PARTITIONS,
                {"anonymousId": f"anon-{user}"},
                event,
                NOTHING_LEARNED,
            )
            hits += "em" in event["user_data"]
            if hits % 50_000 == 0:
                peak = max(peak, process.memory_info().rss)
        lookup_s = time.perf_counter() - started
        peak = max(peak, process.memory_info().rss)
        disk = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
        for store in stores:
            store.close()
    return {
        "identities": identities,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "rss_added_mib": round((peak - before) / 2**20, 1),
        "disk_mib": round(disk / 2**20, 1),
        "disk_bytes_per_identity": round(disk / identities),
        "learn_per_s": round(identities / load_s),
        "lookups_per_s": round(identities / lookup_s),
        "lookup_hit_ratio": hits / identities,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--identities", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # Memory first, so the RSS it reports is not the uplift run's messages and results.
    stored = memory(args.identities)
    figures = {"uplift": uplift(args.events, args.runs), "memory": stored}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
