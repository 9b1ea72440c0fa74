"""`GET /api/auth/verify` and the admin-only `/api/settings/auth/*` routes."""
from __future__ import annotations


from ... import accounts
from ..guards import client_ip, current_principal, public, read_api_key_header, require_admin
from ..parsing import Blueprint
from ..responses import json_response
from ..schemas import StatusSchema
from .schemas import (ApiKeyCreatedSchema, ApiKeyCreateSchema, ApiKeyMetaSchema, TelegramLinkSchema,
                      TelegramLinkUpdateSchema, UserCreateSchema, UserSchema, UserUpdateSchema, VerifySchema)

blp = Blueprint("auth", __name__, url_prefix="/api", description="Users, API keys and Telegram links")

OK = {"status": "ok"}
BAD_BODY = "Malformed JSON, or a value that fails a semantic check (e.g. an unknown role)"
NO_USER = "No user with this id"
LAST_ADMIN = "The last active admin cannot lose its role or be deactivated"


def _actor_id() -> str | None:
    principal = current_principal()
    return principal.user_id if principal else None


@blp.route("/auth/verify", methods=["GET"])
@public
@blp.response(200, VerifySchema)
@blp.alt_response(429, description="Too many failed verifications from this address")
def verify():
    """Whether the X-API-Key header holds a valid key; 200, never rate-limited, but 429 when the
    caller's address failed key verification too often (no argon2 for it for a while)."""
    if not accounts.has_users():
        return json_response({"authenticated": True, "auth_disabled": True})
    key = read_api_key_header()
    principal = accounts.authenticate(key, client_ip()) if key is not None else None
    if principal is None:
        return json_response({"authenticated": False, "auth_disabled": False})
    return json_response({"authenticated": True, "auth_disabled": False, "user": {
        "id": principal.user_id, "display_name": principal.display_name, "role": principal.role}})


@blp.route("/settings/auth/users", methods=["GET"])
@require_admin
@blp.response(200, UserSchema(many=True))
def list_users():
    """All users, oldest first, including inactive ones."""
    return [accounts.user_json(u) for u in accounts.list_users()]


@blp.route("/settings/auth/users", methods=["POST"])
@require_admin
@blp.arguments(UserCreateSchema)
@blp.alt_response(400, description=BAD_BODY)
@blp.alt_response(409, description="Email already in use")
@blp.response(201, UserSchema)
def create_user(body):
    """Create a user (role `user` unless stated); 409 for an email already in use."""
    return accounts.user_json(accounts.create_user(actor_id=_actor_id(), **body))


@blp.route("/settings/auth/users/<user_id>", methods=["GET"])
@require_admin
@blp.response(200, UserSchema)
@blp.alt_response(404, description=NO_USER)
def get_user(user_id):
    return accounts.user_json(accounts.get_user(user_id))


@blp.route("/settings/auth/users/<user_id>", methods=["PUT"])
@require_admin
@blp.arguments(UserUpdateSchema)
@blp.response(200, UserSchema)
@blp.alt_response(400, description=BAD_BODY)
@blp.alt_response(404, description=NO_USER)
@blp.alt_response(409, description=f"Email already in use, or: {LAST_ADMIN}")
def update_user(body, user_id):
    """Partial update: absent or null fields stay as they are; the last active admin keeps its role."""
    accounts.get_user(user_id)  # 404 before anything else
    return accounts.user_json(accounts.update_user(user_id, actor_id=_actor_id(), **body))


@blp.route("/settings/auth/users/<user_id>/deactivate", methods=["POST"])
@require_admin
@blp.response(200, StatusSchema)
@blp.alt_response(400, description="An admin cannot deactivate themselves")
@blp.alt_response(404, description=NO_USER)
@blp.alt_response(409, description=LAST_ADMIN)
def deactivate_user(user_id):
    """Soft-disable a user: their keys stop working until reactivation."""
    accounts.set_user_active(user_id, False, actor_id=_actor_id())
    return OK


@blp.route("/settings/auth/users/<user_id>/activate", methods=["POST"])
@require_admin
@blp.response(200, StatusSchema)
@blp.alt_response(404, description=NO_USER)
def activate_user(user_id):
    accounts.set_user_active(user_id, True, actor_id=_actor_id())
    return OK


@blp.route("/settings/auth/users/<user_id>/api-keys", methods=["GET"])
@require_admin
@blp.response(200, ApiKeyMetaSchema(many=True))
def list_api_keys(user_id):
    """The user's keys, newest first, revoked ones included; never the key itself."""
    return [accounts.key_meta_json(k) for k in accounts.list_api_keys(user_id)]


@blp.route("/settings/auth/users/<user_id>/api-keys", methods=["POST"])
@require_admin
@blp.arguments(ApiKeyCreateSchema)
@blp.response(201, ApiKeyCreatedSchema)
@blp.alt_response(400, description=BAD_BODY)
@blp.alt_response(404, description=NO_USER)
def create_api_key(body, user_id):
    """A new key; the plaintext `key` is in this response only."""
    record, key = accounts.create_api_key(user_id, body["label"], actor_id=_actor_id())
    return {"meta": accounts.key_meta_json(record), "key": key}


@blp.route("/settings/auth/api-keys/<key_id>/revoke", methods=["POST"])
@require_admin
@blp.response(200, StatusSchema)
@blp.alt_response(404, description="No API key with this id")
@blp.alt_response(409, description="The last active admin's last usable key")
def revoke_api_key(key_id):
    """Revoke a key; it stops working at once on every worker.  The last active admin's last usable
    key cannot be revoked (409)."""
    accounts.revoke_api_key(key_id, actor_id=_actor_id())
    return OK


@blp.route("/settings/auth/users/<user_id>/telegram", methods=["GET"])
@require_admin
@blp.response(200, TelegramLinkSchema)
def get_telegram_link(user_id):
    """The user's Telegram link, or `{}` when there is none."""
    link = accounts.get_telegram_link(user_id)
    return accounts.telegram_link_json(link) if link else {}


@blp.route("/settings/auth/users/<user_id>/telegram", methods=["PUT"])
@require_admin
@blp.arguments(TelegramLinkUpdateSchema)
@blp.response(200, TelegramLinkSchema)
@blp.alt_response(400, description=BAD_BODY)
@blp.alt_response(404, description=NO_USER)
def put_telegram_link(body, user_id):
    """Link a Telegram account (one per user; an account linked elsewhere moves here)."""
    return accounts.telegram_link_json(accounts.link_telegram(user_id, body["telegram_id"], body["username"]))


@blp.route("/settings/auth/users/<user_id>/telegram", methods=["DELETE"])
@require_admin
@blp.response(200, StatusSchema)
def delete_telegram_link(user_id):
    accounts.unlink_telegram(user_id)
    return OK
