"""Shared pieces of the `starpod` command: options, the data directory, opening the store, output."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable, Iterable

from ..config import Config


class CliError(Exception):
    """A failure to report as one line on stderr (no traceback) with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def common_options(parser: argparse.ArgumentParser, suppress_defaults: bool) -> None:
    """--home, --json and -v, accepted before and after the command name.

    Sub-command parsers get them with suppressed defaults, so a value given before the command
    name is not reset by the sub-command's default.
    """
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    parser.add_argument("--home", default=default(None), metavar="DIR",
                        help="data directory (default: $STARPOD_HOME, else ./.starpod)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print machine-readable JSON instead of tables")
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False),
                        help="also print Starpod's log messages")


def configure_output(args: argparse.Namespace) -> None:
    """Log messages go to stderr, and only with -v (warnings always)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def add_group(subparsers, name: str, common: argparse.ArgumentParser, help_text: str):
    """A command group (`starpod <name> <sub-command>`); returns its sub-command subparsers."""
    group = subparsers.add_parser(name, parents=[common], help=help_text, description=help_text)
    group.set_defaults(handler=lambda _args: _usage_error(group))
    return group.add_subparsers(title="sub-commands", metavar="<sub-command>")


def _usage_error(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_command(subparsers, name: str, common: argparse.ArgumentParser, handler: Callable,
                help_text: str, details: str = "") -> argparse.ArgumentParser:
    """A command: `help_text` is its line in the list, `details` follow it in its own --help."""
    command = subparsers.add_parser(name, parents=[common], help=help_text,
                                    description=f"{help_text} {details}".strip())
    command.set_defaults(handler=handler)
    return command


# --- the data directory ------------------------------------------------------------------------

def data_directory(args: argparse.Namespace) -> Config:
    """The Config of the chosen data directory, announced on stderr (stdout stays for results)."""
    config = Config(home=args.home)
    print(f"starpod: data directory {config.home}", file=sys.stderr)
    return config


def is_initialized(config: Config) -> bool:
    """`starpod init` (or a first server start) seeded config/agent.toml; the database may be a
    file under db/ or PostgreSQL (DATABASE_URL)."""
    return config.agent_toml_path.is_file()


def require_initialized(config: Config) -> None:
    if not is_initialized(config):
        raise CliError(f"no Starpod data directory at {config.home} (no config/agent.toml there). "
                       f"Pass --home DIR or set STARPOD_HOME to use an existing one, "
                       f"or run `starpod init --home {config.home}` to create it.")


def open_store(args: argparse.Namespace) -> Config:
    """Open (and migrate) the shared database of an existing data directory; returns its Config."""
    from .. import accounts
    from ..db import open_database
    from ..migrations import migrate

    config = data_directory(args)
    require_initialized(config)
    migrate(open_database(config.db_path, config.database_url))
    accounts.reset_process_state(config.db_dir / "auth.generation")
    return config


def domain_call(fn: Callable, *fn_args, **kwargs):
    """Call a domain function; its StarpodError becomes a one-line CLI error."""
    from ..errors import StarpodError

    try:
        return fn(*fn_args, **kwargs)
    except StarpodError as exc:
        raise CliError(exc.message) from exc


# --- output ------------------------------------------------------------------------------------

def print_rows(args: argparse.Namespace, columns: list[tuple[str, str]], rows: Iterable[dict]) -> None:
    """`rows` as a table with the `columns` (key, header), or as a JSON array with --json."""
    rows = list(rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    cells = [[header for _, header in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip())


def print_record(args: argparse.Namespace, record: dict, message: str) -> None:
    """One created/changed record: JSON with --json, else a human sentence."""
    print(json.dumps(record, indent=2) if args.json else message)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
