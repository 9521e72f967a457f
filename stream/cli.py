"""The `capi-stream` command line: picks a subcommand and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stream import __version__
from stream.errors import CapiStreamError, ConfigurationError

# Each subcommand lives in its own module with `configure(parser)` and `run(args) -> int`;
# it is imported only when chosen, so `transform` does not pay for aiohttp or Kafka.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("stream.commands.run", "consume Kafka and forward events to Pinterest"),
    "transform": ("stream.commands.transform", "preview the mapping: JSON lines in, events out"),
    "sandbox": ("stream.commands.sandbox", "a local Pinterest Conversions API emulator"),
    "verify": ("stream.commands.verify", "preflight: check Kafka, send one test event per account"),
    "dlq": ("stream.commands.dlq", "inspect or replay dead letters"),
    "check-config": ("stream.commands.check_config", "validate configuration and print it"),
    "quality": ("stream.commands.quality", "Pinterest's Event Quality Score per ad account"),
    "identity": ("stream.commands.identity", "identity enrichment: forget a user's profile"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(
        prog="capi-stream",
        description="Forward conversion events from Kafka to the Pinterest Conversions API.",
        epilog="commands:\n"
        + "\n".join(f"  {name:<13} {text}" for name, (_, text) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"capi-stream {__version__}")
    top.add_argument(
        "command", choices=COMMANDS, metavar="command", help="one of the commands below"
    )
    top.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not args:
        # argparse alone would say "required: command, arguments"; show what there is instead.
        top.print_help(sys.stderr)
        return EXIT_USAGE
    chosen = top.parse_args(args[:1] if args and not args[0].startswith("-") else args)
    module_name, text = COMMANDS[chosen.command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"capi-stream {chosen.command}", description=text)
    module.configure(parser)
    options = parser.parse_args(args[1:])
    try:
        return int(module.run(options))
    except ConfigurationError as exc:
        print(describe(exc), file=sys.stderr)
        return EXIT_USAGE
    except CapiStreamError as exc:
        print(f"capi-stream: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def describe(error: ConfigurationError) -> str:
    """Every problem of `error`, one per line when there are several."""
    if len(error.problems) == 1:
        return f"capi-stream: invalid configuration: {error}"
    lines = [f"capi-stream: invalid configuration ({len(error.problems)} problems):"]
    lines += [f"  {key}: {message}" for key, message in error.problems]
    return "\n".join(lines)
