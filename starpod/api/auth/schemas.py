"""Request and response schemas of the auth routes."""
from __future__ import annotations

from marshmallow import fields, validate

from ..schemas import BaseSchema, StrictInteger, Text

ROLE = validate.OneOf(("admin", "user"))


class UserSchema(BaseSchema):
    id = fields.String(required=True)
    email = fields.String(allow_none=True, required=True)
    display_name = fields.String(allow_none=True, required=True)
    role = fields.String(required=True, validate=ROLE)
    is_active = fields.Boolean(required=True)
    created_at = fields.String(required=True)
    updated_at = fields.String(required=True)


class UserCreateSchema(BaseSchema):
    email = Text(allow_none=True, load_default=None)
    display_name = Text(allow_none=True, load_default=None)
    role = Text(load_default="user", validate=ROLE)


class UserUpdateSchema(BaseSchema):
    email = Text(allow_none=True, load_default=None)
    display_name = Text(allow_none=True, load_default=None)
    role = Text(allow_none=True, load_default=None, validate=ROLE)


class ApiKeyMetaSchema(BaseSchema):
    id = fields.String(required=True)
    user_id = fields.String(required=True)
    prefix = fields.String(required=True)
    label = fields.String(allow_none=True, required=True)
    expires_at = fields.String(allow_none=True, required=True)
    revoked_at = fields.String(allow_none=True, required=True)
    last_used_at = fields.String(allow_none=True, required=True)
    created_at = fields.String(required=True)


class ApiKeyCreateSchema(BaseSchema):
    label = Text(allow_none=True, load_default=None)


class ApiKeyCreatedSchema(BaseSchema):
    meta = fields.Nested(ApiKeyMetaSchema, required=True)
    key = fields.String(required=True, metadata={"description": "The plaintext key; shown only here"})


class TelegramLinkSchema(BaseSchema):
    telegram_id = fields.Integer(metadata={"format": "int64"})
    username = fields.String(allow_none=True)
    linked_at = fields.String()


class TelegramLinkUpdateSchema(BaseSchema):
    telegram_id = StrictInteger(required=True, validate=validate.Range(min=-(2**63), max=2**63 - 1))
    username = Text(allow_none=True, load_default=None)


class VerifyUserSchema(BaseSchema):
    id = fields.String(required=True)
    display_name = fields.String(allow_none=True, required=True)
    role = fields.String(required=True)


class VerifySchema(BaseSchema):
    authenticated = fields.Boolean(required=True)
    auth_disabled = fields.Boolean(required=True)
    user = fields.Nested(VerifyUserSchema)
