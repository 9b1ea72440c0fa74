"""Every Peewee model of Starpod, over the one shared database.

Timestamps are fixed-width RFC 3339 text (see timeutil) so text order is time order.
"""
from __future__ import annotations

import uuid

from peewee import (AutoField, BigIntegerField, BooleanField, Check, ForeignKeyField, IntegerField,
                    Model, TextField)

from .db import database
from .timeutil import now_iso


def new_uuid() -> str:
    return str(uuid.uuid4())


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


# --- auth -----------------------------------------------------------------------------------

class User(BaseModel):
    id = TextField(primary_key=True, default=new_uuid)
    email = TextField(null=True, unique=True)
    display_name = TextField(null=True)
    role = TextField(default="user", constraints=[Check("role IN ('admin', 'user')")])
    is_active = BooleanField(default=True)
    created_at = TextField(default=now_iso)
    updated_at = TextField(default=now_iso)

    class Meta:
        table_name = "users"


class ApiKey(BaseModel):
    id = TextField(primary_key=True, default=new_uuid)
    user = ForeignKeyField(User, column_name="user_id", backref="api_keys", on_delete="CASCADE", index=True)
    prefix = TextField(index=True)
    key_hash = TextField()
    label = TextField(null=True)
    expires_at = TextField(null=True)
    revoked_at = TextField(null=True)
    last_used_at = TextField(null=True)
    created_at = TextField(default=now_iso)

    class Meta:
        table_name = "api_keys"


class TelegramLink(BaseModel):
    telegram_id = BigIntegerField(primary_key=True)
    user = ForeignKeyField(User, column_name="user_id", backref="telegram_links", on_delete="CASCADE", index=True)
    username = TextField(null=True)
    linked_at = TextField(default=now_iso)

    class Meta:
        table_name = "telegram_links"


class AuthAuditLog(BaseModel):
    id = AutoField()
    user_id = TextField(null=True, index=True)
    event_type = TextField()
    detail = TextField(null=True)
    ip_address = TextField(null=True)
    # Repeated events of one kind from one source within a minute share a row (failed-login floods).
    count = IntegerField(default=1)
    created_at = TextField(default=now_iso, index=True)

    class Meta:
        table_name = "auth_audit_log"


class RateLimitHit(BaseModel):
    """One allowed request in the sliding-window log of a user (shared by all workers)."""
    id = AutoField()
    user_id = TextField()
    at = BigIntegerField()  # monotonic-enough wall clock in microseconds

    class Meta:
        table_name = "rate_limit_hits"
        indexes = ((("user_id", "at"), False),)
