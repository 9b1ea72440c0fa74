"""The `starpod` command: data-directory set-up and user/key recovery for a VPS admin."""
from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup

from . import accounts
from .errors import StarpodError
from .memory.cli import memory_group


def _config():
    return current_app.config["STARPOD"]


def _fail(exc: StarpodError):
    raise click.ClickException(exc.message)


def register_cli(app: Flask) -> None:
    """Attach the Starpod commands to the app's CLI group."""

    @app.cli.command("init")
    def init_command():
        """Create the data directory, the database and the first admin."""
        click.echo(f"Data directory ready: {_config().home}")

    users = click.Group("users", help="Manage auth users.")
    keys = click.Group("keys", help="Manage API keys.")
    app.cli.add_command(users)
    app.cli.add_command(keys)
    app.cli.add_command(memory_group(_config))

    @users.command("list")
    def users_list():
        for user in accounts.list_users():
            state = "active" if user.is_active else "inactive"
            click.echo(f"{user.id}  {user.role:<5}  {state:<8}  {user.email or '-'}  {user.display_name or '-'}")

    @users.command("create")
    @click.option("--email", default=None)
    @click.option("--name", "display_name", default=None)
    @click.option("--role", type=click.Choice(accounts.ROLES), default="user", show_default=True)
    @click.option("--with-key/--no-key", default=True, show_default=True, help="Also create an API key.")
    def users_create(email, display_name, role, with_key):
        try:
            user = accounts.create_user(email=email, display_name=display_name, role=role, actor_id="cli")
        except StarpodError as exc:
            _fail(exc)
        click.echo(f"Created user {user.id} ({role})")
        if with_key:
            _, key = accounts.create_api_key(user.id, "Created by CLI", actor_id="cli")
            click.echo(f"API key (shown once): {key}")

    @keys.command("create")
    @click.argument("user_id")
    @click.option("--label", default="Created by CLI", show_default=True)
    def keys_create(user_id, label):
        """Create an API key for USER_ID and print it once."""
        try:
            record, key = accounts.create_api_key(user_id, label, actor_id="cli")
        except StarpodError as exc:
            _fail(exc)
        click.echo(f"Key {record.id} (prefix {record.prefix}) for user {user_id}")
        click.echo(f"API key (shown once): {key}")

    @keys.command("revoke")
    @click.argument("key_id")
    def keys_revoke(key_id):
        try:
            accounts.revoke_api_key(key_id, actor_id="cli")
        except StarpodError as exc:
            _fail(exc)
        click.echo(f"Revoked {key_id}")

    @keys.command("list")
    @click.argument("user_id")
    def keys_list(user_id):
        for key in accounts.list_api_keys(user_id):
            state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
            click.echo(f"{key.id}  {key.prefix}  {state}  {key.label or '-'}")


def _create_app():
    from . import create_app
    return create_app()


main = FlaskGroup(create_app=_create_app, help="Starpod: a self-hosted personal AI-agent server.")
