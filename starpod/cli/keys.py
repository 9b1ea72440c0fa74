"""`starpod keys ...`: list, create and revoke API keys (a lost-keys recovery works from here)."""
from __future__ import annotations

import argparse

from .common import add_command, add_group, domain_call, open_store, print_record, print_rows

ACTOR = "cli"
KEY_COLUMNS = [("id", "ID"), ("user_id", "USER"), ("prefix", "PREFIX"), ("state", "STATE"),
               ("label", "LABEL"), ("created_at", "CREATED"), ("last_used_at", "LAST USED")]


def register(subparsers, common) -> None:
    group = add_group(subparsers, "keys", common, "Manage API keys.")
    listing = add_command(group, "list", common, list_keys, "List API keys (every user's, or one user's).")
    listing.add_argument("--user", dest="user_id", help="only this user's keys")

    create = add_command(group, "create", common, create_key, "Create an API key for a user and print it once.")
    create.add_argument("user_id")
    create.add_argument("--label", default="Created by CLI")

    revoke = add_command(group, "revoke", common, revoke_key, "Revoke an API key (refused at once on every worker).")
    revoke.add_argument("key_id")


def key_record(key) -> dict:
    from .. import accounts

    record = accounts.key_meta_json(key)
    record["state"] = "revoked" if key.revoked_at else "active"
    return record


def list_keys(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    if args.user_id:
        domain_call(accounts.get_user, args.user_id)
    print_rows(args, KEY_COLUMNS, (key_record(key) for key in accounts.list_api_keys(args.user_id)))
    return 0


def create_key(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    key, plaintext = domain_call(accounts.create_api_key, args.user_id, args.label, actor_id=ACTOR)
    print_record(args, {**key_record(key), "api_key": plaintext},
                 f"Created key {key.id} (prefix {key.prefix}) for user {args.user_id}.\n"
                 f"API key (shown once, save it): {plaintext}")
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    key = domain_call(accounts.revoke_api_key, args.key_id, actor_id=ACTOR)
    print_record(args, key_record(key), f"Revoked key {key.id} (prefix {key.prefix}).")
    return 0
