"""Unit tests of the auth store: key format and hashing, the verified-key cache, users, Telegram
links, the audit log, bootstrap and the cross-worker rate limiter."""
from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from starpod import accounts, ratelimit
from starpod.authcache import AuthCache, LruMap, key_digest
from starpod.db import database, is_postgresql, open_postgresql, open_sqlite
from starpod.errors import BadRequest, Conflict, NotFound
from starpod.models import ApiKey, AuthAuditLog, RateLimitHit
from starpod.timeutil import to_rfc3339, utcnow

from .support import REPO


# --- keys ----------------------------------------------------------------------------------

def test_generated_key_format():
    key = accounts.generate_key()
    assert re.fullmatch(r"sp_live_[0-9a-f]{40}", key)
    assert len(key) == 48


def test_generated_keys_are_unique():
    assert accounts.generate_key() != accounts.generate_key()


@pytest.mark.parametrize("key, prefix", [
    ("sp_live_abcdef0123456789", "abcdef01"),
    ("sp_live_abcdef01", "abcdef01"),
    ("sk_live_abcdef0123456789", None),
    ("sp_live_abc", None),
    ("sp_live_", None),
    ("", None),
])
def test_extract_prefix(key, prefix):
    assert accounts.extract_prefix(key) == prefix


def test_legacy_keys_are_looked_up_by_their_first_eight_chars():
    assert accounts.lookup_prefix("legacy-secret-value") == "legacy-s"
    assert accounts.lookup_prefix("sp_live_abcdef0123") == "abcdef01"


def test_hash_uses_argon2id_with_the_specified_parameters():
    key_hash = accounts.hash_key("sp_live_x")
    assert key_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    salt, digest = key_hash.split("$")[4:6]
    assert len(digest) == 43  # 32 bytes, unpadded base64


def test_hash_and_verify():
    key = accounts.generate_key()
    first, second = accounts.hash_key(key), accounts.hash_key(key)
    assert first != second
    assert accounts.verify_key(key, first) and accounts.verify_key(key, second)
    assert not accounts.verify_key(accounts.generate_key(), first)
    assert not accounts.verify_key(key[:-1] + ("0" if key[-1] != "0" else "1"), first)


@pytest.mark.parametrize("bad_hash", ["", "garbage", "$argon2id$v=19$broken"])
def test_verify_with_malformed_hash_is_false(bad_hash):
    assert accounts.verify_key("sp_live_x", bad_hash) is False


# --- authentication and the verified-key cache ---------------------------------------------

def test_authenticate_runs_argon2_once_per_key(app, make_user, count_verifications):
    user, key = make_user("user")
    for _ in range(3):
        principal = accounts.authenticate(key)
        assert principal.user_id == user.id
    assert len(count_verifications) == 1


def test_a_key_state_reads_after_the_process_had_the_other_engine_bound(app, make_user, tmp_path):
    """`db copy` binds the shared database to each engine in turn: the key-state statement (every
    authenticated request's, compiled once) compiled under one engine's placeholders must not be
    run on the other."""
    user, _key = make_user("user")
    key_id = ApiKey.get(ApiKey.user == user.id).id
    accounts._key_state_sql.cache_clear()
    bound = database.obj
    other = open_sqlite(tmp_path / "other.db") if is_postgresql() else open_postgresql("postgresql://127.0.0.1/unused")
    database.initialize(other)  # never connected: only its SQL style is used
    try:
        with pytest.raises(Exception):
            accounts._read_key_state(key_id)  # compiled for `other`, then fails to run there
    finally:
        database.initialize(bound)
    principal, _expires_at = accounts._read_key_state(key_id)
    assert principal.user_id == user.id


CONCURRENT_FIRST_USE = """
import sys
from pathlib import Path
from gevent import monkey
monkey.patch_all()
import gevent
from starpod import accounts
from starpod.db import open_database
from starpod.migrations import migrate

migrate(open_database(Path(sys.argv[1]), None))
accounts.reset_process_state(None)
user = accounts.create_user(role="user")
_, key = accounts.create_api_key(user.id)
_, other_key = accounts.create_api_key(user.id)
verified = []
real = accounts.verify_key
accounts.verify_key = lambda key, key_hash: verified.append(key) or real(key, key_hash)
callers = [gevent.spawn(accounts.authenticate, k) for k in [key] * 20 + [other_key] * 5 + ["sp_live_" + "0" * 40]]
gevent.joinall(callers, raise_error=True)
print(sum(c.value is not None and c.value.user_id == user.id for c in callers), verified.count(key),
      verified.count(other_key))
"""


def test_concurrent_first_uses_of_a_key_share_one_argon2_run(tmp_path):
    """Under gevent, requests that arrive together with a key the worker has not verified yet wait
    for one verification instead of each running argon2 (20 ms of CPU each)."""
    result = subprocess.run([sys.executable, "-c", CONCURRENT_FIRST_USE, str(tmp_path / "starpod.db")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["25", "1", "1"]


def test_cached_key_refused_at_once_after_revoke(app, make_user):
    user, key = make_user("user")
    assert accounts.authenticate(key) is not None
    key_id = accounts.list_api_keys(user.id)[0].id
    accounts.revoke_api_key(key_id)
    assert accounts.authenticate(key) is None


def test_cached_key_follows_deactivation_and_reactivation(app, make_user):
    user, key = make_user("user")
    assert accounts.authenticate(key) is not None
    accounts.set_user_active(user.id, False)
    assert accounts.authenticate(key) is None
    accounts.set_user_active(user.id, True)
    assert accounts.authenticate(key).user_id == user.id


def test_cached_key_follows_role_change(app, make_user, admin):
    user, key = make_user("user")
    assert not accounts.authenticate(key).is_admin
    accounts.update_user(user.id, role="admin")
    assert accounts.authenticate(key).is_admin


def test_expired_key_fails(app, make_user):
    user, key = make_user("user")
    past = to_rfc3339(utcnow() - timedelta(seconds=1))
    ApiKey.update(expires_at=past).where(ApiKey.user == user.id).execute()
    assert accounts.authenticate(key) is None


def test_cached_key_stops_working_when_it_expires(app, make_user):
    user, key = make_user("user")
    soon = to_rfc3339(utcnow() + timedelta(milliseconds=300))
    ApiKey.update(expires_at=soon).where(ApiKey.user == user.id).execute()
    assert accounts.authenticate(key) is not None
    time.sleep(0.4)
    assert accounts.authenticate(key) is None


def test_unknown_wrong_and_empty_keys_fail(app, make_user):
    make_user("user")
    assert accounts.authenticate(accounts.generate_key()) is None
    assert accounts.authenticate("") is None
    assert accounts.authenticate("sp_live_") is None


def test_authenticate_updates_last_used(app, make_user):
    user, key = make_user("user")
    assert accounts.list_api_keys(user.id)[0].last_used_at is None
    accounts.authenticate(key)
    assert accounts.list_api_keys(user.id)[0].last_used_at is not None


def test_multiple_keys_per_user(app, make_user):
    user, first = make_user("user")
    record, second = accounts.create_api_key(user.id, "second")
    assert accounts.authenticate(first).user_id == user.id
    assert accounts.authenticate(second).user_id == user.id
    accounts.revoke_api_key(record.id)
    assert accounts.authenticate(second) is None
    assert accounts.authenticate(first).user_id == user.id


def test_lru_map_is_bounded():
    lru = LruMap(max_entries=2)
    for n in range(3):
        lru.put(key_digest(f"k{n}"), f"id{n}")
    assert len(lru) == 2
    assert lru.get(key_digest("k0")) is None
    assert lru.get(key_digest("k2")) == "id2"


def test_change_in_another_process_invalidates_cached_state(app, make_user, count_verifications):
    """A second cache over the same generation hint and counter stands in for another worker."""
    user, key = make_user("user")
    assert accounts.authenticate(key).user_id == user.id
    other_worker = AuthCache(accounts.cache.generation.hint.path, accounts.read_generation)
    with database.atomic():  # what a revoke in another process commits, then announces
        ApiKey.update(revoked_at="2026-01-01T00:00:00.000000Z").where(ApiKey.user == user.id).execute()
        accounts.bump_generation()
    other_worker.invalidate()
    assert accounts.authenticate(key) is None
    assert len(count_verifications) == 1  # the stale state was re-read, argon2 not re-run


def test_cached_state_serves_without_database_reads(app, make_user, monkeypatch):
    user, key = make_user("user")
    accounts.authenticate(key)
    monkeypatch.setattr(accounts, "_read_key_state", lambda key_id: pytest.fail("database read on a cache hit"))
    assert accounts.authenticate(key).user_id == user.id


# --- users ---------------------------------------------------------------------------------

def test_has_users(app):
    assert accounts.has_users() is False
    accounts.create_user(role="user")
    assert accounts.has_users() is True


def test_create_list_update_user(app):
    alice = accounts.create_user(email="a@x", display_name="A", role="admin")
    accounts.create_user()
    assert [u.id for u in accounts.list_users()][0] == alice.id
    updated = accounts.update_user(alice.id, email="b@x", display_name="B")
    assert (updated.email, updated.display_name, updated.role) == ("b@x", "B", "admin")


def test_duplicate_email_rejected_but_null_emails_allowed(app):
    accounts.create_user(email="same@x")
    with pytest.raises(Conflict):
        accounts.create_user(email="same@x")
    accounts.create_user()
    accounts.create_user()


def test_get_unknown_user_is_not_found(app):
    with pytest.raises(NotFound):
        accounts.get_user("nope")


def test_last_active_admin_is_protected(app):
    only_admin = accounts.create_user(role="admin")
    with pytest.raises(Conflict):
        accounts.update_user(only_admin.id, role="user")
    with pytest.raises(Conflict):
        accounts.set_user_active(only_admin.id, False, actor_id="someone-else")
    second = accounts.create_user(role="admin")
    accounts.update_user(only_admin.id, role="user")
    assert accounts.get_user(only_admin.id).role == "user"
    with pytest.raises(Conflict):
        accounts.set_user_active(second.id, False)


def test_cannot_deactivate_yourself(app):
    admin = accounts.create_user(role="admin")
    with pytest.raises(BadRequest):
        accounts.set_user_active(admin.id, False, actor_id=admin.id)


# --- Telegram ------------------------------------------------------------------------------

def test_telegram_link_auth_relink_and_unlink(app):
    alice, bob = accounts.create_user(role="admin"), accounts.create_user()
    accounts.link_telegram(alice.id, 42, "alice_tg")
    assert accounts.authenticate_telegram(42).user_id == alice.id
    assert accounts.authenticate_telegram(43) is None
    accounts.link_telegram(bob.id, 42, None)
    assert accounts.get_telegram_link(alice.id) is None
    assert accounts.authenticate_telegram(42).user_id == bob.id
    accounts.unlink_telegram(bob.id)
    assert accounts.authenticate_telegram(42) is None


def test_one_telegram_link_per_user(app):
    alice = accounts.create_user()
    accounts.link_telegram(alice.id, 1, None)
    accounts.link_telegram(alice.id, 2, "second")
    assert accounts.get_telegram_link(alice.id).telegram_id == 2
    assert accounts.authenticate_telegram(1) is None


def test_deactivated_user_telegram_auth_fails(app):
    admin, user = accounts.create_user(role="admin"), accounts.create_user()
    accounts.link_telegram(user.id, 7, None)
    accounts.set_user_active(user.id, False, actor_id=admin.id)
    assert accounts.authenticate_telegram(7) is None


# --- audit log and bootstrap ---------------------------------------------------------------

def test_audit_log_newest_first_with_limit(app):
    for n in range(10):
        accounts.audit("test_event", user_id=f"u{n}", detail="d", ip_address="1.2.3.4")
    rows = accounts.read_audit(limit=3)
    assert [r.user_id for r in rows] == ["u9", "u8", "u7"]
    assert (rows[0].event_type, rows[0].detail, rows[0].ip_address) == ("test_event", "d", "1.2.3.4")


def test_failed_logins_are_aggregated(app):
    for _ in range(50):
        accounts.audit_failed_login("10.0.0.9", "invalid API key")
    rows = [r for r in accounts.read_audit() if r.event_type == "auth_failed"]
    assert len(rows) == 1 and rows[0].count == 50


def test_key_events_are_audited(app, make_user):
    user, _ = make_user("user")
    key_id = accounts.list_api_keys(user.id)[0].id
    accounts.revoke_api_key(key_id)
    events = {r.event_type for r in AuthAuditLog.select().where(AuthAuditLog.user_id == user.id)}
    assert {"user_created", "api_key_created", "api_key_revoked"} <= events


def test_bootstrap_creates_admin_once(app):
    key = accounts.bootstrap_admin(None)
    assert key.startswith("sp_live_")
    assert accounts.authenticate(key).is_admin
    assert accounts.bootstrap_admin(None) is None
    assert len(accounts.list_users()) == 1
    assert [r.event_type for r in accounts.read_audit()] == ["bootstrap"]


def test_bootstrap_imports_legacy_key(app):
    assert accounts.bootstrap_admin("my-legacy-secret") is None
    principal = accounts.authenticate("my-legacy-secret")
    assert principal.is_admin
    assert accounts.list_api_keys(principal.user_id)[0].label == "Imported from STARPOD_API_KEY"


# --- rate limiter --------------------------------------------------------------------------

def test_rate_limiter_allows_then_blocks(app):
    assert [ratelimit.check("u", 3, 60).allowed for _ in range(4)] == [True, True, True, False]


def test_rate_limiter_blocked_request_reports_retry_after(app):
    ratelimit.check("u", 1, 30)
    verdict = ratelimit.check("u", 1, 30)
    assert not verdict.allowed and 1 <= verdict.retry_after <= 30


def test_rate_limiter_users_independent(app):
    for user in [f"user{n}" for n in range(50)]:
        assert [ratelimit.check(user, 2, 60).allowed for _ in range(3)] == [True, True, False]


def test_rate_limiter_zero_disables(app):
    assert all(ratelimit.check("u", 0, 60).allowed for _ in range(100))


def test_rate_limiter_window_expires(app):
    assert ratelimit.check("u", 1, 0.01).allowed
    time.sleep(0.02)
    assert ratelimit.check("u", 1, 0.01).allowed


def test_rate_limiter_rejections_are_not_recorded(app):
    now = 1_000_000_000
    assert ratelimit.check("u", 1, 1, now_us=now).allowed
    assert not ratelimit.check("u", 1, 1, now_us=now + 500_000).allowed
    # Only the first hit counts, so the window frees up one second after it.
    assert ratelimit.check("u", 1, 1, now_us=now + 1_000_001).allowed


def test_rate_limiter_leases_admit_exactly_the_budget(app):
    now = 1_000_000_000
    verdicts = [ratelimit.check("u", 1000, 60, now_us=now + n).allowed for n in range(1100)]
    assert verdicts == [True] * 1000 + [False] * 100
    rows = RateLimitHit.select().where(RateLimitHit.user_id == "u")
    assert sum(row.hits for row in rows) == 1000
    assert len(rows) < 100  # far from the limit, one database row stands for a lease of many requests


def test_rate_limiter_lease_counts_until_its_last_request_leaves_the_window(app):
    now = 1_000_000_000
    for n in range(ratelimit.LEASE_MAX):  # far from the limit: one lease, used up in memory
        assert ratelimit.check("u", 2 * ratelimit.LEASE_MAX * ratelimit.LEASE_SHARE, 10, now_us=now + n).allowed
    assert RateLimitHit.select().count() == 1
    budget = ratelimit.LEASE_MAX + 1  # a budget this lease fills: exact steps only
    assert ratelimit.check("u", budget, 10, now_us=now + 1000).allowed
    assert not ratelimit.check("u", budget, 10, now_us=now + 10_000_000).allowed
    # The lease's last request was at now + LEASE_MAX - 1; the window frees it only after that.
    assert ratelimit.check("u", budget, 10, now_us=now + 10_000_000 + ratelimit.LEASE_MAX).allowed


def _hammer(db_path: str, database_url: str | None, attempts: int, results) -> None:
    from starpod.db import open_database
    open_database(Path(db_path), database_url)
    results.put(sum(ratelimit.check("shared", 600, 3600).allowed for _ in range(attempts)))


def test_rate_limiter_never_admits_more_than_the_budget_across_processes(app, config):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(config.db_path), config.database_url, 400, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    allowed = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    # Never more than the budget; at most each process's last lease went unused.
    assert 600 - 3 * ratelimit.LEASE_MAX <= sum(allowed) <= 600
    assert sum(row.hits for row in RateLimitHit.select()) >= sum(allowed)
