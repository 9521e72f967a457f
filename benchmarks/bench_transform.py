"""Events/s of `Transformer.transform` (decode → map → hash → validate → encode) on one core."""

from __future__ import annotations

import argparse
import hashlib
import time
import timeit
from collections.abc import Callable, Sequence

import orjson

from stream.models import PinterestEvent, TransformResult
from stream.settings import Settings, SourceSettings
from stream.transform import Transformer
from traffic.generator import ClickstreamGenerator


def _distinct(messages: Sequence[bytes]) -> list[bytes]:
    """The same messages with every identity value made unique, so the hash cache never hits."""
    out = []
    for index, value in enumerate(messages):
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError:
            out.append(value)
            continue
        suffix = f"{index:07d}"
        context = message.get("context", {})
        traits = context.get("traits")
        if traits:
            for key in ("email", "phone", "firstName", "lastName", "birthday"):
                if key in traits:
                    traits[key] = f"{traits[key]}{suffix}" if key != "birthday" else traits[key]
            traits["address"] = {
                **traits.get("address", {}),
                "city": f"City {suffix}",
                "postalCode": suffix[:5],
            }
        if "userId" in message:
            message["userId"] = f"user-{suffix}"
        properties = message.get("properties", {})
        if "email" in properties:
            properties["email"] = f"p{suffix}@example.com"
        out.append(orjson.dumps(message))
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plain_map_and_hash(value: bytes) -> bytes:
    """Reference point from the issue: a bare map + hash of the rich event, no checks at all."""
    message = orjson.loads(value)
    context = message["context"]
    traits = context.get("traits", {})
    address = traits.get("address", {})
    properties = message.get("properties", {})
    user_data = {
        "em": [_sha(traits["email"].strip().lower())],
        "ph": [_sha("".join(c for c in traits["phone"] if c.isdigit()).lstrip("0"))],
        "fn": [_sha(traits["firstName"].lower())],
        "ln": [_sha(traits["lastName"].lower())],
        "db": [_sha(traits["birthday"].replace("-", ""))],
        "ct": [_sha("".join(c for c in address["city"].lower() if c.isalnum()))],
        "st": [_sha(address["state"].lower())],
        "zp": [_sha(address["postalCode"][:5])],
        "country": [_sha(address["country"].lower()[:2])],
        "external_id": [_sha(message["userId"].lower())],
        "client_ip_address": context["ip"],
        "client_user_agent": context["userAgent"],
    }
    contents = [
        {"id": p["product_id"], "item_price": str(p["price"]), "quantity": p["quantity"]}
        for p in properties.get("products", [])
    ]
    event = {
        "event_name": "checkout",
        "action_source": "web",
        "event_time": int(time.time()),
        "event_id": message["messageId"],
        "user_data": user_data,
        "custom_data": {
            "currency": properties["currency"],
            "value": str(properties["revenue"]),
            "order_id": properties["order_id"],
            "contents": contents,
            "content_ids": [c["id"] for c in contents],
            "num_items": sum(c["quantity"] for c in contents),
        },
    }
    return orjson.dumps(event)


def _transforming(
    transformer: Transformer, source: SourceSettings, timestamp_ms: int
) -> Callable[[bytes], TransformResult]:
    return lambda value: transformer.transform(source, value, timestamp_ms)


def _rate(step: Callable[[bytes], object], messages: Sequence[bytes]) -> float:
    # CPU time of this process: other work on the shared cores does not count against us.
    started = time.process_time()
    for value in messages:
        step(value)
    return len(messages) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5_000, help="messages per shape")
    parser.add_argument("--rounds", type=int, default=7, help="best of this many passes")
    args = parser.parse_args()
    settings = Settings()
    source = settings.sources[0]
    timestamp = int(time.time() * 1000)
    shapes = {
        "order_completed": ClickstreamGenerator(1, mix="order_completed", poison_ratio=0),
        "page (minimal)": ClickstreamGenerator(2, mix="page", poison_ratio=0),
        "realistic mix": ClickstreamGenerator(3, mix="realistic", poison_ratio=0.01),
    }
    inputs = {name: [m.value for m in g.messages(args.count)] for name, g in shapes.items()}
    distinct = {name: _distinct(messages) for name, messages in inputs.items()}
    warm = Transformer(settings)  # its hash memo fills on the first pass: values repeat
    # A cache of size 0 hashes every value afresh, and the values are all distinct: worst case.
    cold = Transformer(settings, hash_cache_size=0)
    rich = inputs["order_completed"]
    best: dict[str, float] = {}
    # Rounds interleave every measurement, so a burst of load elsewhere hits them all alike.
    for _ in range(args.rounds):
        best["reference"] = max(best.get("reference", 0.0), _rate(plain_map_and_hash, rich))
        for name, messages in inputs.items():
            for kind, transformer, values in (
                ("cached", warm, messages),
                ("distinct", cold, distinct[name]),
            ):
                rate = _rate(_transforming(transformer, source, timestamp), values)
                best[f"{name}/{kind}"] = max(best.get(f"{name}/{kind}", 0.0), rate)
    sample = warm.transform(source, rich[0], timestamp)
    assert isinstance(sample, PinterestEvent), sample
    calibration = (
        min(timeit.repeat("sum(range(1000))", number=2000, repeat=5, timer=time.process_time))
        / 2000
        * 1e6
    )
    reference = best["reference"]
    # The issue quotes ~90,000 ev/s for a bare map + hash of the rich event on this machine
    # when idle; scaling by our own bare reference makes figures comparable across load.
    print(f"calibration: sum(range(1000)) = {calibration:.1f} µs of CPU (lower = faster core)")
    print(f"reference: bare loads+map+hash+dumps of order_completed = {reference:,.0f} ev/s")
    print(
        f"{'shape':<17} {'bytes':>5} {'cached ev/s':>12} {'distinct ev/s':>14}"
        f" {'cached/ref':>10} {'@ref=90k':>9}"
    )
    for name, messages in inputs.items():
        size = sum(map(len, messages)) // len(messages)
        cached, cold_rate = best[f"{name}/cached"], best[f"{name}/distinct"]
        print(
            f"{name:<17} {size:>5} {cached:>12,.0f} {cold_rate:>14,.0f}"
            f" {cached / reference:>10.2f} {90_000 * cached / reference:>9,.0f}"
        )


if __name__ == "__main__":
    main()
