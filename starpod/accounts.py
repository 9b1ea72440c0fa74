"""Users, API keys, Telegram links, the auth audit log and first-admin bootstrap.

Plain domain logic over the models; nothing here knows about Flask.  API keys are stored as an
8-character lookup prefix plus an argon2id hash.  `authenticate` runs argon2 at most once per key
per process and caches the key's state; every change that affects authentication bumps the auth
generation counter inside its transaction and calls `cache.invalidate()` after its commit, which
every worker notices on its next request, or within half a second when the hint file cannot be
written (see authcache).  Failed verifications are cached briefly and throttled per source.
"""
from __future__ import annotations

import functools
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from passlib.hash import argon2
from peewee import IntegrityError

from . import changehints
from .authcache import AuthCache, key_digest
from .concurrency import SharedCalls, run_blocking
from .db import database, write_transaction
from .errors import BadRequest, Conflict, NotFound, StarpodError
from .models import ApiKey, AuthAuditLog, AuthGeneration, TelegramLink, User
from .timeutil import now_iso, parse_rfc3339, to_rfc3339, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "sp_live_"
ROLES = ("admin", "user")
LAST_USED_WRITE_INTERVAL = 60.0  # seconds between last_used_at writes for one key per process
FAILURE_WINDOW = timedelta(minutes=1)
USERS_LOCK = "users"  # write-transaction resource of role/activity changes and the bootstrap

# A client that opens several requests at once with a key this worker has not verified yet (the
# web UI's first page, or 200 sockets of a load test) makes one argon2 run, not one per request.
_verifications = SharedCalls()
_hasher = argon2.using(type="id", memory_cost=19456, rounds=2, parallelism=1, digest_size=32, salt_size=16)


# --- keys ------------------------------------------------------------------------------------

def generate_key() -> str:
    return KEY_PREFIX + secrets.token_hex(20)


def extract_prefix(key: str) -> str | None:
    """The 8 characters after `sp_live_`, or None when the key has no such prefix."""
    if key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 8:
        return key[len(KEY_PREFIX):len(KEY_PREFIX) + 8]
    return None


def lookup_prefix(key: str) -> str:
    """Prefix a key is stored and looked up under; legacy keys use their first 8 characters."""
    return extract_prefix(key) or key[:8]


def hash_key(key: str) -> str:
    return _hasher.hash(key)


def verify_key(key: str, key_hash: str) -> bool:
    """argon2 verification that never raises: malformed or empty hashes just fail."""
    if not key_hash:
        return False
    try:
        return _hasher.verify(key, key_hash)
    except (ValueError, TypeError):
        return False


# --- serialisation ---------------------------------------------------------------------------

def user_json(user: User) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "role": user.role if user.role in ROLES else "user",
        "is_active": bool(user.is_active),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def key_meta_json(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "prefix": key.prefix,
        "label": key.label,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "last_used_at": key.last_used_at,
        "created_at": key.created_at,
    }


def telegram_link_json(link: TelegramLink) -> dict:
    linked = parse_rfc3339(link.linked_at) or utcnow()
    return {"telegram_id": link.telegram_id, "username": link.username,
            "linked_at": linked.isoformat(timespec="microseconds")}


# --- audit log -------------------------------------------------------------------------------

def audit(event_type: str, user_id: str | None = None, detail: str | None = None,
          ip_address: str | None = None) -> None:
    AuthAuditLog.create(event_type=event_type, user_id=user_id, detail=detail, ip_address=ip_address)


def audit_failed_login(ip_address: str | None, reason: str) -> None:
    """Count a failed authentication; one row per source and minute, not one per attempt."""
    since = to_rfc3339(utcnow() - FAILURE_WINDOW)
    try:
        updated = (AuthAuditLog.update(count=AuthAuditLog.count + 1, detail=reason)
                   .where((AuthAuditLog.event_type == "auth_failed")
                          & (AuthAuditLog.ip_address == ip_address)
                          & (AuthAuditLog.created_at >= since))
                   .execute())
        if not updated:
            audit("auth_failed", detail=reason, ip_address=ip_address)
    except Exception:  # the audit trail must never turn a 401 into a 500
        log.exception("could not record a failed login")


def read_audit(limit: int = 100) -> list[AuthAuditLog]:
    return list(AuthAuditLog.select()
                .order_by(AuthAuditLog.created_at.desc(), AuthAuditLog.id.desc())
                .limit(limit))


# --- auth generation -------------------------------------------------------------------------

GENERATION_ROW = 1


def bump_generation() -> None:
    """Count a change that affects authentication; call inside the transaction making it."""
    (AuthGeneration.insert(id=GENERATION_ROW, value=1)
     .on_conflict(conflict_target=[AuthGeneration.id], update={AuthGeneration.value: AuthGeneration.value + 1})
     .execute())
    changehints.announce(changehints.AUTH)  # other servers re-read the counter once this commits


def read_generation() -> int:
    return AuthGeneration.select(AuthGeneration.value).where(AuthGeneration.id == GENERATION_ROW).scalar() or 0


# --- users -----------------------------------------------------------------------------------

_auth_enabled = False


def has_users() -> bool:
    """Whether auth is enabled.  Users are never hard-deleted, so once true it stays true."""
    global _auth_enabled
    if not _auth_enabled:
        _auth_enabled = User.select().exists()
    return _auth_enabled


def get_user(user_id: str) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise NotFound("User not found")
    return user


def list_users() -> list[User]:
    return list(User.select().order_by(User.created_at, User.id))


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise BadRequest(f"role must be one of: {', '.join(ROLES)}")


def create_user(email: str | None = None, display_name: str | None = None, role: str = "user",
                actor_id: str | None = None) -> User:
    _check_role(role)
    now = now_iso()
    try:
        with database.atomic():
            user = User.create(email=email, display_name=display_name, role=role,
                               created_at=now, updated_at=now)
    except IntegrityError as exc:
        raise Conflict("Email already in use") from exc
    audit("user_created", user.id, f"role={role} by={actor_id or 'anonymous'}")
    return user


def _active_admins_other_than(user_id: str) -> int:
    return (User.select()
            .where((User.role == "admin") & (User.is_active == True) & (User.id != user_id))  # noqa: E712
            .count())


def _guard_last_admin(user: User) -> None:
    if user.role == "admin" and user.is_active and _active_admins_other_than(user.id) == 0:
        raise Conflict("Cannot remove the last active admin")


def update_user(user_id: str, email: str | None = None, display_name: str | None = None,
                role: str | None = None, actor_id: str | None = None) -> User:
    """Partial update: None leaves a field unchanged."""
    if role is not None:
        _check_role(role)
    try:
        with write_transaction(USERS_LOCK):
            user = get_user(user_id)
            if role is not None and role != user.role and role != "admin":
                _guard_last_admin(user)
            old_role = user.role
            if email is not None:
                user.email = email
            if display_name is not None:
                user.display_name = display_name
            if role is not None:
                user.role = role
            user.updated_at = now_iso()
            user.save()
            bump_generation()  # role and display name are part of the cached principal
    except IntegrityError as exc:
        raise Conflict("Email already in use") from exc
    cache.invalidate()
    if role is not None and role != old_role:
        audit("user_role_changed", user.id, f"{old_role} -> {role} by={actor_id or 'anonymous'}")
    return user


def set_user_active(user_id: str, active: bool, actor_id: str | None = None) -> User:
    if not active and actor_id == user_id:
        raise BadRequest("Cannot deactivate yourself")
    with write_transaction(USERS_LOCK):
        user = get_user(user_id)
        if not active:
            _guard_last_admin(user)
        if bool(user.is_active) == active:
            return user
        user.is_active = active
        user.updated_at = now_iso()
        user.save()
        bump_generation()
    cache.invalidate()
    audit("user_activated" if active else "user_deactivated", user.id, f"by={actor_id or 'anonymous'}")
    return user


# --- API keys --------------------------------------------------------------------------------

def _store_key(user: User, key: str, label: str | None) -> ApiKey:
    return ApiKey.create(user=user, prefix=lookup_prefix(key), key_hash=run_blocking(hash_key, key), label=label)


def create_api_key(user_id: str, label: str | None = None, actor_id: str | None = None) -> tuple[ApiKey, str]:
    """A new key for the user; the plaintext is returned here and never again."""
    user = get_user(user_id)
    key = generate_key()
    record = _store_key(user, key, label)
    audit("api_key_created", user.id, f"key={record.id} prefix={record.prefix} by={actor_id or 'anonymous'}")
    return record, key


def list_api_keys(user_id: str | None = None) -> list[ApiKey]:
    """The keys of `user_id` (every user's when None), newest first."""
    query = ApiKey.select() if user_id is None else ApiKey.select().where(ApiKey.user == user_id)
    return list(query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()))


def _usable_keys(user_id: str) -> list[ApiKey]:
    return [k for k in ApiKey.select().where((ApiKey.user == user_id) & ApiKey.revoked_at.is_null())
            if _not_expired(k.expires_at)]


def _guard_last_admin_key(key: ApiKey) -> None:
    """The last active admin keeps at least one usable key, or nobody could administer the server."""
    owner = key.user
    if owner.role != "admin" or not owner.is_active or _active_admins_other_than(owner.id):
        return
    if [k.id for k in _usable_keys(owner.id)] == [key.id]:
        raise Conflict("Cannot revoke the last active API key of the last active admin")


def revoke_api_key(key_id: str, actor_id: str | None = None) -> ApiKey:
    """Revoke a key; revoking twice keeps the first revocation time."""
    with write_transaction(USERS_LOCK):
        key = ApiKey.get_or_none(ApiKey.id == key_id)
        if key is None:
            raise NotFound("API key not found")
        if key.revoked_at is not None:
            return key
        _guard_last_admin_key(key)
        key.revoked_at = now_iso()
        key.save()
        bump_generation()
    cache.invalidate()
    audit("api_key_revoked", key.user_id, f"key={key.id} prefix={key.prefix} by={actor_id or 'anonymous'}")
    return key


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""
    user_id: str
    role: str
    display_name: str | None
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


cache = AuthCache()
_last_used_written: dict[str, float] = {}


def _not_expired(expires_at: str | None) -> bool:
    expires = parse_rfc3339(expires_at)
    return expires is None or expires > utcnow()


def _touch_last_used(key_id: str) -> None:
    now = time.monotonic()
    if now - _last_used_written.get(key_id, -LAST_USED_WRITE_INTERVAL) < LAST_USED_WRITE_INTERVAL:
        return
    _last_used_written[key_id] = now
    try:
        ApiKey.update(last_used_at=now_iso()).where(ApiKey.id == key_id).execute()
    except Exception:
        log.warning("could not update last_used_at of key %s", key_id, exc_info=True)


@functools.cache
def _key_state_sql(param: str) -> str:
    """SQL reading a key's and its owner's current state by key id, compiled once per placeholder
    style `param` of the database bound now (one process may bind either engine in turn: `db copy`).

    This runs on every authenticated request; building the query through the ORM each time
    costs more than the request itself.
    """
    query = (ApiKey.select(ApiKey.revoked_at, ApiKey.expires_at, User.id, User.role, User.display_name,
                           User.is_active)
             .join(User).where(ApiKey.id == "?"))
    sql, _params = query.sql()
    return sql


def _read_key_state(key_id: str) -> tuple[Principal | None, str | None]:
    """(owner if the key is not revoked and the owner is active, the key's expiry)."""
    row = database.execute_sql(_key_state_sql(database.param), (key_id,)).fetchone()
    if row is None:
        return None, None
    revoked_at, expires_at, user_id, role, display_name, is_active = row
    if revoked_at is not None or not is_active:
        return None, expires_at
    return Principal(user_id=user_id, role=role if role in ROLES else "user",
                     display_name=display_name, key_id=key_id), expires_at


def _principal_for_key(key_id: str) -> Principal | None:
    hit, state = cache.state(key_id)
    if not hit:
        generation = cache.generation.current()
        state = _read_key_state(key_id)
        cache.store_state(key_id, generation, state)
    principal, expires_at = state
    if principal is None or not _not_expired(expires_at):
        return None
    _touch_last_used(key_id)
    return principal


class TooManyFailures(StarpodError):
    """A source failed verification too often: no more argon2 for it for a while."""
    status = 429

    def __init__(self, retry_after: int):
        super().__init__("Too many failed authentication attempts; try again later",
                         headers={"Retry-After": str(retry_after)})


def _refuse_throttled(source: str | None) -> None:
    retry_after = cache.failures.retry_after(source) if source is not None else 0
    if retry_after:
        raise TooManyFailures(retry_after)


def authenticate(key: str, source: str | None = None) -> Principal | None:
    """The active user owning `key`, or None (unknown, revoked, expired, inactive, empty).

    `source` (the client address) is throttled once its keys failed argon2 too often
    (TooManyFailures); a key that just failed fails again without argon2 for a while.
    """
    if not key:
        return None
    digest = key_digest(key)
    cached_id = cache.verified.get(digest)
    if cached_id is not None:
        return _principal_for_key(cached_id)
    if cache.recently_failed(digest):
        return None
    generation = cache.generation.current()
    candidates = list(ApiKey.select(ApiKey.id, ApiKey.key_hash).join(User).where(
        (ApiKey.prefix == lookup_prefix(key)) & ApiKey.revoked_at.is_null() & (User.is_active == True)))  # noqa: E712
    if not candidates:
        return None
    _refuse_throttled(source)
    for candidate in candidates:
        if _verifications.call((digest, candidate.key_hash), verify_key, key, candidate.key_hash):
            cache.verified.put(digest, candidate.id)
            return _principal_for_key(candidate.id)
    cache.store_failure(digest, generation)
    if source is not None:
        cache.failures.note_failure(source)
    return None


def refresh_principal(principal: Principal) -> Principal | None:
    """`principal` as the auth store says now (through the cache): None once its key was revoked
    or expired or its owner deactivated, with the current role otherwise."""
    if principal.key_id is None:
        return principal
    return _principal_for_key(principal.key_id)


# --- Telegram links --------------------------------------------------------------------------

def get_telegram_link(user_id: str) -> TelegramLink | None:
    return TelegramLink.select().where(TelegramLink.user == user_id).order_by(TelegramLink.linked_at.desc()).first()


def link_telegram(user_id: str, telegram_id: int, username: str | None) -> TelegramLink:
    """Link one Telegram account to the user, replacing the user's previous link and moving the
    account away from any other user."""
    if telegram_id <= 0:
        raise BadRequest("telegram_id must be a positive integer")
    with write_transaction("telegram_links"):
        user = get_user(user_id)
        TelegramLink.delete().where((TelegramLink.user == user.id) | (TelegramLink.telegram_id == telegram_id)).execute()
        link = TelegramLink.create(telegram_id=telegram_id, user=user, username=username, linked_at=now_iso())
    audit("telegram_linked", user.id, f"telegram_id={telegram_id}")
    return link


def unlink_telegram(user_id: str) -> int:
    removed = TelegramLink.delete().where(TelegramLink.user == user_id).execute()
    if removed:
        audit("telegram_unlinked", user_id)
    return removed


def authenticate_telegram(telegram_id: int) -> Principal | None:
    link = (TelegramLink.select(TelegramLink, User).join(User)
            .where((TelegramLink.telegram_id == telegram_id) & (User.is_active == True))  # noqa: E712
            .first())
    if link is None:
        return None
    return Principal(user_id=link.user.id, role=link.user.role, display_name=link.user.display_name)


# --- bootstrap -------------------------------------------------------------------------------

def bootstrap_admin(import_key: str | None) -> str | None:
    """Create the first admin when there are no users; safe when several processes race.

    Returns the plaintext key when this call generated one (the caller logs it once), None when
    users already existed or the key was imported.
    """
    with write_transaction(USERS_LOCK):
        if User.select().exists():
            return None
        now = now_iso()
        admin = User.create(display_name="Admin", role="admin", created_at=now, updated_at=now)
        if import_key:
            _store_key(admin, import_key, "Imported from STARPOD_API_KEY")
        else:
            generated = generate_key()
            _store_key(admin, generated, "Auto-generated admin key")
        audit("bootstrap", admin.id, "Admin user created")
    if import_key:
        log.info("First admin %s created with the API key imported from STARPOD_API_KEY", admin.id)
        return None
    return generated


def reset_process_state(generation_path: Path | None) -> None:
    """Forget what this process cached about the auth store (a database was opened)."""
    global _auth_enabled, cache
    _auth_enabled = False
    cache = AuthCache(generation_path, read_generation)
    _last_used_written.clear()
