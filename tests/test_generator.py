"""The clickstream generator is deterministic per seed and labels what it produces."""

from __future__ import annotations

from collections import Counter

import orjson

from traffic.generator import ClickstreamGenerator


def fixed_now() -> float:
    return 1_800_000_000.0


def test_same_seed_same_messages() -> None:
    first = list(ClickstreamGenerator(7, now=fixed_now).messages(500))
    second = list(ClickstreamGenerator(7, now=fixed_now).messages(500))
    other = list(ClickstreamGenerator(8, now=fixed_now).messages(500))
    assert first == second
    assert first != other


def test_realistic_mix_has_every_kind_and_unique_ids() -> None:
    messages = list(ClickstreamGenerator(3, now=fixed_now, poison_ratio=0.05).messages(5000))
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) == {"valid", "skipped", "poison"}
    reasons = {m.reason for m in messages if m.kind == "poison"}
    assert reasons == {"decode_error", "invalid_event", "mapping_error", "too_old"}
    names = {m.event_name for m in messages if m.kind == "valid"}
    assert {"page_visit", "add_to_cart", "checkout", "initiate_checkout", "signup"} <= names
    ids = [m.event_id for m in messages if m.event_id]
    assert len(ids) == len(set(ids))
    for message in messages:
        if message.reason != "decode_error":
            assert isinstance(orjson.loads(message.value), dict)


def test_single_shape_mixes() -> None:
    orders = list(ClickstreamGenerator(1, now=fixed_now, mix="order_completed").messages(50))
    assert {m.event_name for m in orders} == {"checkout"}
    assert all(900 < len(m.value) < 1400 for m in orders)
    pages = list(ClickstreamGenerator(1, now=fixed_now, mix="page").messages(50))
    assert {m.event_name for m in pages} == {"page_visit"}
    assert all(len(m.value) < 400 for m in pages)
