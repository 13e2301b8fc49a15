"""What operators see of the cache keys' reservations (``mlmd-cache leases``): which key is held by
which task, run and runner, since when and for how long more, which are stale, and the removal of
finished ones' records (``--prune``).

Each key's reservation is one context per generation (:mod:`.leases`), never removed by the runners:
a store that ran for a year holds one per key and generation ever reserved. This module reads them
with plain MLMD reads, one look (as ``recover`` does: it cannot watch heartbeats), and tells each
key's newest generation as

* ``held``: its holder is RUNNING (or FAILED between two attempts of ``set_retry``) and its lease
  is neither released nor lapsed, and its runner is not known to have ended;
* ``stale``: its holder is RUNNING but its runner ended, or its lease ran out a whole lease ago by
  this host's clock (:func:`~mlmd_cache.store.lease_records.lapsed`), or it released its lease and
  never finished: the next runner that wants the key takes it over, ``recover`` marks it FAILED;
* ``done``: its holder is COMPLETE (or CACHED): the key's result is a cache source now;
* ``released``: its holder FAILED (or was cancelled) and gave the key up.

:func:`prune` removes every generation of the keys that are ``done`` or ``released`` and whose
holder was last written longer ago than ``older_than`` (:mod:`mlmd_cache.store.lease_pruning`: one
checked transaction per key, so that a key a runner takes meanwhile is left alone). A held or stale
key is never removed. A runner that wants a removed key finds no reservation and starts at
generation 1, as on a new store; one that had seen an older generation looks the key up again
first (:func:`.dedup.claim`), so that it reuses the result the reservation's holder made.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..store.lease_pruning import ReservationKey, SqlDatabase, delete_reservations
from ..store.lease_records import GENERATION, RESERVATION_CONTEXT_TYPE, expires_at, lapsed, lease_of
from .recovery import GONE, RUNNER, running_executions, runner_status

__all__ = ["HELD", "STALE", "DONE", "RELEASED", "KeyReservation", "Pruning", "list_reservations", "held_counts",
           "prune"]

HELD, STALE, DONE, RELEASED = "held", "stale", "done", "released"
FINISHED = (DONE, RELEASED)
_TERMINAL = (mlmd.Execution.FAILED, mlmd.Execution.CANCELED)


@dataclass(frozen=True)
class KeyReservation:
    """One key's reservation as last read: its newest generation and what it means (module docstring).
    Times are seconds since the epoch; ``lease_left`` is None when the lease is released."""

    pipeline: str
    fingerprint: str
    generation: int
    records: int  # the key's reservation contexts (one per generation still stored)
    state: str
    reason: str
    execution_id: Optional[int]
    task: str
    run: Optional[str]
    runner: str
    since: Optional[float]  # when its holder started
    written: Optional[float]  # when its holder was last written
    lease_seconds: float
    lease_left: Optional[float]
    key: ReservationKey = field(repr=False, compare=False, default=None)  # what a prune checks

    @property
    def host(self) -> Optional[str]:
        return _runner_part(self.runner, "host")

    @property
    def pid(self) -> Optional[int]:
        pid = _runner_part(self.runner, "pid")
        return int(pid) if pid and pid.isdigit() else None

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "fingerprint": self.fingerprint, "generation": self.generation,
                "records": self.records, "state": self.state, "reason": self.reason,
                "execution_id": self.execution_id, "task": self.task, "run": self.run,
                "runner": {"host": self.host, "pid": self.pid, "record": self.runner},
                "since": _utc(self.since), "last_written": _utc(self.written), "lease_seconds": self.lease_seconds,
                "lease_left_seconds": None if self.lease_left is None or self.state in FINISHED
                else round(self.lease_left, 3)}  # a finished key's lease means nothing


@dataclass(frozen=True)
class Pruning:
    """What :func:`prune` removed (or, ``dry_run``, would remove): the keys and their record count;
    ``changed``: keys a runner took or moved on while they were being removed, left alone."""

    removed: list[KeyReservation]
    changed: int = 0
    dry_run: bool = False

    @property
    def records_removed(self) -> int:
        return sum(r.records for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "keys_removed": len(self.removed), "records_removed": self.records_removed,
                "changed_meanwhile": self.changed, "removed": [r.to_dict() for r in self.removed]}


def _runner_part(runner: str, name: str) -> Optional[str]:
    parts = dict(part.partition(":")[::2] for part in runner.split())
    return parts.get(name) or None


def _utc(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _judge(holder: Optional[mlmd.Execution], newest: mlmd.Context, now: float) -> tuple[str, str]:
    if holder is None:  # its context and holder are written in one transaction: not seen yet
        return HELD, "being taken"
    if holder.last_known_state in (mlmd.Execution.COMPLETE, mlmd.Execution.CACHED):
        return DONE, "its holder completed: the key's result is a cache source"
    runner = str(records.read_property(holder, RUNNER) or "")
    terminal = holder.last_known_state in _TERMINAL
    if expires_at(newest) == 0:
        if terminal:
            return RELEASED, "its holder failed and released it"
        return STALE, "released by its holder, which never finished"
    if runner_status(runner) == GONE:
        return (RELEASED if terminal else STALE), "its runner has ended"
    late = lapsed(newest, now)
    if late is not None:
        return (RELEASED if terminal else STALE), f"its lease ran out {late:.0f} s ago (no heartbeat)"
    if terminal:
        return HELD, "its holder failed an attempt and is retrying"
    return HELD, "its holder is running"


def list_reservations(store: metadata_store.MetadataStore, *, pipeline: Optional[str] = None,
                      now: Optional[float] = None) -> list[KeyReservation]:
    """Every key's reservation (of ``pipeline`` only, if given), held ones first, then by key."""
    now = time.time() if now is None else now
    type_id = records.context_type_id(store, RESERVATION_CONTEXT_TYPE)
    if type_id is None:  # nothing was ever reserved
        return []
    keys: dict[str, list[tuple[int, mlmd.Context]]] = {}
    for context in store.get_contexts_by_type(RESERVATION_CONTEXT_TYPE):
        prefix, _, generation = context.name.rpartition(".")
        if not generation.isdigit():
            continue
        if pipeline is not None and records.read_property(context, records.SOURCE_PIPELINE) != pipeline:
            continue
        keys.setdefault(prefix, []).append((int(generation), context))
    run_type = records.context_type_id(store, records.RUN_CONTEXT_TYPE)
    found = []
    for prefix, generations in keys.items():
        generation, newest = max(generations, key=lambda pair: pair[0])
        holders = store.get_executions_by_context(newest.id)
        holder = min(holders, key=lambda e: e.id) if holders else None
        state, reason = _judge(holder, newest, now)
        run = None
        if holder is not None and run_type is not None:
            run = next((c.name for c in store.get_contexts_by_execution(holder.id) if c.type_id == run_type), None)
        expiry = expires_at(newest)
        key = None
        if holder is not None:
            key = ReservationKey(type_id, prefix + ".", tuple(sorted(c.id for _, c in generations)), newest.id,
                                 expiry, holder.id, holder.last_known_state)
        found.append(KeyReservation(
            pipeline=str(records.read_property(newest, records.SOURCE_PIPELINE) or ""),
            fingerprint=str(records.read_property(newest, records.CACHE_FINGERPRINT) or ""),
            generation=int(records.read_property(newest, GENERATION) or generation), records=len(generations),
            state=state, reason=reason, execution_id=holder.id if holder is not None else None,
            task=str(records.read_property(holder, records.TASK_NAME) or "") if holder is not None else "",
            run=run, runner=str(records.read_property(holder, RUNNER) or "") if holder is not None else "",
            since=holder.create_time_since_epoch / 1000 if holder is not None else None,
            written=(holder.last_update_time_since_epoch or holder.create_time_since_epoch) / 1000
            if holder is not None else None,
            lease_seconds=lease_of(newest), lease_left=expiry - now if expiry else None, key=key))
    order = {HELD: 0, STALE: 1, DONE: 2, RELEASED: 2}
    return sorted(found, key=lambda r: (order[r.state], r.pipeline, r.fingerprint))


def held_counts(store: metadata_store.MetadataStore, pipeline: Optional[str] = None,
                now: Optional[float] = None) -> tuple[int, int]:
    """(held, stale) keys whose holder is RUNNING now (of ``pipeline`` only, if given), read from the
    RUNNING executions (an indexed filter), not from every reservation ever made: for ``stats`` on a
    big store. A holder between two attempts of ``set_retry`` (FAILED a moment) is not counted."""
    now = time.time() if now is None else now
    type_id = records.context_type_id(store, RESERVATION_CONTEXT_TYPE)
    if type_id is None:
        return 0, 0
    held = stale = 0
    for execution in running_executions(store):
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id != type_id:
                continue
            if pipeline is not None and records.read_property(context, records.SOURCE_PIPELINE) != pipeline:
                continue
            prefix, _, generation = context.name.rpartition(".")
            if not generation.isdigit() or store.get_context_by_type_and_name(
                    RESERVATION_CONTEXT_TYPE, f"{prefix}.{int(generation) + 1}") is not None:
                continue  # taken over since: not the key's newest generation
            state, _ = _judge(execution, context, now)
            held += state == HELD
            stale += state == STALE
    return held, stale


def prune(store: metadata_store.MetadataStore, database: Optional[SqlDatabase], *,
          older_than: datetime.timedelta = datetime.timedelta(hours=1), pipeline: Optional[str] = None,
          dry_run: bool = False, now: Optional[float] = None) -> Pruning:
    """Remove the records of every key whose reservation is done or released and whose holder was
    last written ``older_than`` ago or more (``database``: the store's database, written with its own
    client; None only with ``dry_run``). Held and stale keys are never removed, nor a key that a
    runner took or moved on since it was read (counted in :attr:`Pruning.changed`)."""
    now = time.time() if now is None else now
    finished = [r for r in list_reservations(store, pipeline=pipeline, now=now)
                if r.state in FINISHED and r.key is not None and r.written is not None
                and now - r.written >= older_than.total_seconds()]
    if dry_run:
        return Pruning(finished, dry_run=True)
    if database is None:
        raise ValueError("prune needs the store's database unless dry_run")
    removed, changed = [], 0
    for reservation in finished:
        if delete_reservations(database, reservation.key):
            removed.append(reservation)
        else:
            changed += 1
    return Pruning(removed, changed)
