"""Leases: one run at a time writes an output, and a crashed run's claim expires with it.

A run holds a *lease* on its output while it writes: a small zarr group ``_lease`` inside the
output whose attributes name the owner (host, process id and its start time, the command), when
the run started and its last *heartbeat*. A thread of the owning process refreshes the heartbeat
every :data:`HEARTBEAT_S` seconds. Another run finding the lease refuses with
:class:`~chunkreg.errors.OutputInUseError` and touches nothing, unless the lease has expired:

- on the same host, when the owning process no longer exists (or its pid now belongs to a
  process started later: pids are reused);
- from another host, when its heartbeat is older than :data:`STALE_AFTER_S` seconds.

An expired lease is taken over, and the run resumes (repairs) whatever the crashed one left
incomplete. The lease is removed when the run ends, whatever the outcome.

The workflows open their output inside :class:`output_scope`: a lease acquired by
:func:`acquire_lease` in it is released when the scope ends, however it ends; if the scope
fails with a bad-input error (:class:`~chunkreg.errors.InputError` and friends) and the output
did not exist before it, the output is removed again, so that "nothing was written" holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ChunkregError, InputError, OutputInUseError, TaskFailedError
from ._locations import Location, locate

__all__ = [
    "HEARTBEAT_S",
    "LEASE_GROUP",
    "STALE_AFTER_S",
    "Lease",
    "acquire_lease",
    "lease_status",
    "output_scope",
    "read_lease",
    "refuse_if_leased",
]

#: Name of the lease group inside an output.
LEASE_GROUP = "_lease"
_KEY = f"{LEASE_GROUP}/zarr.json"
_ATTR = "chunkreg_lease"
#: Seconds between heartbeats of a running owner.
HEARTBEAT_S = 10.0
#: A lease from another host whose heartbeat is older than this many seconds has expired.
STALE_AFTER_S = 120.0

_SCOPE: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "chunkreg_leases", default=None
)
_ACTIVE: dict[str, Lease] = {}  # token -> lease held by this process
_ACTIVE_LOCK = threading.Lock()


def _now() -> float:
    return time.time()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class _Slot:
    """Reads and writes the lease document of one output (a local path or a zarr store)."""

    def __init__(self, output: Any, where: Location) -> None:
        self.where = where
        self.path = where.local_path
        self.store = None
        if self.path is None:
            import zarr.storage

            if isinstance(output, str):
                self.store = zarr.storage.FsspecStore.from_url(output)
            else:
                self.store = output

    def _sync(self, coro):
        from zarr.core.sync import sync

        return sync(coro)

    @staticmethod
    def _document(record: dict) -> bytes:
        meta = {"zarr_format": 3, "node_type": "group", "attributes": {_ATTR: record}}
        return json.dumps(meta, indent=1).encode()

    def read(self) -> dict | None:
        for _ in range(5):  # a heartbeat may be rewriting the file right now
            raw = self._read_bytes()
            if raw is None:
                return None
            try:
                return json.loads(raw)["attributes"][_ATTR]
            except (ValueError, KeyError, TypeError):
                time.sleep(0.05)
        return {"unreadable": True}

    def _read_bytes(self) -> bytes | None:
        if self.path is not None:
            try:
                return (self.path / _KEY).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None
        from zarr.core.buffer import default_buffer_prototype

        buf = self._sync(self.store.get(_KEY, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def create(self, record: dict) -> bool:
        """Write the lease if none exists; True if this call wrote it."""
        data = self._document(record)
        if self.path is not None:
            target = self.path / _KEY
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        from zarr.core.buffer import default_buffer_prototype

        buf = default_buffer_prototype().buffer.from_bytes(data)
        self._sync(self.store.set_if_not_exists(_KEY, buf))
        return (self.read() or {}).get("token") == record["token"]

    def write(self, record: dict) -> None:
        data = self._document(record)
        if self.path is not None:
            (self.path / _KEY).write_bytes(data)
            return
        from zarr.core.buffer import default_buffer_prototype

        self._sync(self.store.set(_KEY, default_buffer_prototype().buffer.from_bytes(data)))

    def delete(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path / LEASE_GROUP, ignore_errors=True)
            return
        self._sync(self.store.delete(_KEY))


def lease_status(record: dict) -> tuple[bool, str]:
    """Whether a lease record is live, and why.

    Parameters
    ----------
    record : dict
        As stored in an output's ``_lease`` group.

    Returns
    -------
    (bool, str)
        True while the owner may still be writing; a phrase describing the owner.
    """
    if record.get("unreadable"):
        return True, "an unreadable lease record (being written?)"
    host, pid = record.get("host"), int(record.get("pid", -1))
    beat = float(record.get("heartbeat", 0))
    owner = (
        f"host {host}, pid {pid}, started {_iso(float(record.get('started', 0)))}, "
        f"last heartbeat {max(0.0, _now() - beat):.0f} s ago"
    )
    if record.get("command"):
        owner += f", command: {record['command']}"
    if host == socket.gethostname():
        if pid == os.getpid():
            with _ACTIVE_LOCK:
                return record.get("token") in _ACTIVE, owner
        started = _process_start(pid)
        alive = started is not None and abs(started - float(record.get("pid_start", 0))) < 1.0
        return alive, owner
    return _now() - beat < STALE_AFTER_S, owner


class Lease:
    """A lease this process holds on one output (see the module docstring)."""

    def __init__(
        self, slot: _Slot, record: dict, created: Path | None, took_over: bool = False
    ) -> None:
        self.slot, self.record, self.created = slot, record, created
        #: Whether an expired lease (a crashed run) was taken over.
        self.took_over = took_over
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"chunkreg-lease-{record['token'][:8]}", daemon=True
        )
        with _ACTIVE_LOCK:
            _ACTIVE[record["token"]] = self
        self._thread.start()

    @property
    def location(self) -> Location:
        """The output this lease is on."""
        return self.slot.where

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.record["heartbeat"] = _now()
            try:
                current = self.slot.read()
                if current is None or current.get("token") != self.record["token"]:
                    return  # taken over or removed: no longer ours to refresh
                self.slot.write(self.record)
            except OSError:  # a transient store error; the next beat tries again
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the lease (if it is still ours)."""
        self._stop.set()
        self._thread.join()
        with _ACTIVE_LOCK:
            _ACTIVE.pop(self.record["token"], None)
        try:
            current = self.slot.read()
            if current is not None and current.get("token") == self.record["token"]:
                self.slot.delete()
        except OSError:
            pass

    def remove_created(self) -> None:
        """Delete the output (and folders) this run created, after a bad-input error."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)


def read_lease(output: Any) -> dict | None:
    """Return the lease record of ``output``, or None when no run holds one.

    Parameters
    ----------
    output : str, os.PathLike or zarr store
        An output location.

    Returns
    -------
    dict or None
        ``host``, ``pid``, ``pid_start``, ``started``, ``heartbeat`` (Unix seconds),
        ``command`` and ``token``.
    """
    where = locate(output)
    return None if where is None else _Slot(output, where).read()


def _first_missing(path: Path) -> Path | None:
    if path.exists():
        return None
    missing = path
    while not missing.parent.exists():
        missing = missing.parent
    return missing


def refuse_if_leased(output: Any) -> None:
    """Raise :class:`OutputInUseError` if another live run holds ``output``'s lease.

    Parameters
    ----------
    output : str, os.PathLike or zarr store
    """
    where = locate(output)
    if where is None:
        return
    scope = _SCOPE.get()
    if scope is not None and any(held.location == where for held in scope):
        return
    existing = _Slot(output, where).read()
    if existing is not None:
        live, owner = lease_status(existing)
        if live:
            raise OutputInUseError(
                f"output {str(where)!r} is being written by another chunkreg run ({owner}); "
                "nothing was touched. Wait for that run to finish or stop it, or choose another "
                "output path. A lease expires when its process ends (same host) or after "
                f"{STALE_AFTER_S:.0f} s without a heartbeat (another host)."
            )


def acquire_lease(output: Any) -> Lease | None:
    """Take the lease on ``output`` for the current :func:`output_scope`.

    Outside a scope nothing is acquired, but a live lease of another run is still refused.

    Parameters
    ----------
    output : str, os.PathLike or zarr store
        The output about to be written.

    Returns
    -------
    Lease or None
        None outside a scope.

    Raises
    ------
    OutputInUseError
        Another live run holds the lease; nothing was written.
    InputError
        The output's location cannot be written (e.g. a read-only folder).
    """
    where = locate(output)
    if where is None:
        return None
    scope = _SCOPE.get()
    if scope is not None:
        for held in scope:
            if held.location == where:
                return held
    refuse_if_leased(output)
    slot = _Slot(output, where)
    existing = slot.read()
    if scope is None:
        return None
    now = _now()
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()) or now,
        "started": now,
        "heartbeat": now,
        "command": " ".join(sys.argv)[:500],
        "token": uuid.uuid4().hex,
    }
    created = _first_missing(where.local_path) if where.local_path is not None else None
    try:
        if existing is not None:  # expired: take it over
            slot.delete()
        won = slot.create(record)
    except PermissionError as exc:
        raise InputError(
            f"cannot write the output {str(where)!r}: {exc.strerror} ({exc.filename}); choose an "
            "output location you can write to. Nothing was written."
        ) from exc
    except OSError as exc:
        raise InputError(
            f"cannot create the output {str(where)!r}: {exc.strerror or exc}; choose an output "
            "location you can write to. Nothing was written."
        ) from exc
    if not won:
        other = slot.read() or {}
        raise OutputInUseError(
            f"output {str(where)!r} was claimed by another chunkreg run at the same moment "
            f"({lease_status(other)[1]}); nothing was touched. Wait for it to finish."
        )
    lease = Lease(slot, record, created, took_over=existing is not None)
    scope.append(lease)
    return lease


class output_scope(contextlib.ContextDecorator):
    """Release the leases taken inside it when the block (or decorated call) ends.

    Use ``with output_scope():`` around the part of a workflow that opens and writes its
    output (a context manager adds no stack frame, so warnings' ``stacklevel`` is unchanged),
    or ``@output_scope()`` on a function. A bad-input error (any
    :class:`~chunkreg.errors.ChunkregError` but :class:`~chunkreg.errors.TaskFailedError`) also
    removes outputs created inside it, so "nothing was written" holds.
    """

    def __init__(self) -> None:
        self.leases: list[Lease] = []
        self._token: contextvars.Token | None = None

    def _recreate_cm(self) -> output_scope:
        return output_scope()  # each decorated call gets its own scope

    def __enter__(self) -> output_scope:
        self._token = _SCOPE.set(self.leases)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if isinstance(exc, ChunkregError) and not isinstance(exc, TaskFailedError):
                for lease in self.leases:
                    lease.remove_created()
        finally:
            _SCOPE.reset(self._token)
            for lease in reversed(self.leases):
                lease.release()
