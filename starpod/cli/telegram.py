"""`starpod telegram set-webhook <url>` / `delete-webhook`: switch Telegram delivery from the shell.

The bot token comes from TELEGRAM_BOT_TOKEN and the webhook secret from TELEGRAM_WEBHOOK_SECRET,
as for the server; `[channels.telegram] mode = "webhook"` makes the server accept the updates.
"""
from __future__ import annotations

import argparse

from .common import CliError, add_command, add_group, data_directory, print_record, require_initialized


def register(subparsers, common) -> None:
    group = add_group(subparsers, "telegram", common, "Manage the Telegram bot's delivery.")
    set_hook = add_command(group, "set-webhook", common, set_webhook,
                           "Register the public URL of POST /api/telegram/webhook with Telegram.",
                           "Telegram then sends updates there (with TELEGRAM_WEBHOOK_SECRET as its secret "
                           "header) instead of answering long polls.")
    set_hook.add_argument("url", help="e.g. https://agent.example.com/api/telegram/webhook")
    add_command(group, "delete-webhook", common, delete_webhook,
                "Remove the webhook, so the bot is read by long polling again.")


def _call(args: argparse.Namespace, name: str, *call_args):
    from ..channels import telegram

    config = data_directory(args)
    require_initialized(config)
    if not telegram.is_configured(config):
        raise CliError("TELEGRAM_BOT_TOKEN is not set")
    try:
        return getattr(telegram, name)(config, *call_args)
    except Exception as exc:  # the Bot API's refusal or a network failure, as one line
        raise CliError(f"Telegram refused or could not be reached: {exc}") from exc


def set_webhook(args: argparse.Namespace) -> int:
    if not args.url.startswith("https://"):
        raise CliError("the webhook URL must start with https:// (Telegram only calls HTTPS URLs)")
    _call(args, "set_webhook", args.url)
    print_record(args, {"url": args.url, "webhook": True}, f"Webhook set: Telegram now sends updates to {args.url}.")
    return 0


def delete_webhook(args: argparse.Namespace) -> int:
    _call(args, "delete_webhook")
    print_record(args, {"webhook": False}, "Webhook removed: the bot is read by long polling again.")
    return 0
