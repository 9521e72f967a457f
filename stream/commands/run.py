"""`capi-stream run`: the forwarder, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvloop

from stream.logs import configure_logging, log_config_summary
from stream.settings import load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML configuration file")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    settings.require_runnable()
    configure_logging(settings.logging, secrets=settings.secret_values())
    log_config_summary(logging.getLogger("stream"), settings)
    # Imported here so configuration errors surface before aiohttp and Kafka load.
    from stream.app import App

    return uvloop.run(App(settings).run())
