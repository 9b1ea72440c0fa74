"""`starpod users ...`: list, create, change the role of, activate and deactivate users."""
from __future__ import annotations

import argparse

from .common import add_command, add_group, domain_call, open_store, print_record, print_rows

ACTOR = "cli"
USER_COLUMNS = [("id", "ID"), ("role", "ROLE"), ("is_active", "ACTIVE"), ("email", "EMAIL"),
                ("display_name", "NAME"), ("created_at", "CREATED")]


def register(subparsers, common) -> None:
    from ..accounts import ROLES

    group = add_group(subparsers, "users", common, "Manage users.")
    add_command(group, "list", common, list_users, "List every user.")

    create = add_command(group, "create", common, create_user,
                         "Create a user and, unless --no-key, an API key for it (printed once).")
    create.add_argument("--email")
    create.add_argument("--name", dest="display_name")
    create.add_argument("--role", choices=ROLES, default="user")
    create.add_argument("--no-key", dest="with_key", action="store_false", help="do not create an API key")

    role = add_command(group, "set-role", common, set_role, "Change a user's role.")
    role.add_argument("user_id")
    role.add_argument("role", choices=ROLES)

    for name, active, help_text in (("activate", True, "Activate a deactivated user again."),
                                    ("deactivate", False, "Deactivate a user (its keys stop working at once).")):
        command = add_command(group, name, common, set_active, help_text)
        command.add_argument("user_id")
        command.set_defaults(active=active)


def list_users(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    print_rows(args, USER_COLUMNS, (accounts.user_json(user) for user in accounts.list_users()))
    return 0


def create_user(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    user = domain_call(accounts.create_user, email=args.email, display_name=args.display_name,
                       role=args.role, actor_id=ACTOR)
    record = accounts.user_json(user)
    message = f"Created user {user.id} ({user.role})."
    if args.with_key:
        _, key = domain_call(accounts.create_api_key, user.id, "Created by CLI", actor_id=ACTOR)
        record["api_key"] = key
        message += f"\nAPI key (shown once, save it): {key}"
    print_record(args, record, message)
    return 0


def set_role(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    user = domain_call(accounts.update_user, args.user_id, role=args.role, actor_id=ACTOR)
    print_record(args, accounts.user_json(user), f"User {user.id} is now {user.role}.")
    return 0


def set_active(args: argparse.Namespace) -> int:
    from .. import accounts

    open_store(args)
    user = domain_call(accounts.set_user_active, args.user_id, args.active, actor_id=ACTOR)
    state = "active" if user.is_active else "deactivated"
    print_record(args, accounts.user_json(user), f"User {user.id} is {state}.")
    return 0
