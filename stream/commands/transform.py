"""`capi-stream transform`: JSON lines on stdin → the event that would be sent, line for line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from stream.identity.store import MemoryStore
from stream.models import DeadLetter, PinterestEvent, TransformResult
from stream.settings import load_settings
from stream.transform import Transformer


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file (default: built-in)")
    parser.add_argument(
        "--source", help="name (or topic) of the source whose mapping to use (default: the first)"
    )


def render(result: TransformResult) -> bytes:
    """One output line (without newline) for a transform result."""
    if isinstance(result, PinterestEvent):
        return result.body
    payload: dict[str, Any]
    if isinstance(result, DeadLetter):
        payload = {"dead_letter": {"reason": result.reason, "message": result.message}}
    else:
        payload = {"skipped": {"reason": result.reason}}
    return orjson.dumps(payload)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    source = settings.source(args.source) if args.source else settings.sources[0]
    transformer = Transformer(settings)
    # A source with `enrich: identity` enriches over the input's lines as the forwarder would
    # over a partition's messages (other sources ignore the store); the profiles live only as
    # long as the command.
    identities = MemoryStore()
    output = sys.stdout.buffer
    for line in sys.stdin.buffer:
        stripped = line.strip()
        # Stands in for the Kafka timestamp a freshly produced message would carry.
        result = transformer.transform(source, stripped, int(time.time() * 1000), identities)
        output.write(render(result) + b"\n")
    output.flush()
    return 0
