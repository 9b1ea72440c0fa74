"""The local instance backend: each instance is a separate Starpod server on this machine.

An instance lives in `<home>/instances/<id>/`: its data directory `.starpod/`, the server's
`server.log`, gunicorn's `gunicorn.pid` and a `.lock` file.  Its server is `gunicorn -c
gunicorn.conf.py wsgi:app` from this code base on its own port, started in its own session so it
outlives the worker (and the server) that started it, listening on 127.0.0.1 only.  Its first
start imports a freshly generated admin key, handed to the caller once and never kept here: it
reaches the instance in an owner-only file of its data directory that the instance deletes as it
reads it (`home.write_bootstrap_key`), never through its process environment.

State lives in the `instances` table.  Every lifecycle change of one instance (create, pause,
restart, delete, reconciliation) runs under the instance's exclusive lock (`locks.exclusive`: an
`flock` on its `.lock` file, an advisory lock on PostgreSQL), so no two workers of any server (nor
a restarting server) act on one instance at the same time.

Reconciliation policy (records vs. processes):
- at server start: a `running`/`creating` instance whose process is gone is started again on its
  port (status `creating`, then `running` once its `/api/health` answers); a `paused` one whose
  process is gone becomes `stopped` (POST restart brings it back); a live process is adopted
  as it is (and resumed unless `paused`: a crash can cut a pause short after the SIGSTOP); a live
  process of a `stopped`/`error` instance, or of a directory without a record,
  is terminated.  Data directories are never removed.
- on reads (list/get/health): a `creating` instance whose health answers becomes `running`; one
  whose process died unexpectedly becomes `error` (POST restart starts it again).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import requests
from peewee import IntegrityError

from ..accounts import generate_key
from ..db import database
from ..errors import Conflict, NotFound, StarpodError, UpstreamFailed
from ..filelock import LockTimeout
from ..home import take_bootstrap_key, write_bootstrap_key
from ..locks import exclusive
from ..models import Instance, new_uuid
from . import processes
from .base import InstanceBackend
from .processes import Handle

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LIVE = ("creating", "running", "paused")  # statuses that want a process
HEALTH_PROBE_TIMEOUT = 1.0
CPU_SAMPLE_SECS = 0.1


@dataclass(frozen=True)
class InstancePaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / ".starpod"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "gunicorn.pid"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


def epoch() -> int:
    return int(time.time())


def not_running(record: Instance) -> Conflict:
    return Conflict(f"Instance {record.id} is not running (status: {record.status})")


class LocalBackend(InstanceBackend):
    def __init__(self, home: Path, grace_secs: float = 10.0, startup_timeout: float = 30.0):
        self.instances_dir = Path(home) / "instances"
        self.grace_secs = grace_secs
        self.startup_timeout = startup_timeout
        # Waiting for another worker's lifecycle action on the same instance: at most one stop + start.
        self.lock_timeout = grace_secs + startup_timeout + 15.0

    # --- plumbing ---------------------------------------------------------------------------

    def paths(self, instance_id: str) -> InstancePaths:
        return InstancePaths(self.instances_dir / instance_id)

    @contextmanager
    def _locked(self, paths: InstancePaths, wait: bool = True) -> Iterator[bool]:
        """Hold the instance's lock; yields False when `wait` is off and someone else holds it."""
        try:
            with exclusive(f"instance:{paths.root.name}", paths.lock, self.lock_timeout, wait) as held:
                yield held
        except LockTimeout:
            raise Conflict("Instance is busy with another operation; try again") from None

    @staticmethod
    def _record(instance_id: str) -> Instance:
        record = Instance.get_or_none(Instance.id == instance_id)
        if record is None:
            raise NotFound(f"Instance not found: {instance_id}")
        return record

    @staticmethod
    def _save(record: Instance, touch: bool = True, **fields) -> None:
        if touch:
            fields["updated_at"] = epoch()
        for name, value in fields.items():
            setattr(record, name, value)
        with database.atomic():
            Instance.update(**fields).where(Instance.id == record.id).execute()

    def _forget_process(self, record: Instance, status: str) -> None:
        self._save(record, status=status, pid=None, pid_started=None)

    @staticmethod
    def _process(record: Instance) -> psutil.Process | None:
        return processes.find(record.pid, record.pid_started)

    @staticmethod
    def _handle(record: Instance) -> Handle:
        return Handle(record.pid, record.pid_started)

    def _command(self, paths: InstancePaths) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "gunicorn.conf.py"),
                "--pid", str(paths.pidfile), "wsgi:app"]

    def _probe(self, record: Instance) -> bool:
        """Ask the instance's `/api/health`; a good answer is recorded as its heartbeat."""
        try:
            answer = requests.get(f"http://127.0.0.1:{record.port}/api/health", timeout=HEALTH_PROBE_TIMEOUT)
        except requests.RequestException:
            return False
        if answer.status_code != 200:
            return False
        self._save(record, touch=False, last_heartbeat=epoch())
        return True

    # --- process lifecycle (callers hold the instance's lock) -----------------------------------

    def _allocate(self, instance_id: str, name: str | None, region: str | None) -> Instance:
        now = epoch()
        for _ in range(20):
            try:
                with database.atomic():
                    return Instance.create(id=instance_id, name=name, region=region, status="creating",
                                           port=processes.pick_free_port(), created_at=now, updated_at=now)
            except IntegrityError:  # that port already belongs to an instance (maybe a stopped one)
                continue
        raise Conflict("No free port for a new instance")

    def _start(self, record: Instance, paths: InstancePaths, api_key: str | None = None) -> None:
        if not processes.port_is_free(record.port):
            self._forget_process(record, "error")
            raise Conflict(f"Port {record.port} of instance {record.id} is in use by another process")
        paths.data.mkdir(parents=True, exist_ok=True)
        if api_key is not None:
            write_bootstrap_key(paths.data, api_key)
        paths.pidfile.unlink(missing_ok=True)  # stale: gunicorn refuses to start over a live-looking one
        bin_dir = Path(sys.executable).parent
        server_env = processes.server_environment(os.environ, {
            "STARPOD_HOME": str(paths.data), "HOST": "127.0.0.1", "PORT": str(record.port),
            "WEB_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
        try:
            handle = processes.spawn(self._command(paths), REPO_ROOT, server_env, paths.log)
        except OSError as exc:
            self._forget_process(record, "error")
            raise UpstreamFailed(f"Could not start instance {record.id}: {exc}") from None
        self._save(record, status="creating", pid=handle.pid, pid_started=handle.started)
        log.info("instance %s: server started (pid %s, port %s)", record.id, handle.pid, record.port)

    def _await_ready(self, record: Instance, paths: InstancePaths) -> None:
        """Wait until the new server answers (→ running) or dies (→ error); a slow one stays creating."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process(record) is None:
                self._forget_process(record, "error")
                log.warning("instance %s: server exited during start-up; see %s", record.id, paths.log)
                return
            if self._probe(record):
                self._save(record, status="running")
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def _reconcile(self, instance_id: str, at_start: bool) -> Instance:
        """Bring one record in line with the processes that actually run (see the module policy)."""
        record = self._record(instance_id)
        paths = self.paths(instance_id)
        process = self._process(record)
        stray = processes.find_by_pidfile(paths.pidfile)
        if stray is not None and (process is None or stray.pid != process.pid):
            if process is None and record.status in LIVE:
                process = stray
                handle = processes.handle_of(stray)
                self._save(record, pid=handle.pid, pid_started=handle.started)
                log.info("instance %s: adopted its running server (pid %s)", record.id, handle.pid)
            else:
                log.warning("instance %s: terminating a stray server (pid %s)", record.id, stray.pid)
                processes.terminate(processes.handle_of(stray), self.grace_secs)
        if process is not None and record.status not in LIVE:
            log.warning("instance %s is %s but its server runs; terminating it", record.id, record.status)
            processes.terminate(self._handle(record), self.grace_secs)
            self._forget_process(record, record.status)
        elif process is None and record.status in LIVE:
            self._revive(record, paths, at_start)
        elif process is not None and record.status != "paused":
            if at_start:  # a pause cut short by a crash may have frozen it without recording so
                processes.signal_group(record.pid, signal.SIGCONT)
            if record.status == "creating" and self._probe(record):
                self._save(record, status="running")
        return record

    def _revive(self, record: Instance, paths: InstancePaths, at_start: bool) -> None:
        if not at_start:
            log.warning("instance %s: server died unexpectedly; marked error", record.id)
            self._forget_process(record, "error")
        elif record.status == "paused":
            self._forget_process(record, "stopped")
        else:
            self._start(record, paths)

    def reconcile_all(self, at_start: bool = True) -> None:
        """Reconcile every record, then terminate servers running from directories without one.

        Instances locked by another worker are skipped: whoever holds the lock is managing them.
        """
        known = {record.id for record in Instance.select(Instance.id)}
        for instance_id in sorted(known):
            with self._locked(self.paths(instance_id), wait=False) as acquired:
                if acquired:
                    try:
                        self._reconcile(instance_id, at_start)
                    except StarpodError as exc:
                        log.warning("instance %s: reconciliation failed: %s", instance_id, exc.message)
        if not self.instances_dir.is_dir():
            return
        for directory in self.instances_dir.iterdir():
            if directory.name in known or not directory.is_dir():
                continue
            with self._locked(self.paths(directory.name), wait=False) as acquired:
                # Under the lock a create in progress elsewhere has either finished or not begun.
                if not acquired or Instance.get_or_none(Instance.id == directory.name) is not None:
                    continue
                stray = processes.find_by_pidfile(self.paths(directory.name).pidfile)
                if stray is not None:
                    log.warning("terminating server %s of unknown instance %s", stray.pid, directory.name)
                    processes.terminate(processes.handle_of(stray), self.grace_secs)

    def _refresh(self, record: Instance) -> Instance:
        """Lazy reconciliation on reads; cheap unless the record looks out of date."""
        if record.status not in LIVE:
            return record
        if record.status != "creating" and self._process(record) is not None:
            return record
        with self._locked(self.paths(record.id), wait=False) as acquired:
            return self._reconcile(record.id, at_start=False) if acquired else record

    # --- JSON ---------------------------------------------------------------------------------

    def _health(self, record: Instance, process: psutil.Process, sample: bool) -> dict:
        paused = record.status == "paused"
        if paused:
            cpu = 0.0
        else:
            cpu = processes.cpu_percent(process, CPU_SAMPLE_SECS if sample else 0.0)
        try:
            uptime = max(0, int(time.time() - process.create_time()))
        except psutil.Error:
            uptime = 0
        return {"cpu_percent": cpu, "memory_mb": processes.memory_mb(process),
                "disk_mb": processes.disk_mb(self.paths(record.id).root),
                "last_heartbeat": record.last_heartbeat or 0, "uptime_secs": uptime}

    def _json(self, record: Instance) -> dict:
        process = self._process(record) if record.status in LIVE else None
        return {"id": record.id, "name": record.name, "status": record.status, "region": record.region,
                "created_at": record.created_at, "updated_at": record.updated_at,
                "health": self._health(record, process, sample=False) if process is not None else None}

    # --- the backend interface --------------------------------------------------------------

    def list(self) -> list[dict]:
        records = Instance.select().order_by(Instance.created_at, Instance.id)
        return [self._json(self._refresh(record)) for record in records]

    def create(self, name: str | None, region: str | None) -> dict:
        api_key = generate_key()
        instance_id = new_uuid()
        paths = self.paths(instance_id)
        with self._locked(paths):
            try:
                record = self._allocate(instance_id, name, region)
            except BaseException:  # no record, so nothing may be left on disk either
                shutil.rmtree(paths.root, ignore_errors=True)
                raise
            self._start(record, paths, api_key)
            self._await_ready(record, paths)
            if record.status == "error":
                take_bootstrap_key(paths.data)  # the server died before importing it
        return {**self._json(record), "api_key": api_key, "port": record.port}

    def get(self, instance_id: str) -> dict:
        return self._json(self._refresh(self._record(instance_id)))

    def delete(self, instance_id: str) -> None:
        paths = self.paths(self._record(instance_id).id)
        with self._locked(paths):
            record = self._reconcile(instance_id, at_start=False)
            if self._process(record) is not None:
                processes.terminate(self._handle(record), self.grace_secs)
            if record.status != "stopped" or record.pid is not None:
                self._forget_process(record, "stopped")
            log.info("instance %s: stopped", record.id)

    def pause(self, instance_id: str) -> None:
        paths = self.paths(self._record(instance_id).id)
        with self._locked(paths):
            record = self._reconcile(instance_id, at_start=False)
            if record.status == "paused":
                return
            if record.status != "running":
                raise not_running(record)
            processes.signal_group(record.pid, signal.SIGSTOP)
            self._save(record, status="paused")

    def restart(self, instance_id: str) -> None:
        paths = self.paths(self._record(instance_id).id)
        with self._locked(paths):
            record = self._reconcile(instance_id, at_start=False)
            process = self._process(record)
            if record.status == "paused" and process is not None:
                processes.signal_group(record.pid, signal.SIGCONT)
                self._save(record, status="running")
                return
            if process is not None:
                processes.terminate(self._handle(record), self.grace_secs)
            self._start(record, paths)
            self._await_ready(record, paths)
            if record.status == "error":
                raise UpstreamFailed(f"Instance {record.id} failed to start; see its server.log")

    def health(self, instance_id: str) -> dict:
        record = self._refresh(self._record(instance_id))
        process = self._process(record) if record.status in LIVE else None
        if process is None:
            raise not_running(record)
        if record.status == "running":
            self._probe(record)
        return self._health(record, process, sample=True)
