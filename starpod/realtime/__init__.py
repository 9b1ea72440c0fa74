"""Realtime delivery (no Flask): runs that outlive sockets, cross-worker wake-ups, attachments.

- `runs`: run execution, per-run `seq`, batched event storage, replay + live follow, follow-ups.
- `hub`: the per-worker singleton (doorbell listener, clients, notifications fan-out, shutdown).
- `doorbell`: UNIX-datagram wake-ups between worker processes of one machine.
- `attachments`: validation and saving of uploaded files.
"""
