"""End-to-end forwarder throughput: N realistic events through the real `capi-stream run`.

    .venv/bin/python benchmarks/bench_forwarder.py --events 200000

Produces the generator's realistic mix (1 % malformed) to a 3-partition topic first, then starts
the forwarder against the sandbox and times consume → send → commit of the whole backlog.
Prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.forwarder.harness import forwarder_config, running_forwarder  # noqa: E402
from tests.kafka_helpers import ENV_FILE, Broker, read_bootstrap  # noqa: E402
from tests.sandbox_helpers import running_sandbox  # noqa: E402
from traffic.generator import ClickstreamGenerator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--poison-ratio", type=float, default=0.01)
    args = parser.parse_args()
    bootstrap = read_bootstrap(ENV_FILE)
    if bootstrap is None:
        raise SystemExit("start the broker first: make kafka-up")
    kafka = Broker(bootstrap)
    topic = kafka.create_topic(partitions=args.partitions)
    dlq = kafka.create_topic()
    group = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    messages = ClickstreamGenerator(seed=1, poison_ratio=args.poison_ratio).messages(args.events)
    kafka.produce(topic, ((m.key, m.value) for m in messages))
    print(f"produced {args.events:,} messages in {time.monotonic() - started:.1f}s")
    ends = kafka.end_offsets(topic)
    with running_sandbox() as sandbox, tempfile.TemporaryDirectory() as directory:
        config = forwarder_config(
            bootstrap, sandbox, [topic], group_id=group, dead_letter_topic=dlq
        )
        with running_forwarder(config, Path(directory)) as forwarder:
            began = time.monotonic()
            while kafka.committed_offsets(group, topic) != ends:
                if forwarder.process.poll() is not None:
                    raise SystemExit(forwarder.log()[-3000:])
                time.sleep(0.2)
            elapsed = time.monotonic() - began
            metrics = forwarder.metrics()
            delivered = sum(
                v
                for k, v in metrics.items()
                if k.startswith("capi_stream_events_total") and 'outcome="delivered"' in k
            )
            dead = sum(
                v for k, v in metrics.items() if k.startswith("capi_stream_dead_letters_total")
            )
            requests = sum(
                v for k, v in metrics.items() if k.startswith("capi_stream_requests_total")
            )
        events = sandbox.stats()["events"]
    print(
        f"{args.events:,} messages forwarded and committed in {elapsed:.1f}s: "
        f"{args.events / elapsed:,.0f} messages/s; delivered {delivered:,.0f}, "
        f"dead-lettered {dead:,.0f}, {requests:,.0f} requests; "
        f"sandbox processed {events['processed']:,}, duplicates {events['duplicate']}"
    )


if __name__ == "__main__":
    main()
