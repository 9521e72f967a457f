"""Events/s of `Transformer.transform` (decode → map → hash → validate → encode) on one core."""

from __future__ import annotations

import argparse
import hashlib
import time
import timeit
from collections.abc import Sequence

import orjson

from stream.generator import ClickstreamGenerator
from stream.models import PinterestEvent
from stream.settings import Settings
from stream.transform import Transformer


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


def measure(
    transformer: Transformer, settings: Settings, messages: Sequence[bytes], rounds: int
) -> float:
    source = settings.sources[0]
    timestamp = int(time.time() * 1000)
    best = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for value in messages:
            transformer.transform(source, value, timestamp)
        best = max(best, len(messages) / (time.process_time() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings()
    shapes = {
        "order_completed": ClickstreamGenerator(1, mix="order_completed", poison_ratio=0),
        "page (minimal)": ClickstreamGenerator(2, mix="page", poison_ratio=0),
        "realistic mix": ClickstreamGenerator(3, mix="realistic", poison_ratio=0.01),
    }
    rich = [m.value for m in ClickstreamGenerator(1, mix="order_completed").messages(args.count)]
    started = time.process_time()
    for value in rich:
        plain_map_and_hash(value)
    plain = len(rich) / (time.process_time() - started)
    calibration = (
        min(timeit.repeat("sum(range(1000))", number=2000, repeat=5, timer=time.process_time))
        / 2000
        * 1e6
    )
    # The same reference loop takes ~10 µs on an idle modern core; higher means a busy machine.
    print(f"calibration: sum(range(1000)) = {calibration:.1f} µs")
    print(f"reference: bare map+hash+encode of order_completed, no checks = {plain:,.0f} ev/s")
    print(f"{'shape':<18} {'bytes':>6} {'cached ev/s':>12} {'distinct ev/s':>14}")
    for name, generator in shapes.items():
        messages = [m.value for m in generator.messages(args.count)]
        transformer = Transformer(settings)
        sample = transformer.transform(settings.sources[0], messages[0], int(time.time() * 1000))
        assert name == "realistic mix" or isinstance(sample, PinterestEvent), sample
        cached = measure(transformer, settings, messages, args.rounds)
        distinct = _distinct(messages)
        # A cache of size 0 hashes every value afresh: the cold-cache worst case.
        uncached = measure(Transformer(settings, hash_cache_size=0), settings, distinct, 1)
        size = sum(map(len, messages)) // len(messages)
        print(f"{name:<18} {size:>6} {cached:>12,.0f} {uncached:>14,.0f}")


if __name__ == "__main__":
    main()
