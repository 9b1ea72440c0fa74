"""The secrets proof itself (tests/secrets_scan.py) finds what it must: keys shown twice, keys in
logs outside the bootstrap line, hashes and configured provider keys anywhere, and keys the
in-process store creates."""
from __future__ import annotations

import secrets

from starpod import accounts

from .secrets_scan import SecretsLedger

# Fresh keys: the run-wide scan also reads the logs written here, and a fixed value could be one
# another test configures.
KEY = f"sp_live_{secrets.token_hex(20)}"
OTHER_KEY = f"sp_live_{secrets.token_hex(20)}"


def test_a_key_may_appear_in_its_creating_response_only():
    ledger = SecretsLedger()
    ledger.capture("POST /api-keys", f'{{"key": "{KEY}"}}'.encode())
    assert ledger.response_findings() == []
    ledger.capture("GET /users", f'{{"leak": "{KEY}"}}'.encode())
    assert len(ledger.response_findings()) == 1


def test_hashes_and_configured_secrets_may_appear_nowhere():
    ledger = SecretsLedger()
    ledger.record_key(KEY, "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
    ledger.record_environ({"OPENAI_API_KEY": "sk-configured-secret", "PORT": "3000", "EMPTY_TOKEN": ""})
    ledger.capture("GET /settings", b'{"hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}')
    ledger.capture("GET /models", b'{"key": "sk-configured-secret", "port": 3000}')
    assert len(ledger.response_findings()) == 2


def test_logs_may_hold_a_key_only_in_the_bootstrap_line(tmp_path):
    ledger = SecretsLedger()
    ledger.record_key(KEY)
    ledger.record_key(OTHER_KEY)
    clean = tmp_path / "clean.log"
    clean.write_text(f"INFO New admin API key generated \u2014 save this! {KEY}\nINFO other line\n")
    assert ledger.log_findings([clean]) == []
    leaky = tmp_path / "leaky.log"
    leaky.write_text(f"save this! {KEY}\nGET /ws?token={KEY}\nauth failed for {OTHER_KEY}\n")
    assert len(ledger.log_findings([leaky])) == 2


def test_keys_created_in_process_are_recorded_with_their_hash(app, secrets_ledger):
    user = accounts.create_user(role="admin")
    record, key = accounts.create_api_key(user.id, "recorded")
    assert key.encode() in secrets_ledger.keys
    assert secrets_ledger.hidden[record.key_hash.encode()] == "API key hash"
