"""The `starpod` CLI a VPS admin uses to recover access."""
from __future__ import annotations

import re

from starpod import accounts


def test_users_and_keys_commands(app):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["users", "create", "--role", "admin", "--name", "Ops"])
    assert created.exit_code == 0, created.output
    key = re.search(r"(sp_live_[0-9a-f]{40})", created.output).group(1)
    principal = accounts.authenticate(key)
    assert principal.is_admin and principal.display_name == "Ops"

    listed = runner.invoke(args=["users", "list"]).output
    assert principal.user_id in listed and "admin" in listed

    second = runner.invoke(args=["keys", "create", principal.user_id, "--label", "laptop"])
    second_key = re.search(r"(sp_live_[0-9a-f]{40})", second.output).group(1)
    key_id = next(k.id for k in accounts.list_api_keys(principal.user_id) if k.label == "laptop")
    revoked = runner.invoke(args=["keys", "revoke", key_id])
    assert revoked.exit_code == 0
    assert accounts.authenticate(second_key) is None
    assert accounts.authenticate(key) is not None


def test_cli_errors_are_messages_not_tracebacks(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["keys", "create", "no-such-user"])
    assert result.exit_code != 0 and "User not found" in result.output
    result = runner.invoke(args=["keys", "revoke", "no-such-key"])
    assert result.exit_code != 0 and "API key not found" in result.output


def test_init_reports_the_data_directory(app, home):
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0 and str(home) in result.output
    assert (home / "config" / "SOUL.md").read_text().startswith("# Soul")
