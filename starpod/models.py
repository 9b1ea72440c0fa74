"""Every Peewee model of Starpod, over the one shared database.

Timestamps are fixed-width RFC 3339 text (see timeutil) so text order is time order.
"""
from __future__ import annotations

import uuid

from peewee import (AutoField, BigIntegerField, BooleanField, Check, CompositeKey, FloatField, ForeignKeyField,
                    IntegerField, Model, SQL, TextField)

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
    """Allowed requests in the sliding-window log of a user (shared by all workers)."""
    id = AutoField()
    user_id = TextField()
    at = BigIntegerField()  # monotonic-enough wall clock in microseconds
    hits = IntegerField(default=1)  # requests the row stands for (a worker's lease reserves several)

    class Meta:
        table_name = "rate_limit_hits"
        indexes = ((("user_id", "at"), False),)


# --- sessions -------------------------------------------------------------------------------

class Session(BaseModel):
    """One conversation on one channel, owned by the user it was started for."""
    id = TextField(primary_key=True, default=new_uuid)
    created_at = TextField(default=now_iso)
    last_message_at = TextField(default=now_iso)
    is_closed = BooleanField(default=False)
    summary = TextField(null=True)
    message_count = IntegerField(default=0)
    channel = TextField(default="main")
    channel_session_key = TextField(null=True)
    title = TextField(null=True)
    user_id = TextField(default="admin")
    is_read = BooleanField(default=True)

    class Meta:
        table_name = "session_metadata"
        indexes = (
            (("channel", "channel_session_key", "user_id", "is_closed", "last_message_at"), False),
            (("user_id", "last_message_at"), False),
            (("last_message_at",), False),
        )


class Message(BaseModel):
    """Display history of a session: user, assistant, tool_use and tool_result rows."""
    id = AutoField()
    session = ForeignKeyField(Session, column_name="session_id", on_delete="CASCADE", index=False)
    role = TextField(constraints=[Check("role IN ('user', 'assistant', 'tool_use', 'tool_result')")])
    content = TextField()
    timestamp = TextField(default=now_iso)

    class Meta:
        table_name = "session_messages"
        indexes = ((("session", "id"), False),)


class TranscriptEntry(BaseModel):
    """What the model saw: one provider-neutral message (JSON) or a compaction marker per row."""
    id = AutoField()
    session = ForeignKeyField(Session, column_name="session_id", on_delete="CASCADE", index=False)
    kind = TextField(constraints=[Check("kind IN ('message', 'compaction')")])
    data = TextField()
    timestamp = TextField(default=now_iso)

    class Meta:
        table_name = "session_transcript"
        indexes = ((("session", "kind", "id"), False),)


class UsageStat(BaseModel):
    """One row per completed agent run."""
    id = AutoField()
    session = ForeignKeyField(Session, column_name="session_id", on_delete="CASCADE", index=True)
    turn = IntegerField(default=0)
    input_tokens = IntegerField(default=0)
    output_tokens = IntegerField(default=0)
    cache_read = IntegerField(default=0)
    cache_write = IntegerField(default=0)
    cost_usd = FloatField(default=0.0)
    model = TextField(null=True)
    timestamp = TextField(default=now_iso)

    class Meta:
        table_name = "usage_stats"


class CompactionLog(BaseModel):
    id = AutoField()
    session = ForeignKeyField(Session, column_name="session_id", on_delete="CASCADE", index=True)
    timestamp = TextField(default=now_iso)
    trigger = TextField(default="auto")
    pre_tokens = IntegerField(default=0)
    summary = TextField(default="")
    messages_compacted = IntegerField(default=0)

    class Meta:
        table_name = "compaction_log"


# --- instances ------------------------------------------------------------------------------

class Instance(BaseModel):
    """A Starpod server process run by the local instance backend.

    Timestamps are epoch seconds, as the instance API (spec §2.2) serves them.  `pid` together with
    `pid_started` (the process's start time) identifies the process even after pid reuse.
    """
    id = TextField(primary_key=True, default=new_uuid)
    name = TextField(null=True)
    region = TextField(null=True)
    status = TextField(default="creating",
                       constraints=[Check("status IN ('creating', 'running', 'paused', 'stopped', 'error')")])
    port = IntegerField(unique=True)
    pid = IntegerField(null=True)
    pid_started = FloatField(null=True)
    last_heartbeat = BigIntegerField(null=True)
    created_at = BigIntegerField()
    updated_at = BigIntegerField()

    class Meta:
        table_name = "instances"


# --- realtime (WebSocket runs) --------------------------------------------------------------

class ChatRun(BaseModel):
    """A chat run started over /ws.  It belongs to no socket: any worker can replay and follow it."""
    id = TextField(primary_key=True, default=new_uuid)
    user_id = TextField()
    status = TextField(default="running", constraints=[Check("status IN ('running', 'finished')")])
    worker_id = TextField()
    created_at = TextField(default=now_iso)
    heartbeat_at = TextField(default=now_iso)  # refreshed by the executing worker; stale = orphaned
    finished_at = TextField(null=True)
    # Its executing worker stops the reply streaming now.  The database default serves the runs
    # inserted by plain SQL (realtime/runs.py), which names only the columns it sets.
    stop_requested = BooleanField(default=False, constraints=[SQL("DEFAULT FALSE")])

    class Meta:
        table_name = "chat_runs"
        indexes = ((("status", "heartbeat_at"), False), (("status", "finished_at"), False))


class RunEvent(BaseModel):
    """One wire frame of a run, numbered by the run's `seq`."""
    id = AutoField()
    run = ForeignKeyField(ChatRun, column_name="run_id", on_delete="CASCADE", index=False)
    seq = IntegerField()
    session_id = TextField(null=True, index=True)  # set on stream_start frames: resume looks runs up by it
    frame = TextField()

    class Meta:
        table_name = "chat_run_events"
        indexes = ((("run", "seq"), True),)


class RunFollowup(BaseModel):
    """A message sent while a run was active: injected into it or queued after it, never lost."""
    id = AutoField()
    run = ForeignKeyField(ChatRun, column_name="run_id", on_delete="CASCADE", index=False)
    mode = TextField(constraints=[Check("mode IN ('inject', 'queue')")])
    status = TextField(default="pending", constraints=[Check("status IN ('pending', 'claimed')")])
    text = TextField()
    user_id = TextField()
    is_admin = BooleanField(default=False)
    channel_id = TextField(default="main")
    channel_session_key = TextField(null=True)
    created_at = TextField(default=now_iso)

    class Meta:
        table_name = "chat_run_followups"
        indexes = ((("run", "status", "id"), False),)


class Notification(BaseModel):
    """A `notification` frame waiting to be fanned out to its owner's WebSocket clients on every worker."""
    id = AutoField()
    frame = TextField()
    created_at = TextField(default=now_iso, index=True)
    user_id = TextField(null=True)  # the owner; NULL = agent-level (admins only)

    class Meta:
        table_name = "ws_notifications"


# --- leases (one holder across workers and servers) -----------------------------------------

class Lease(BaseModel):
    """A named, expiring claim: whoever holds an unexpired row is the only one doing that work.

    `expires_at` is epoch seconds; a holder that dies stops renewing and is replaced once it passes.
    """
    name = TextField(primary_key=True)
    holder = TextField()
    expires_at = FloatField()
    acquired_at = FloatField()

    class Meta:
        table_name = "leases"


# --- auth generation ------------------------------------------------------------------------

class AuthGeneration(BaseModel):
    """One row counting committed changes that affect authentication (revoke, (de)activate, role).

    Bumped inside the transaction of each such change; every worker compares it with the value
    its cached key states were read under (see authcache).
    """
    id = IntegerField(primary_key=True)
    value = BigIntegerField(default=0)

    class Meta:
        table_name = "auth_generation"


# --- cron (scheduler) -----------------------------------------------------------------------

class CronJob(BaseModel):
    """A scheduled prompt.  Instants are epoch seconds (UTC); `user_id` NULL = agent-level job.

    `next_run_at` and `retry_at` double as claims: the scheduler fires an occurrence only by
    changing the exact value it read (compare-and-set), so no occurrence fires twice.
    """
    id = TextField(primary_key=True, default=new_uuid)
    name = TextField()
    prompt = TextField()
    schedule_type = TextField(constraints=[Check("schedule_type IN ('interval', 'cron', 'one_shot')")])
    schedule_value = TextField()
    timezone = TextField()
    enabled = BooleanField(default=True)
    delete_after_run = BooleanField(default=False)
    created_at = FloatField()
    last_run_at = FloatField(null=True)
    next_run_at = FloatField(null=True, index=True)
    retry_count = IntegerField(default=0)
    max_retries = IntegerField(default=3)
    last_error = TextField(null=True)
    retry_at = FloatField(null=True, index=True)
    timeout_secs = IntegerField(default=7200)
    session_mode = TextField(default="isolated", constraints=[Check("session_mode IN ('isolated', 'main')")])
    user_id = TextField(null=True)
    # SQL UNIQUE treats NULLs as distinct, so agent-level jobs use "" here to stay unique by name.
    owner_key = TextField(default="")

    class Meta:
        table_name = "cron_jobs"
        indexes = ((("owner_key", "name"), True),)


class CronRun(BaseModel):
    """One execution of a job: `pending` (asked for by hand), `running`, then `success`/`failed`."""
    id = TextField(primary_key=True, default=new_uuid)
    job = ForeignKeyField(CronJob, column_name="job_id", on_delete="CASCADE", index=False)
    status = TextField(default="pending",
                       constraints=[Check("status IN ('pending', 'running', 'success', 'failed')")])
    requested_at = FloatField()
    started_at = FloatField(null=True)
    completed_at = FloatField(null=True)
    due_at = FloatField(null=True)  # the scheduled instant this run fired for (None: by hand)
    result_summary = TextField(null=True)
    session_id = TextField(null=True)
    holder = TextField(null=True)  # the scheduler that executes it
    note = TextField(null=True)  # prepended to the prompt for this run only (HeartbeatWake message)

    class Meta:
        table_name = "cron_runs"
        indexes = ((("job", "requested_at"), False), (("status",), False))


class CronState(BaseModel):
    """Small named values of the scheduler (e.g. which deployment start already ran BOOT.md)."""
    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "cron_state"


# --- Telegram channel -----------------------------------------------------------------------

class TelegramState(BaseModel):
    """Small named values of the Telegram channel, e.g. `offset:<bot id>` (next update to fetch)."""
    name = TextField(primary_key=True)
    value = BigIntegerField()

    class Meta:
        table_name = "telegram_state"


class TelegramUpdate(BaseModel):
    """An update id already taken by some worker: each Telegram update is handled once."""
    bot_id = BigIntegerField()
    update_id = BigIntegerField()
    received_at = TextField(default=now_iso, index=True)

    class Meta:
        table_name = "telegram_updates"
        primary_key = CompositeKey("bot_id", "update_id")
