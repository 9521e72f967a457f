"""One module per `capi-stream` subcommand: `configure(parser)` and `run(args) -> int`."""
