"""`capi-stream check-config`: validate the configuration and print it with secrets masked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from stream.settings import load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="only check the values; do not require a token and ad account",
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not args.offline:
        settings.require_runnable()
    yaml.safe_dump(settings.masked(), sys.stdout, sort_keys=False)
    for warning in settings.security_warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration OK", file=sys.stderr)
    return 0
