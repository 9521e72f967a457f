"""CPU time of the worst single messages through `Transformer.transform` (target: < 50 ms each).

    .venv/bin/python benchmarks/bench_worst_message.py [--rounds 5]

DESIGN §4 "No message can stop the pipeline": one message must never block the event loop long
enough to fail /healthz. The messages are the most expensive ones a producer can write within
`kafka.max_message_bytes` (1 MiB by default): 20,000 distinct emails or products, and ~1 MB of
emails, products, keys, URL parameters or one long value, in each format. Figures are the
worst CPU time (`time.process_time`) of `--rounds` passes, so load elsewhere on the machine does
not count. tests/forwarder/test_worst_messages.py sends the same messages through a running
forwarder and checks /healthz meanwhile.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson

from stream.models import DeadLetter, PinterestEvent, Skipped
from stream.settings import PinterestSettings, Settings, SourceSettings
from stream.transform import Transformer

TARGET_MS = 50.0
# Just under the default kafka.max_message_bytes (1 MiB), so the message is parsed.
NEAR_LIMIT_BYTES = 1_040_000
MANY = 20_000

Format = Literal["segment", "pinterest"]


def _fill(build: Callable[[int], dict[str, Any]], limit: int = NEAR_LIMIT_BYTES) -> bytes:
    """The largest `build(n)` whose encoding stays under `limit` bytes (n found by bisection)."""
    low, high = 1, 1
    while len(orjson.dumps(build(high))) < limit:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if len(orjson.dumps(build(middle))) < limit:
            low = middle
        else:
            high = middle
    return orjson.dumps(build(low))


def _segment(now_s: float, **parts: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "worst-1",
        "timestamp": int(now_s * 1000),
        "userId": "user-1",
        "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "traits": {}},
        "properties": {"revenue": 10, "currency": "USD"},
    }
    for path, value in parts.items():
        target = message
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return message


def _pinterest(now_s: float, **parts: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "event_name": "checkout",
        "action_source": "offline",
        "event_time": int(now_s) - 60,
        "event_id": "worst-1",
        "user_data": {"em": ["someone@example.com"]},
        "custom_data": {"currency": "USD", "value": "10.00"},
    }
    for path, value in parts.items():
        target = message
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return message


def _emails(count: int) -> list[str]:
    return [f"person{index}@example.com" for index in range(count)]


def _products(count: int) -> list[dict[str, Any]]:
    return [{"sku": f"sku-{index}", "price": 1.5, "quantity": 1} for index in range(count)]


def _float_products(count: int) -> list[dict[str, Any]]:
    # Ids written as floats are read again from the message's bytes, to keep every digit.
    return [{"product_id": float(index), "quantity": 1} for index in range(count)]


def _float_contents(count: int) -> list[dict[str, Any]]:
    return [{"id": float(index), "quantity": 1} for index in range(count)]


def _contents(count: int) -> list[dict[str, Any]]:
    return [{"id": f"sku-{index}", "item_price": "1.50", "quantity": 1} for index in range(count)]


def _url(count: int, name: str = "p") -> str:
    query = "&".join(f"{name}{index}=person{index}%40example.com" for index in range(count))
    return "https://shop.example/checkout?" + query


def _epik_url(count: int) -> str:
    query = "&".join(f"epik=dj0y{index}" for index in range(count))
    return "https://shop.example/checkout?" + query


def worst_messages(now_s: float) -> dict[str, tuple[Format, bytes]]:
    """Name → (format, value) of the most expensive messages under the size limit."""
    seg, pin = _segment, _pinterest
    return {
        "segment: 20,000 distinct emails in a trait": (
            "segment",
            orjson.dumps(seg(now_s, context__traits__email=_emails(MANY))),
        ),
        "segment: 20,000 products": (
            "segment",
            orjson.dumps(seg(now_s, properties__products=_products(MANY))),
        ),
        "segment: ~1 MB of emails": (
            "segment",
            _fill(lambda n: seg(now_s, context__traits__email=_emails(n))),
        ),
        "segment: ~1 MB of products": (
            "segment",
            _fill(lambda n: seg(now_s, properties__products=_products(n))),
        ),
        "segment: ~1 MB with 1,000 products whose ids are floats": (
            "segment",
            _fill(
                lambda n: seg(now_s, properties__products=_float_products(1000), padding="x" * n)
            ),
        ),
        "segment: ~1 MB page URL of email parameters": (
            "segment",
            _fill(lambda n: seg(now_s, context__page={"url": _url(n)})),
        ),
        "segment: ~1 MB page URL of epik parameters": (
            "segment",
            _fill(lambda n: seg(now_s, context__page={"url": _epik_url(n)})),
        ),
        "segment: one ~1 MB email": (
            "segment",
            _fill(lambda n: seg(now_s, context__traits__email="x" * n + "@example.com")),
        ),
        "segment: ~1 MB of unknown keys": (
            "segment",
            _fill(lambda n: seg(now_s, properties__extra={f"k{i}": i for i in range(n)})),
        ),
        "pinterest: 20,000 distinct emails": (
            "pinterest",
            orjson.dumps(pin(now_s, user_data__em=_emails(MANY))),
        ),
        "pinterest: 20,000 contents": (
            "pinterest",
            orjson.dumps(pin(now_s, custom_data__contents=_contents(MANY))),
        ),
        "pinterest: ~1 MB of emails": (
            "pinterest",
            _fill(lambda n: pin(now_s, user_data__em=_emails(n))),
        ),
        "pinterest: ~1 MB of contents": (
            "pinterest",
            _fill(lambda n: pin(now_s, custom_data__contents=_contents(n))),
        ),
        "pinterest: ~1 MB with 1,000 contents whose ids are floats": (
            "pinterest",
            _fill(
                lambda n: pin(
                    now_s, custom_data__contents=_float_contents(1000), partner_name="x" * n
                )
            ),
        ),
        "pinterest: ~1 MB event_source_url of email parameters": (
            "pinterest",
            _fill(lambda n: pin(now_s, event_source_url=_url(n))),
        ),
        "pinterest: ~1 MB of unknown custom_data keys": (
            "pinterest",
            _fill(lambda n: pin(now_s, custom_data__extra={f"k{i}": i for i in range(n)})),
        ),
        "either: 2 MB, over kafka.max_message_bytes": (
            "pinterest",
            orjson.dumps(pin(now_s, user_data__em=_emails(80_000))),
        ),
    }


def _outcome(result: object) -> str:
    if isinstance(result, PinterestEvent):
        return f"event ({len(result.body):,} B)"
    if isinstance(result, DeadLetter):
        return f"{result.reason}: {result.message[:60]}"
    assert isinstance(result, Skipped)
    return "skipped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="passes; the worst one is shown")
    args = parser.parse_args()
    now_s = time.time()
    settings = Settings(
        pinterest=PinterestSettings(ad_account_id="1"),
        sources=[SourceSettings(topic="web"), SourceSettings(topic="crm", format="pinterest")],
    )
    sources = {source.format: source for source in settings.sources}
    messages = worst_messages(now_s)
    timestamp_ms = int(now_s * 1000)
    worst: dict[str, float] = {}
    outcomes: dict[str, str] = {}
    for _ in range(args.rounds):
        # A fresh transformer per pass: nothing remembered from the previous one helps.
        transformer = Transformer(settings, lambda: now_s)
        for name, (format_name, value) in messages.items():
            started = time.process_time()
            result = transformer.transform(sources[format_name], value, timestamp_ms)
            elapsed_ms = (time.process_time() - started) * 1000
            worst[name] = max(worst.get(name, 0.0), elapsed_ms)
            outcomes[name] = _outcome(result)
    width = max(map(len, messages))
    print(f"{'message':<{width}} {'bytes':>9} {'worst CPU ms':>12}  outcome")
    for name, (_, value) in messages.items():
        flag = "" if worst[name] < TARGET_MS else f"  (over {TARGET_MS:.0f} ms)"
        print(f"{name:<{width}} {len(value):>9,} {worst[name]:>12.1f}  {outcomes[name]}{flag}")
    print(f"worst: {max(worst.values()):.1f} ms of CPU (target < {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
