"""Reservations of a cache key, so that concurrent runs do the work of one key once.

On a miss, a runner *reserves* the key (pipeline and fingerprint) before it runs the task; another
runner that misses on the same key meanwhile waits for the holder, then takes the holder's result
from the cache. A reservation is a ``mlmd_cache.Reservation`` context named after the key and a
*generation* (1, 2, ...). MLMD keeps context names unique, so the reservation is taken by the one
``put_execution`` that writes the holder's RUNNING execution together with the new context: on
every backend, and over ``serve``, that write either wins or fails with AlreadyExists as a whole
(nothing of the loser is written). No lock service is involved, so it holds across processes
and hosts.

A reservation is a lease: its ``lease_expires_at`` custom property (seconds since the epoch, the
holder's clock; a double, as MLMD's MySQL schema holds 32-bit ints) is moved on by the holder's
heartbeat (:class:`Heartbeats`) every third of the lease. Its holder is the one execution associated with it. What a waiter reads (:func:`status`):

* the holder is COMPLETE (or CACHED): **done**: the cache now has the key's source;
* the lease is current and the holder's runner is not known to have ended: **held**: wait (a
  holder between two attempts of ``set_retry`` is FAILED yet still holds it);
* otherwise (released: a holder that failed sets the lease to 0; expired: a holder killed
  with ``kill -9`` stops its heartbeat; or its runner has ended): **free**. The waiter that takes
  a free key marks a holder still RUNNING FAILED with the reason (as ``mlmd-cache recover`` does)
  and reserves the next generation.

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

from . import records
from .errors import InvalidArgumentError
from .recovery import Interrupted, RUNNER, mark_failed, runner_gone

__all__ = ["check_lease", "RESERVATION_CONTEXT_TYPE", "LEASE_EXPIRES_AT", "DEFAULT_LEASE_SECONDS", "HELD", "DONE", "FREE",
           "Reservation", "reservation_name", "newest", "read_newest", "status", "new_reservation", "take_over", "Heartbeats",
           "wait_delays"]

RESERVATION_CONTEXT_TYPE = "mlmd_cache.Reservation"
LEASE_EXPIRES_AT = "lease_expires_at"
LEASE_SECONDS = "lease_seconds"
GENERATION = "generation"
DEFAULT_LEASE_SECONDS = 30.0

HELD, DONE, FREE = "held", "done", "free"


def check_lease(lease_seconds: float, max_wait_seconds: Optional[float] = None) -> None:
    """A lease must be longer than 0 s and a wait limit not negative: else an :class:`InvalidArgumentError`."""
    if not lease_seconds > 0:
        raise InvalidArgumentError(f"a lease must be longer than 0 s, not {lease_seconds:g} s")
    if max_wait_seconds is not None and not max_wait_seconds >= 0:
        raise InvalidArgumentError(f"a wait limit must not be negative, not {max_wait_seconds:g} s")


def reservation_name(pipeline: str, fingerprint: str, generation: int) -> str:
    """The context name of a key's reservation ``generation`` (fixed length, as the cache-source one)."""
    return f"{records.cache_source_context_name(pipeline, fingerprint)}.{generation}"


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


def _read(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, generation: int
          ) -> Optional[mlmd.Context]:
    return store.get_context_by_type_and_name(RESERVATION_CONTEXT_TYPE, reservation_name(pipeline, fingerprint,
                                                                                          generation))


def newest(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, known: int = 0
           ) -> tuple[int, Optional[mlmd.Context]]:
    """The newest generation of the key's reservation and its context ((0, None) when it was never
    reserved), galloping up from ``known`` (a generation that exists) and bisecting back."""
    low = max(known, 0)
    low_context = _read(store, pipeline, fingerprint, low) if low else None
    if low and low_context is None:  # not there after all: look from the start
        low = 0
    step = 1
    high = low + step
    high_context = _read(store, pipeline, fingerprint, high)
    while high_context is not None:
        low, low_context = high, high_context
        step *= 2
        high = low + step
        high_context = _read(store, pipeline, fingerprint, high)
    while high - low > 1:  # low exists (or is 0), high does not
        middle = (low + high) // 2
        middle_context = _read(store, pipeline, fingerprint, middle)
        if middle_context is None:
            high = middle
        else:
            low, low_context = middle, middle_context
    return low, low_context


def read_newest(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, known: int = 0, *,
                via_service: bool = True) -> tuple[int, Optional[mlmd.Context], list[mlmd.Execution]]:
    """:func:`newest` and the executions associated with it (its holder): over ``serve``, one
    ``Reservation`` call of its cache service (:mod:`mlmd_cache.cache_service`), unless
    ``via_service`` is false or the server has none."""
    service = getattr(store, "cache_service", None) if via_service else None
    if service is not None:
        return service.reservation(pipeline, fingerprint, known)
    generation, context = newest(store, pipeline, fingerprint, known)
    holders = store.get_executions_by_context(context.id) if context is not None else []
    return generation, context, holders


def _expires_at(context: mlmd.Context) -> float:
    value = context.custom_properties.get(LEASE_EXPIRES_AT)
    return value.double_value if value is not None else 0.0


def status(store: metadata_store.MetadataStore, context: mlmd.Context, generation: int,
           now: Optional[float] = None, holders: Optional[Sequence[mlmd.Execution]] = None) -> Reservation:
    """What reservation ``context`` means now for a runner that wants its key (see the module
    docstring); ``holders``: its executions, when already read (:func:`read_newest`)."""
    if holders is None:
        holders = store.get_executions_by_context(context.id)
    holder = holders[0] if holders else None
    if holder is not None and holder.last_known_state in (mlmd.Execution.COMPLETE, mlmd.Execution.CACHED):
        return Reservation(context, generation, holder, DONE)
    expires_at = _expires_at(context)
    now = _now(now)
    runner = str(records.read_property(holder, RUNNER) or "") if holder is not None else ""
    if expires_at == 0:
        return Reservation(context, generation, holder, FREE, "released by its holder")
    if now >= expires_at:
        late = now - expires_at
        return Reservation(context, generation, holder, FREE,
                           f"its lease expired {late:.1f} s ago (no heartbeat from {_who(runner)})")
    if runner and runner_gone(runner):
        return Reservation(context, generation, holder, FREE, f"{_who(runner)} has ended")
    return Reservation(context, generation, holder, HELD)


def _who(runner: str) -> str:
    parts = dict(part.partition(":")[::2] for part in runner.split())
    if "pid" in parts and "host" in parts:
        return f"its runner (pid {parts['pid']} on {parts['host']})"
    return "its runner"


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
    ceiling = max(0.05, min(2.0, lease_seconds / 3))
    delay = [0.025]

    def next_delay() -> float:
        delay[0] = min(ceiling, delay[0] * 2)
        return delay[0]

    return next_delay


class Heartbeats:
    """Moves on the leases this process holds, from one daemon thread: every third of each lease,
    ``lease_expires_at`` becomes now + lease. :meth:`release` ends a lease at once (a holder that
    failed: waiters take over without waiting for it to expire); :meth:`stop` just stops beating
    (a holder that completed: its execution says it is done)."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self._store = store
        self._held: dict[int, tuple[mlmd.Context, float, float]] = {}  # id -> (context, lease, next beat)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None

    def hold(self, context: mlmd.Context, lease_seconds: float) -> None:
        with self._lock:
            self._held[context.id] = (context, lease_seconds, time.monotonic() + lease_seconds / 3)
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
            if held is None:
                return
            context = held[0]
            context.custom_properties[LEASE_EXPIRES_AT].double_value = 0.0
            try:
                self._store.put_contexts([context])
            except Exception:
                pass

    def close(self) -> None:
        """Release every lease still held (a runner that stops)."""
        for context_id in list(self._held):
            self.release(context_id)

    def _beat(self) -> None:
        with self._lock:
            while self._held:
                now = time.monotonic()
                due = [(cid, held) for cid, held in self._held.items() if held[2] <= now]
                for context_id, (context, lease, _) in due:
                    context.custom_properties[LEASE_EXPIRES_AT].double_value = _now() + lease
                    try:
                        self._store.put_contexts([context])
                    except Exception:  # a store fault: the next beat tries again, or the lease expires
                        pass
                    self._held[context_id] = (context, lease, time.monotonic() + lease / 3)
                if self._held:
                    next_beat = min(held[2] for held in self._held.values())
                    self._wake.wait(timeout=max(0.01, next_beat - time.monotonic()))
            self._thread = None

