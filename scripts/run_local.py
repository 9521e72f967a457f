"""`make run`: local Kafka, sandbox, clickstream generator and the forwarder, with live progress.

Needs nothing configured. Starts (or reuses) the local broker, starts `capi-stream sandbox`, creates
the topics, produces realistic Segment clickstream continuously (about 1 % malformed), runs
`capi-stream run` against all of it and prints consumed / delivered / dead-lettered / events/s / lag
once a second. Ctrl-C (or --duration) stops everything it started, the broker included if it was
not already running before; logs stay in .local/run/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from confluent_kafka import KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from traffic.generator import ClickstreamGenerator  # noqa: E402

RUN_DIR = REPO_ROOT / ".local" / "run"
ENV_FILE = REPO_ROOT / ".local" / "kafka.env"
LOCAL_KAFKA = REPO_ROOT / "scripts" / "local_kafka.py"
TOKEN = "sandbox-token"  # noqa: S105 - the local sandbox's well-known token
AD_ACCOUNT = "549764106778"
STOP_TIMEOUT_S = 40.0
# The sandbox scores what it received; poll its Event Quality Score often enough to watch it move.
QUALITY_POLL_S = 30
START_TIMEOUT_S = 60.0
SAMPLE = re.compile(r"^(capi_stream_\w+)(\{[^}]*\})? (\S+)$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="generated events per second")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--topic", default="clickstream")
    parser.add_argument("--dead-letter-topic", default="capi-stream-dlq")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--metrics-port", type=int, default=9108, help="0: any free port")
    args = parser.parse_args()

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    started_kafka = ensure_kafka()
    children: list[subprocess.Popen[bytes]] = []
    generator: threading.Thread | None = None
    try:
        bootstrap = read_bootstrap()
        create_topics(bootstrap, [(args.topic, args.partitions), (args.dead_letter_topic, 1)])
        sandbox, sandbox_url = start_sandbox()
        children.append(sandbox)
        metrics_port = args.metrics_port if port_free(args.metrics_port) else free_port()
        forwarder = start_forwarder(bootstrap, sandbox_url, args, metrics_port)
        children.append(forwarder)
        generator = threading.Thread(
            target=generate, args=(bootstrap, args.topic, args.rate, stop), daemon=True
        )
        generator.start()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        print(f"sandbox  {sandbox_url}   (GET {sandbox_url}/_stats)")
        print(f"metrics  {metrics_url}   health: /healthz /readyz")
        print(f"quality  capi_stream_quality_* on /metrics every {QUALITY_POLL_S}s; also:")
        print(
            f"         CAPI_STREAM_PINTEREST__API_BASE_URL={sandbox_url} "
            f"CAPI_STREAM_PINTEREST__ACCESS_TOKEN={TOKEN} "
            f"CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID={AD_ACCOUNT} capi-stream quality"
        )
        print(f"logs     {RUN_DIR}/   Ctrl-C stops everything")
        deadline = None if args.duration is None else time.monotonic() + args.duration
        show_progress(metrics_url, forwarder, stop, deadline)
    finally:
        stop.set()
        print("\nstopping…", flush=True)
        if generator is not None:
            generator.join(10)
        for child in reversed(children):
            terminate(child)
        if started_kafka:
            subprocess.run([sys.executable, str(LOCAL_KAFKA), "stop"], check=False)
    print("stopped")
    return 0


def ensure_kafka() -> bool:
    """Starts the local broker unless one is running; True when this run started it."""
    status = subprocess.run(
        [sys.executable, str(LOCAL_KAFKA), "status"], capture_output=True, check=False
    )
    if status.returncode == 0 and ENV_FILE.exists():
        return False
    subprocess.run([sys.executable, str(LOCAL_KAFKA), "up"], check=True)
    return True


def read_bootstrap() -> str:
    for line in ENV_FILE.read_text().splitlines():
        if line.startswith("KAFKA_BOOTSTRAP_SERVERS="):
            return line.split("=", 1)[1].strip()
    raise SystemExit(f"no KAFKA_BOOTSTRAP_SERVERS in {ENV_FILE}")


def create_topics(bootstrap: str, topics: list[tuple[str, int]]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    wanted = [NewTopic(name, num_partitions=n) for name, n in topics if name not in existing]
    for future in admin.create_topics(wanted).values() if wanted else ():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    log = (RUN_DIR / "sandbox.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "stream", "sandbox", "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=REPO_ROOT,
        start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
    )
    if process.stdout is None:
        raise SystemExit("cannot read the sandbox's output")
    line = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in line:
            if process.poll() is not None or time.monotonic() > deadline:
                terminate(process)
                raise SystemExit("the sandbox did not start; see .local/run/sandbox.log")
            if selector.select(0.5):
                line += os.read(process.stdout.fileno(), 4096)
    return process, line.split(b"\n", 1)[0].decode().rsplit(" ", 1)[1]


def start_forwarder(
    bootstrap: str, sandbox_url: str, args: argparse.Namespace, metrics_port: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_STREAM_")}
    env.update(
        CAPI_STREAM_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        # Identity enrichment on: the generator's users identify first, then send events
        # without their traits, which the forwarder adds back from what it learned.
        CAPI_STREAM_SOURCES=json.dumps([{"topic": args.topic, "enrich": "identity"}]),
        CAPI_STREAM_IDENTITY__STATE_DIR=str(RUN_DIR / "identity-state"),
        CAPI_STREAM_KAFKA__DEAD_LETTER_TOPIC=args.dead_letter_topic,
        CAPI_STREAM_PINTEREST__API_BASE_URL=sandbox_url,
        CAPI_STREAM_PINTEREST__ACCESS_TOKEN=TOKEN,
        CAPI_STREAM_PINTEREST__AD_ACCOUNT_ID=AD_ACCOUNT,
        CAPI_STREAM_METRICS__HOST="127.0.0.1",
        CAPI_STREAM_METRICS__PORT=str(metrics_port),
        CAPI_STREAM_PINTEREST__QUALITY__ENABLED="true",
        CAPI_STREAM_PINTEREST__QUALITY__POLL_INTERVAL_S=str(QUALITY_POLL_S),
    )
    log = (RUN_DIR / "forwarder.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "stream", "run"],
        stdout=log,
        stderr=log,
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
    )


def generate(bootstrap: str, topic: str, rate: float, stop: threading.Event) -> None:
    """Produces generated clickstream at about `rate` messages per second until `stop`."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    messages = ClickstreamGenerator(seed=int(time.time()), identify_first=True).messages(
        sys.maxsize
    )
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    next_at = time.monotonic()
    while not stop.is_set():
        for _ in range(per_tick):
            message = next(messages)
            while True:
                try:
                    producer.produce(topic, value=message.value, key=message.key)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
        next_at += tick
        stop.wait(max(0.0, next_at - time.monotonic()))
    producer.flush(10)


def show_progress(
    metrics_url: str,
    forwarder: subprocess.Popen[bytes],
    stop: threading.Event,
    deadline: float | None,
) -> None:
    previous: tuple[float, float] | None = None
    while not stop.wait(1.0):
        if forwarder.poll() is not None:
            print(f"\nthe forwarder exited ({forwarder.returncode}); see .local/run/forwarder.log")
            return
        if deadline is not None and time.monotonic() > deadline:
            return
        samples = scrape(metrics_url)
        if samples is None:
            print("\rwaiting for the forwarder…", end="", flush=True)
            continue
        consumed = total(samples, "capi_stream_events_consumed_total")
        settled = total(samples, "capi_stream_events_total")
        delivered = total(samples, "capi_stream_events_total", 'outcome="delivered"')
        dead = total(samples, "capi_stream_events_total", 'outcome="dead_lettered"')
        lag = total(samples, "capi_stream_consumer_lag")
        enriched = total(samples, "capi_stream_identity_enriched_total", 'field="em"')
        now = time.monotonic()
        rate = 0.0 if previous is None else (settled - previous[1]) / (now - previous[0])
        previous = (now, settled)
        print(
            f"\rconsumed {consumed:>10,.0f}  delivered {delivered:>10,.0f}  "
            f"dead-lettered {dead:>7,.0f}  {rate:>8,.0f} events/s  lag {lag:>7,.0f}  "
            f"e-mails added {enriched:>8,.0f}   ",
            end="",
            flush=True,
        )


def scrape(url: str) -> list[tuple[str, str, float]] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except OSError:
        return None
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples.append((match[1], match[2] or "", float(match[3])))
    return samples


def total(samples: list[tuple[str, str, float]], name: str, label: str = "") -> float:
    return sum(v for n, labels, v in samples if n == name and label in labels and v == v)


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def port_free(port: int) -> bool:
    if port == 0:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
