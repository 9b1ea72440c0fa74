"""Request and response schemas of the settings routes.

Types are strict (settings.md §1.2): integers must be JSON integers, floats accept integers,
booleans must be JSON booleans, and strings must be encodable text (no lone surrogates).
"""
from __future__ import annotations

from marshmallow import fields, validate

from ..schemas import BaseSchema, StrictInteger, Text

U32 = validate.Range(min=0, max=2**32 - 1)
U63 = validate.Range(min=0, max=2**63 - 1)  # TOML integers are signed 64-bit
I64 = validate.Range(min=-(2**63), max=2**63 - 1)


class StrictBoolean(fields.Boolean):
    """Only JSON true/false (no "yes", 1 or "true")."""

    def _deserialize(self, value, attr, data, **kwargs) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictFloat(fields.Float):
    """A JSON number (integers accepted and converted), never a numeric string."""

    def _validated(self, value) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


def _optional_text(**kwargs) -> Text:
    return Text(allow_none=True, load_default=None, **kwargs)


class GeneralUpdateSchema(BaseSchema):
    provider = Text(required=True)
    model = Text(required=True)
    max_turns = StrictInteger(required=True, validate=U32)
    max_tokens = StrictInteger(required=True, validate=U32)
    agent_name = Text(required=True)
    server_addr = Text(required=True, metadata={"description": "Bind address; applies after a restart"})
    timezone = _optional_text(metadata={"description": "IANA name; null or \"\" removes it"})
    reasoning_effort = _optional_text(validate=validate.OneOf(("low", "medium", "high")))
    compaction_model = _optional_text(metadata={"description": "null or \"\" = use the primary model"})
    compaction_provider = _optional_text(metadata={"description": "null or \"\" = use the primary provider"})
    followup_mode = Text(allow_none=True, load_default="inject", validate=validate.OneOf(("inject", "queue")))


class GeneralUpdatedSchema(BaseSchema):
    status = fields.String(required=True, metadata={"example": "ok"})
    warnings = fields.List(fields.String(), metadata={"description": "Values saved as given but worth a look "
                                                                     "(e.g. a model its provider does not list)"})


class GeneralSchema(BaseSchema):
    provider = fields.String(required=True)
    model = fields.String(required=True)
    max_turns = fields.Integer(required=True)
    max_tokens = fields.Integer(required=True)
    agent_name = fields.String(required=True)
    timezone = fields.String(required=True, allow_none=True)
    reasoning_effort = fields.String(required=True, allow_none=True)
    compaction_model = fields.String(required=True, allow_none=True)
    compaction_provider = fields.String(required=True, allow_none=True)
    followup_mode = fields.String(required=True)
    server_addr = fields.String(required=True)


class ModelsSchema(BaseSchema):
    models = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), required=True,
                         metadata={"description": "Well-known models per provider"})


class MemorySettingsSchema(BaseSchema):
    half_life_days = StrictFloat(required=True, metadata={"description": "> 0"})
    mmr_lambda = StrictFloat(required=True, metadata={"description": "0..1"})
    vector_search = StrictBoolean(required=True)
    chunk_size = StrictInteger(required=True, validate=U63, metadata={"description": ">= 1"})
    chunk_overlap = StrictInteger(required=True, validate=U63, metadata={"description": "< chunk_size"})
    export_sessions = StrictBoolean(required=True)


class CronSettingsSchema(BaseSchema):
    default_max_retries = StrictInteger(required=True, validate=U32)
    default_timeout_secs = StrictInteger(required=True, validate=U63, metadata={"description": ">= 1"})
    max_concurrent_runs = StrictInteger(required=True, validate=U63, metadata={"description": ">= 1"})


class TelegramSettingsSchema(BaseSchema):
    enabled = StrictBoolean(required=True)
    gap_minutes = StrictInteger(allow_none=True, load_default=None, validate=I64,
                                metadata={"description": ">= 1; null removes it (default 360)"})
    stream_mode = _optional_text(metadata={"description": "final_only | all_messages; null keeps the stored one"})
    mode = _optional_text(metadata={"description": "polling | webhook; null keeps the stored one"})


class ChannelsSettingsSchema(BaseSchema):
    telegram = fields.Nested(TelegramSettingsSchema, required=True)


class FrontendSettingsSchema(BaseSchema):
    greeting = _optional_text()
    prompts = fields.List(Text(), required=True)


class FileContentSchema(BaseSchema):
    content = Text(required=True)
