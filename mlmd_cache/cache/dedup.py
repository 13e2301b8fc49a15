"""No duplicate work under concurrency: a miss reserves its key before it runs (see :mod:`.leases`).

:func:`claim` is one try, for a runner that decides on its own when to look again (the run-pipeline
scheduler); :func:`claim_or_wait` waits, with backoff, for as long as it is allowed
(:meth:`mlmd_cache.ExecutionCache.execute`). Either ends in a :class:`Claim`: this runner holds
the key and has started its execution, or another runner did the work meanwhile and it is a hit,
or (``claim`` only) another runner holds the key now.

>>> import tempfile, os
>>> from mlmd_cache import connect, CacheKey, ExecutionCache, Task
>>> cache = ExecutionCache(connect("sqlite:///" + os.path.join(tempfile.mkdtemp(), "dedup.sqlite")))
>>> task = Task("train", CacheKey.build(image="python:3.11", command=["train"]))
>>> first = claim(cache, cache.pipeline_run("demo", "run-1"), task)
>>> first.started.state, first.generation
('RUNNING', 1)
>>> second = claim(cache, cache.pipeline_run("demo", "run-2"), task)
>>> second.held.holder_id == first.started.id
True
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store

from ..errors import ExecutionStateError
from ..store import records
from . import leases, lookup, writes
from .leases import DEFAULT_LEASE_SECONDS, Reservation
from .model import CacheHit, PipelineRun, Task, TaskExecution

__all__ = ["CacheRecords", "Claim", "Waiting", "claim", "claim_or_wait"]


class CacheRecords(Protocol):
    """What dedup needs of a cache (an :class:`~.execution_cache.ExecutionCache` is one): the store,
    its type registry and the heartbeat of the reservations held. Dedup looks up, starts and
    reserves through :mod:`.lookup`, :mod:`.writes` and :mod:`.leases` itself: it never calls the
    cache back."""

    @property
    def store(self) -> metadata_store.MetadataStore: ...

    @property
    def types(self) -> records.TypeRegistry: ...

    @property
    def heartbeats(self) -> leases.Heartbeats: ...

_CLAIM_TRIES = 20  # each lost race means another runner won the generation: someone is making progress


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` found: exactly one of ``started`` (this runner holds the key: run the
    work, then publish or fail it), ``hit`` (reuse it) and ``held`` (wait for its holder).
    ``taken_over`` is the ID of the RUNNING execution of a holder that was marked FAILED."""

    started: Optional[TaskExecution] = None
    hit: Optional[CacheHit] = None
    held: Optional[Reservation] = None
    generation: int = 0
    taken_over: Optional[int] = None
    miss_reason: Optional[str] = None


def claim(cache: CacheRecords, run: PipelineRun, task: Task, miss_reason: Optional[str] = None,
          lease_seconds: float = DEFAULT_LEASE_SECONDS, known: int = 0) -> Claim:
    """Reserve ``task``'s key in ``run`` and start its execution, unless a holder has it or is done.

    ``known`` is a generation of the key's reservation seen before (a waiter's last look), from
    which the newest is found. A free reservation (released, expired, its runner ended) is taken
    over: a holder still RUNNING is marked FAILED with the reason, and the next generation is
    reserved. Of several runners that try the same generation, MLMD lets one write it."""
    leases.check_lease(lease_seconds)
    task = lookup.keyed(cache.store, run, task)
    store, fingerprint = cache.store, task.fingerprint
    type_id = cache.types.context_type(leases.RESERVATION_CONTEXT_TYPE)
    taken_over = None
    for _ in range(_CLAIM_TRIES):
        generation, context, holders = leases.read_newest(store, run.pipeline, fingerprint, known)
        if context is None or not holders:
            # never reserved, or ``mlmd-cache leases --prune`` removed the key's records, which it does
            # only once their holder finished: its result may be a source now, as a done reservation
            # would have said (one more read on a key's first miss, before its work). No holder for a
            # context just read: pruned between the two reads, its stale copy saying "released".
            found = lookup.look_up(store, run, task)
            if found.hit is not None:
                return Claim(hit=found.hit, generation=0)
            miss_reason, known = found.miss_reason or miss_reason, 0
        if context is not None:
            reservation = leases.status(store, context, generation, holders=holders)
            if reservation.state == leases.HELD:
                return Claim(held=reservation, generation=generation, miss_reason=miss_reason)
            if reservation.state == leases.DONE:
                found = lookup.look_up(store, run, task)
                if found.hit is not None:
                    return Claim(hit=found.hit, generation=generation)
                miss_reason = found.miss_reason  # done, yet not a source this run may reuse
            else:
                taken_over = leases.take_over(store, reservation) or taken_over
        wanted = leases.new_reservation(type_id, run.pipeline, fingerprint, generation + 1, lease_seconds)
        try:
            started = writes.start(store, cache.types, run, task, miss_reason, reservation=wanted)
        except mlmd_errors.AlreadyExistsError:  # another runner wrote this generation first
            known = generation + 1
            continue
        cache.heartbeats.hold(started.reservation, lease_seconds)
        return Claim(started=started, generation=generation + 1, taken_over=taken_over, miss_reason=miss_reason)
    raise ExecutionStateError(f"the cache key of task {task.name!r} changed hands {_CLAIM_TRIES} times "
                              "while this runner tried to reserve it")


class Waiting:
    """One task's wait for a key another runner holds: its backoff (:func:`~.leases.wait_delays`),
    its limit, and the holder and generation it last saw. :func:`claim_or_wait` and the run-pipeline
    scheduler (which waits on timers instead of sleeping) share it."""

    def __init__(self, lease_seconds: float, max_wait_seconds: Optional[float] = None) -> None:
        self.max_wait_seconds = max_wait_seconds
        self.began = time.monotonic()
        self.deadline = None if max_wait_seconds is None else self.began + max_wait_seconds
        self.next_delay = leases.wait_delays(lease_seconds)
        self.generation = 0
        self.holder: Optional[int] = None

    def saw(self, found: Claim) -> bool:
        """Note a claim that found the key held; whether its holder is one not seen before (to tell)."""
        holder = found.held.holder_id if found.held is not None else None
        new = holder is not None and holder != self.holder
        self.generation, self.holder = found.generation, holder
        return new

    def over(self, after: float = 0.0) -> bool:
        """Whether the limit is reached ``after`` seconds from now."""
        return self.deadline is not None and time.monotonic() + after >= self.deadline

    def start_anyway(self, cache: CacheRecords, run: PipelineRun, task: Task) -> TaskExecution:
        """Start the task without a reservation, its miss reason saying how long it waited for whom."""
        reason = f"waited {self.max_wait_seconds:g} s for execution {self.holder}, which still held the cache key"
        return writes.start(cache.store, cache.types, run, lookup.keyed(cache.store, run, task), reason)


def claim_or_wait(cache: CacheRecords, run: PipelineRun, task: Task, miss_reason: Optional[str] = None,
                  lease_seconds: float = DEFAULT_LEASE_SECONDS, max_wait_seconds: Optional[float] = None,
                  on_wait: Optional[Callable[[int], None]] = None) -> Claim:
    """:func:`claim`, waiting while another runner holds the key (polling with
    :func:`~.leases.wait_delays` backoff; ``on_wait`` is called with each new holder's execution ID).
    After ``max_wait_seconds`` (None: as long as the holder keeps its lease) the task is started
    without a reservation: the work is done twice rather than not at all."""
    leases.check_lease(lease_seconds, max_wait_seconds)
    waiting = Waiting(lease_seconds, max_wait_seconds)
    while True:
        found = claim(cache, run, task, miss_reason, lease_seconds, waiting.generation)
        if found.held is None:
            return found
        if waiting.saw(found) and on_wait is not None:
            on_wait(waiting.holder)
        delay = waiting.next_delay()
        if waiting.over(after=delay):
            started = waiting.start_anyway(cache, run, task)
            return Claim(started=started, generation=waiting.generation,
                         miss_reason=started.miss_reason)
        time.sleep(delay)
