"""Reservations of a cache key, so that concurrent runs do the work of one key once.

On a miss, a runner *reserves* the key (pipeline and fingerprint) before it runs the task; another
runner that misses on the same key meanwhile waits for the holder, then takes the holder's result
from the cache. A reservation is a ``mlmd_cache.Reservation`` context named after the key and a
*generation* (1, 2, ...). MLMD keeps context names unique, so the reservation is taken by the one
``put_execution`` that writes the holder's RUNNING execution together with the new context: on
every backend, and over ``serve``, that write either wins or fails with AlreadyExists as a whole
(nothing of the loser is written). No lock service is involved, so it holds across processes
and hosts.

A reservation is a lease of ``lease_seconds`` (at least :data:`MIN_LEASE_SECONDS`): its
``lease_expires_at`` custom property (seconds since the epoch, the holder's clock; a double, as
MLMD's MySQL schema holds 32-bit ints) is moved on by the holder's heartbeat (:class:`Heartbeats`)
:data:`BEATS_PER_LEASE` times a lease, from a connection of its own. Its holder is the one
execution associated with it. What a waiter reads (:func:`status`):

* the holder is COMPLETE (or CACHED): **done**: the cache now has the key's source;
* released (a holder that failed sets the lease to 0), or the holder's runner is known to have
  ended (same host, boot and PID namespace, and its process is gone: :func:`~.recovery.runner_status`,
  so that a ``kill -9`` is taken over at once): **free**;
* expired: this waiter has seen the same ``lease_expires_at`` for a whole lease by its own
  monotonic clock (a holder's heartbeat stopped: ``kill -9`` where its PID cannot be checked, a
  stopped or lost machine): **free**. Expiry is measured from when the holder's last beat became
  visible, never by comparing the holder's clock with the waiter's, so that skewed clocks, a beat
  whose write was slow and a waiter that arrives late take no live holder's key; a holder keeps
  it as long as it writes a beat within every lease (its beats are a fifth of a lease apart, so it
  may be late by four fifths of one);
* otherwise: **held**: wait (a holder between two attempts of ``set_retry`` is FAILED yet still
  holds it).

The waiter that takes a free key marks a holder still RUNNING FAILED with the reason (as
``mlmd-cache recover`` does) and reserves the next generation. ``recover``, a single look, closes
a RUNNING holder whose runner it cannot check only when its lease ran out a whole lease ago by
the clock (:func:`lapsed`): clocks that differ by less than a lease take nothing live.

Generations are contiguous, so the newest is found by galloping from a known one (:func:`newest`),
a few indexed reads by name however many there were.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .._backoff import Backoff
from ..store import records
from .._messages import mlmd_stderr_captured
from ..errors import InvalidArgumentError
from ..store.lease_records import (DEFAULT_LEASE_SECONDS, GENERATION, LEASE_EXPIRES_AT, LEASE_SECONDS,
                                   RESERVATION_CONTEXT_TYPE, lapsed, lease_of, expires_at as _expires_at, newest,
                                   read_newest, reservation_name)
from .recovery import Interrupted, RUNNER, describe_runner as _who, mark_failed, runner_gone

__all__ = ["check_lease", "RESERVATION_CONTEXT_TYPE", "LEASE_EXPIRES_AT", "DEFAULT_LEASE_SECONDS", "MIN_LEASE_SECONDS",
           "BEATS_PER_LEASE", "HELD", "DONE", "FREE", "Reservation", "reservation_name", "newest", "read_newest", "status",
           "lapsed", "new_reservation", "take_over", "Heartbeats", "wait_delays"]

BEATS_PER_LEASE = 5
"""Heartbeats per lease: a holder keeps its key however late its beats are, up to four of them."""
MIN_LEASE_SECONDS = 2.0
"""The shortest lease: five beats of 0.4 s. Shorter ones are refused: a loaded machine delays a
beat by up to a second (``scripts/bench_dedup.py`` measures the shortest lease at which racing runs
beside a CPU hog all succeed: 1 s for 8 runs, 2 s for 16 on a 2-core machine;
:data:`DEFAULT_LEASE_SECONDS` is 15 times that)."""

HELD, DONE, FREE = "held", "done", "free"


def check_lease(lease_seconds: float, max_wait_seconds: Optional[float] = None) -> None:
    """A lease must be at least :data:`MIN_LEASE_SECONDS` (and finite) and a wait limit not negative:
    else an :class:`InvalidArgumentError`."""
    if not MIN_LEASE_SECONDS <= lease_seconds < float("inf"):
        raise InvalidArgumentError(f"a lease must be at least {MIN_LEASE_SECONDS:g} s ({BEATS_PER_LEASE} heartbeats of "
                                   f"{MIN_LEASE_SECONDS / BEATS_PER_LEASE:g} s), not {lease_seconds:g} s")
    if max_wait_seconds is not None and not max_wait_seconds >= 0:
        raise InvalidArgumentError(f"a wait limit must not be negative, not {max_wait_seconds:g} s")


@dataclass(frozen=True)
class Reservation:
    """A generation of a key's reservation as last read: its context, its holder execution (None
    while the holder's write is not visible), and what that means for a waiter (:data:`HELD`,
    :data:`DONE` or :data:`FREE`, with why it is free)."""

    context: mlmd.Context
    generation: int
    holder: Optional[mlmd.Execution]
    state: str
    reason: str = ""

    @property
    def holder_id(self) -> Optional[int]:
        return self.holder.id if self.holder is not None else None


def _now(now: Optional[float] = None) -> float:
    return time.time() if now is None else now


# context ID -> (the lease_expires_at last seen, when this process first saw it, on its monotonic clock)
_seen: dict[int, tuple[float, float]] = {}
_seen_lock = threading.Lock()
_SEEN_MAX = 4096


def _unchanged_for(context: mlmd.Context) -> float:
    """For how long (seconds, this process's monotonic clock) this process has seen the reservation's
    current beat: 0 at the first look, and whenever the holder wrote a new one."""
    beat, now = _expires_at(context), time.monotonic()
    with _seen_lock:
        seen = _seen.get(context.id)
        if seen is None or seen[0] != beat:
            if seen is None and len(_seen) >= _SEEN_MAX:  # a long-lived process: forget the oldest looks
                for old in list(_seen)[:_SEEN_MAX // 2]:
                    del _seen[old]
            _seen[context.id] = seen = (beat, now)
        return now - seen[1]


def status(store: metadata_store.MetadataStore, context: mlmd.Context, generation: int,
           now: Optional[float] = None, holders: Optional[Sequence[mlmd.Execution]] = None) -> Reservation:
    """What reservation ``context`` means now for a runner that wants its key (see the module
    docstring); ``holders``: its executions, when already read (:func:`read_newest`). ``now`` is
    no longer used (kept for callers): expiry is measured on this process's monotonic clock, from
    its own looks at the holder's beats."""
    if holders is None:
        holders = store.get_executions_by_context(context.id)
    holder = holders[0] if holders else None
    if holder is not None and holder.last_known_state in (mlmd.Execution.COMPLETE, mlmd.Execution.CACHED):
        return Reservation(context, generation, holder, DONE)
    runner = str(records.read_property(holder, RUNNER) or "") if holder is not None else ""
    if _expires_at(context) == 0:
        return Reservation(context, generation, holder, FREE, "released by its holder")
    if runner and runner_gone(runner):
        return Reservation(context, generation, holder, FREE, f"{_who(runner)} has ended")
    silent, lease = _unchanged_for(context), lease_of(context)
    if silent >= lease:
        return Reservation(context, generation, holder, FREE,
                           f"its lease expired: no heartbeat from {_who(runner)} for {silent:.1f} s "
                           f"(its lease is {lease:g} s)")
    return Reservation(context, generation, holder, HELD)


def new_reservation(type_id: int, pipeline: str, fingerprint: str, generation: int, lease_seconds: float,
                    now: Optional[float] = None) -> mlmd.Context:
    """The context that reserves the key's ``generation``, to be written with the holder's execution."""
    context = mlmd.Context(type_id=type_id, name=reservation_name(pipeline, fingerprint, generation))
    context.custom_properties[LEASE_EXPIRES_AT].double_value = _now(now) + lease_seconds
    context.custom_properties[LEASE_SECONDS].double_value = lease_seconds
    context.custom_properties[GENERATION].int_value = generation
    context.custom_properties[records.SOURCE_PIPELINE].string_value = pipeline
    context.custom_properties[records.CACHE_FINGERPRINT].string_value = fingerprint
    return context


def take_over(store: metadata_store.MetadataStore, reservation: Reservation) -> Optional[int]:
    """Mark a free reservation's holder FAILED when it is still RUNNING (its runner was killed, or
    stopped heartbeating), with the reason in ``interrupted_reason`` as ``mlmd-cache recover``
    writes it; returns its ID if it was marked."""
    holder = reservation.holder
    if holder is None or holder.last_known_state != mlmd.Execution.RUNNING:
        return None
    runner = str(records.read_property(holder, RUNNER) or "")
    reason = f"its reservation of the cache key was taken over: {reservation.reason}"
    marked = mark_failed(store, [Interrupted(holder.id, "", str(records.read_property(holder, records.TASK_NAME)
                                                                   or ""), None, runner, reason)])
    return marked[0].execution_id if marked else None


def wait_delays(lease_seconds: float) -> Callable[[], float]:
    """Seconds to sleep before each new look at a held reservation: from 50 ms, doubling, at most a
    third of the lease (and 2 s), so that a waiter sees the holder's end soon without polling hard."""
    # Not jittered: the scheduler's timers of one runner's waiting tasks need no spreading, and a
    # waiter's deadline is its own (--max-wait, in dedup), so this backoff has none.
    return Backoff(None, first=0.05, ceiling=max(0.05, min(2.0, lease_seconds / 3)), jitter=False).next_pause


class Heartbeats:
    """Moves on the leases this process holds, from one daemon thread: :data:`BEATS_PER_LEASE` times
    a lease, ``lease_expires_at`` becomes now + lease. :meth:`release` ends a lease at once (a holder
    that failed: waiters take over without waiting for it to expire); :meth:`stop` just stops beating
    (a holder that completed: its execution says it is done).

    The beats go through a connection of their own, opened like the runner's (same config, and for
    a :class:`~mlmd_cache.store.client.Store` the same retries and reconnects), never the runner's: MLMD's
    handles are not for two threads, and a MySQL handle used after the server went away crashes the
    process. When that connection cannot write (the store is gone for longer than its retries), the
    heartbeat stops for good, drops its leases (they expire) and never calls it again: the runner's
    own calls meet the same fault and end the run in one line."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self._store = store
        self._connection: Optional[metadata_store.MetadataStore] = None
        self._broken = False  # the store failed the heartbeat's connection: no more writes
        self._held: dict[int, tuple[mlmd.Context, float, float]] = {}  # id -> (context, lease, next beat)
        self._lock = threading.Lock()  # _held and the thread; never held during a write
        self._writing = threading.Lock()  # one write at a time on the heartbeat's connection
        self._wake = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None

    def hold(self, context: mlmd.Context, lease_seconds: float) -> None:
        with self._lock:
            if self._broken:  # the store is gone: the runner's next call says so
                return
            self._held[context.id] = (context, lease_seconds, time.monotonic() + lease_seconds / BEATS_PER_LEASE)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat, name="mlmd-cache-heartbeat", daemon=True)
                self._thread.start()
            self._wake.notify()

    def holds(self, context_id: int) -> bool:
        with self._lock:
            return context_id in self._held

    def stop(self, context_id: int) -> None:
        with self._lock:
            self._held.pop(context_id, None)

    def release(self, context_id: int) -> None:
        """Stop beating and set the lease to 0, which frees the key now. A store fault is left to
        the lease's expiry."""
        with self._lock:
            held = self._held.pop(context_id, None)
        if held is not None:
            self._write(held[0], 0.0)

    def close(self) -> None:
        """Release every lease still held (a runner that stops)."""
        with self._lock:
            held = list(self._held)
        for context_id in held:
            self.release(context_id)

    def _open(self) -> metadata_store.MetadataStore:
        from ..store.client import Store  # store imports grpc: not before a lease is held

        store = self._store
        config = store._config
        if isinstance(config, mlmd.ConnectionConfig) and config.WhichOneof("config") == "sqlite" \
                and config.sqlite.filename_uri == ":memory:":
            return store  # a second connection would be another, empty database; no server to go away
        with mlmd_stderr_captured() as stderr:  # MLMD's C++ log of a server that is not there is no news
            try:
                if isinstance(store, Store):
                    return Store(store._config, shown=store.shown, retry_seconds=store.retry_seconds)
                return metadata_store.MetadataStore(store._config)
            except Exception as error:
                stderr.failure = error
                raise

    def _write(self, context: mlmd.Context, expires_at: float) -> bool:
        """Write one beat (or a release); False, for good, once the heartbeat's connection failed."""
        with self._writing:
            if self._broken:
                return False
            if expires_at:
                with self._lock:
                    if context.id not in self._held:  # stopped or released meanwhile: a beat would revive it
                        return False
            beat = mlmd.Context()
            beat.CopyFrom(context)
            beat.custom_properties[LEASE_EXPIRES_AT].double_value = expires_at
            try:
                if self._connection is None:
                    self._connection = self._open()
                self._connection.put_contexts([beat])
                return True
            except Exception:  # what it was matters not here: the lease decides, the runner's calls report
                if self._connection is None:  # could not open it (the server is away): next beat
                    return False
                if not hasattr(self._connection, "retrying"):
                    # MLMD's own client: a handle that failed is never called again (its MySQL
                    # handle may be null); the next beat opens a new one
                    self._connection = None
                    return False
                # a Store retried and reconnected for as long as a runner's call does: the store is gone
                self._broken, self._connection = True, None
                with self._lock:
                    self._held.clear()
                    self._wake.notify()
                return False

    def _connect(self) -> None:
        """Open the heartbeat's connection now, before the first beat is due: opening one under
        contention (a busy SQLite file, many runners starting at once) takes a while, and a beat
        must not wait for it. Tried again every 50 ms while a lease is held; never raises."""
        while self._connection is None and not self._broken:
            with self._writing:
                try:
                    self._connection = self._open()
                    return
                except Exception:  # the server is away, the file busy: the beats try again too
                    pass
            with self._lock:
                if not self._held:
                    return
            time.sleep(0.05)

    def _beat(self) -> None:
        self._connect()
        with self._lock:
            while self._held and not self._broken:
                now = time.monotonic()
                due = [(cid, held) for cid, held in self._held.items() if held[2] <= now]
                for context_id, (context, lease, _) in due:
                    self._held[context_id] = (context, lease, time.monotonic() + lease / BEATS_PER_LEASE)
                    self._lock.release()  # a write may take a while (a busy or restarting database)
                    try:
                        self._write(context, _now() + lease)
                    finally:
                        self._lock.acquire()
                if self._held:
                    next_beat = min(held[2] for held in self._held.values())
                    self._wake.wait(timeout=max(0.01, next_beat - time.monotonic()))
            self._thread = None
