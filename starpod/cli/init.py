"""`starpod init`: create a data directory (the only command that may), its database and first admin."""
from __future__ import annotations

import argparse

from .common import add_command, data_directory, is_initialized, print_record


def register(subparsers, common) -> None:
    add_command(subparsers, "init", common, run,
                "Create the data directory and the first admin (its key printed once).",
                "STARPOD_API_KEY, if set, is imported as that key instead. Harmless on an existing one.")


def run(args: argparse.Namespace) -> int:
    from .. import prepare_storage
    from ..banner import admin_key_banner
    from ..db import database
    from ..memory import MemoryStore

    config = data_directory(args)
    existed = is_initialized(config)
    admin_key = prepare_storage(config, log_new_key=False)
    database.close_all()
    # Seed the memory files and build the search index now, so the first server start is quick.
    store = MemoryStore(config.home, lambda: config.agent.memory, config.database_url)
    store.open()
    store.close()
    state = "already initialized" if existed else "initialized"
    print_record(args, {"home": str(config.home), "created": not existed, "admin_key": admin_key},
                 f"Data directory {config.home} {state}.")
    if admin_key and not args.json:
        print(admin_key_banner(admin_key, config.port, config.home).lstrip("\n"))
    return 0
