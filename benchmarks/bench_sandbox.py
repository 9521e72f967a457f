"""Throughput of `capi-stream sandbox` with validation on, in 1,000-event batches.

Two figures:
- `http`: a real sandbox subprocess fed by an aiohttp client over loopback. Reported as events
  per wall-clock second and per second of the sandbox's own CPU time; the latter is its
  one-core capacity, independent of the client that shares the machine.
- `inproc`: the request pipeline (decode + schema check + per-event rules + stats + recording)
  called directly, without HTTP, on one core.

    .venv/bin/python benchmarks/bench_sandbox.py [--events 300000] [--kind rich|minimal]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from stream.sandbox.server import Sandbox, SandboxConfig  # noqa: E402

ACCOUNT = "549764106778"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def make_event(index: int, kind: str, now: int) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": "checkout" if index % 3 == 0 else "page_visit",
        "action_source": "web",
        "event_time": now - 30,
        "event_id": f"bench-{index}",
        "user_data": {
            "em": [_sha(f"user{index}@example.com")],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605",
        },
    }
    if kind == "rich":
        event["user_data"].update(
            {
                "ph": [_sha("16505551234")],
                "fn": [_sha("jane")],
                "ln": [_sha("doe")],
                "ge": [_sha("f")],
                "db": [_sha("19900214")],
                "ct": [_sha("sanfrancisco")],
                "st": [_sha("ca")],
                "zp": [_sha("94107")],
                "country": [_sha("us")],
                "external_id": [_sha(f"user-{index}")],
                "click_id": "dj0yJnU9b2JDcFFHekV4SHJNcmVrbFBkUEdqakh0akdUT1VjVVUmcD0y",
            }
        )
        event["event_source_url"] = "https://shop.example.com/checkout/complete"
        event["language"] = "en"
        event["custom_data"] = {
            "currency": "USD",
            "value": "72.39",
            "order_id": str(index),
            "num_items": 3,
            "content_ids": ["sku-001", "sku-002"],
            "contents": [
                {"id": "sku-001", "item_price": "14.99", "quantity": 2},
                {"id": "sku-002", "item_price": "42.41", "quantity": 1},
            ],
        }
    return event


def make_bodies(total: int, batch: int, kind: str) -> list[bytes]:
    now = int(time.time())
    return [
        orjson.dumps({"data": [make_event(i, kind, now) for i in range(start, start + batch)]})
        for start in range(0, total, batch)
    ]


def bench_inproc(bodies: list[bytes], batch: int) -> float:
    sandbox = Sandbox(SandboxConfig())
    headers: dict[str, str] = {}
    # The server turns the cyclic collector off while it handles a batch; do the same here.
    gc.disable()
    try:
        started = time.process_time()
        for body in bodies:
            response = sandbox._process(ACCOUNT, body, sandbox.faults, False, headers)
            assert response.status == 200, response.body
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    return len(bodies) * batch / elapsed


async def _send_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    queue = list(reversed(bodies))
    headers = {"Authorization": "Bearer sandbox-token", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(
                    f"{url}/v5/ad_accounts/{ACCOUNT}/events", data=body, headers=headers
                ) as response:
                    await response.read()
                    assert response.status == 200, response.status

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def bench_http(bodies: list[bytes], batch: int, concurrency: int) -> tuple[float, float]:
    process = subprocess.Popen(
        [sys.executable, "-m", "stream", "sandbox", "--port", "0", "--rate-limit", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().decode().split()[-1]
        sandbox_process = psutil.Process(process.pid)
        cpu_before = sum(sandbox_process.cpu_times()[:2])
        wall_started = time.perf_counter()
        asyncio.run(_send_all(url, bodies, concurrency))
        wall = time.perf_counter() - wall_started
        cpu = sum(sandbox_process.cpu_times()[:2]) - cpu_before
    finally:
        process.terminate()
        process.wait(10)
    events = len(bodies) * batch
    return events / wall, events / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--kind", choices=("rich", "minimal"), default="rich")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    bodies = make_bodies(args.events, args.batch, args.kind)
    size = sum(map(len, bodies)) / (len(bodies) * args.batch)
    print(
        f"{args.events} {args.kind} events ({size:.0f} bytes each) in batches of {args.batch}; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(f"inproc: {bench_inproc(bodies, args.batch):,.0f} events/s (one core, no HTTP)")
    wall, per_cpu = bench_http(bodies, args.batch, args.concurrency)
    print(f"http:   {wall:,.0f} events/s wall clock, {per_cpu:,.0f} events per sandbox CPU-second")


if __name__ == "__main__":
    main()
