"""The `modelgate` subcommands, one module per area; modelgate/cli.py puts them together."""
