"""The `starpod` command: set up, serve, inspect and repair one Starpod data directory.

Run as `starpod ...` (console script) or `python -m starpod.cli ...`.  Every command works on one
data directory, chosen by `--home`, else `STARPOD_HOME`, else `./.starpod`, and says on stderr
which one it uses.  Only `starpod init` creates a data directory; every other command refuses to
run without one, so a command typed in the wrong folder never mints keys into a new, empty store.

Commands stay quick (well under a second on a small store): they open only the database they
need and import Flask, the web app and the provider SDKs never (`serve` hands over to gunicorn).
Output is quiet unless `-v`; listings are tables with headers, or JSON with `--json`.

Adding a command group (e.g. `cron`, `telegram`): write `starpod/cli/<group>.py` with a module
docstring and a `register(subparsers, common)` function that adds its parser with
`subparsers.add_parser("<group>", parents=[common], help=...)`, its sub-commands, and sets
`handler=` (a function taking the parsed args and returning an exit code) through
`set_defaults`; then append the module name to `COMMAND_MODULES` below.  Shared helpers (opening
the store, tables/JSON output, errors) live in `starpod/cli/common.py`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..config import VERSION
from .common import CliError, common_options, configure_output

# One module per command group, in the order `--help` lists them.
COMMAND_MODULES = ("init", "serve", "users", "keys", "memory", "cron", "telegram", "db", "doctor", "backup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starpod", description="Starpod: a self-hosted personal AI-agent server.",
        epilog="Data directory: --home, else STARPOD_HOME, else ./.starpod. "
               "`starpod <command> --help` describes a command.")
    parser.add_argument("--version", action="version", version=f"starpod {VERSION}")
    common_options(parser, suppress_defaults=False)
    common = argparse.ArgumentParser(add_help=False)
    common_options(common, suppress_defaults=True)
    subparsers = parser.add_subparsers(title="commands", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    configure_output(args)
    try:
        return args.handler(args) or 0
    except CliError as exc:
        print(f"starpod: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
