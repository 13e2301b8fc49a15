"""How well the cache works in a store (``mlmd-cache stats``): what executed and what was reused, the
hit rate, the compute time the hits saved, the tasks that miss most, invalidated sources, and the
cache keys runners hold now (:func:`.reservations.held_counts`).

Only container executions count (a DAG or an importer is never looked up). An execution that ran
with caching on (COMPLETE, with a ``cache_fingerprint``) is a *miss*; a CACHED one a *hit*; the hit
rate is hits / (hits + misses), so tasks that ran with caching off do not lower it (they are
counted apart). The time a hit saved is its source execution's duration (``last_update_time -
create_time`` of the execution it reused), as long as that execution took.

Made for big stores: executions are read per pipeline context, a page at a time, through MLMD
filter queries (state, type and creation time), never as a listing of the whole store; a hit's
source is read by ID, each source once.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import limits, mlmd_compat, records
from ..errors import NotFoundError
from . import reservations

__all__ = ["cache_stats", "CacheStats", "TaskMisses", "INVALIDATION_CONTEXT_TYPE"]

INVALIDATION_CONTEXT_TYPE = "mlmd_cache.Invalidation"
_PAGE = 1000  # executions per read
_BY_ID = 500  # source executions per read by ID


@dataclass(frozen=True)
class TaskMisses:
    pipeline: str
    task: str
    misses: int


@dataclass(frozen=True)
class CacheStats:
    """What :func:`cache_stats` found. ``executed`` counts COMPLETE container executions,
    ``caching_off`` those of them without a fingerprint; ``misses`` = executed - caching_off."""

    pipeline: Optional[str]
    since: Optional[datetime.timedelta]
    pipelines: int
    executed: int
    caching_off: int
    cached: int
    time_saved_seconds: float
    top_misses: list[TaskMisses] = field(default_factory=list)
    invalidated_sources: int = 0
    held_keys: int = 0  # cache keys a runner holds now (mlmd-cache leases lists them)
    stale_keys: int = 0  # held by a runner that ended or stopped its heartbeat

    @property
    def misses(self) -> int:
        return self.executed - self.caching_off

    @property
    def hit_rate(self) -> Optional[float]:
        """Hits / (hits + misses); None when nothing was looked up."""
        lookups = self.cached + self.misses
        return self.cached / lookups if lookups else None

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "since_seconds": self.since.total_seconds() if self.since else None,
                "pipelines": self.pipelines, "executed": self.executed, "caching_off": self.caching_off,
                "misses": self.misses, "cached": self.cached, "hit_rate": self.hit_rate,
                "time_saved_seconds": round(self.time_saved_seconds, 3),
                "top_misses": [{"pipeline": t.pipeline, "task": t.task, "misses": t.misses} for t in self.top_misses],
                "invalidated_sources": self.invalidated_sources, "held_keys": self.held_keys,
                "stale_keys": self.stale_keys}


def _pipeline_contexts(store: metadata_store.MetadataStore, pipeline: Optional[str]) -> list[mlmd.Context]:
    if pipeline is not None:
        context = None
        if limits.storable(pipeline, limits.store_backend(store)):  # else in no store, and kept from MLMD
            context = store.get_context_by_type_and_name(records.PIPELINE_CONTEXT_TYPE, pipeline)
        if context is None:
            raise NotFoundError(f"no pipeline named {pipeline!r} in the store")
        return [context]
    try:
        return sorted(store.get_contexts_by_type(records.PIPELINE_CONTEXT_TYPE), key=lambda c: c.id)
    except mlmd_errors.NotFoundError:  # no such type yet: an empty store
        return []


def _duration_ms(execution: mlmd.Execution) -> int:
    return max(0, execution.last_update_time_since_epoch - execution.create_time_since_epoch)


def cache_stats(store: metadata_store.MetadataStore, *, pipeline: Optional[str] = None,
                since: Optional[datetime.timedelta] = None, top: int = 5,
                now: Optional[float] = None) -> CacheStats:
    """The cache's statistics over the container executions of ``pipeline`` (default: every
    pipeline) created within ``since`` of ``now`` (seconds since the epoch; default: now, and all
    time without ``since``). ``top``: how many of the tasks that miss most to list. Only reads."""
    contexts = _pipeline_contexts(store, pipeline)
    condition = f"type = {records.filter_string(records.CONTAINER_EXECUTION_TYPE)}"
    cutoff = None
    if since is not None:
        cutoff = int(((time.time() if now is None else now) - since.total_seconds()) * 1000)
        condition += f" AND create_time_since_epoch >= {cutoff}"

    def state_is(state: int) -> Callable[[mlmd.Execution], bool]:
        return lambda e: (e.type == records.CONTAINER_EXECUTION_TYPE and e.last_known_state == state
                          and (cutoff is None or e.create_time_since_epoch >= cutoff))

    executed = caching_off = cached = 0
    misses: dict[tuple[str, str], int] = {}
    reused: dict[int, int] = {}  # source execution ID -> how many hits reused it
    for context in contexts:
        for page in mlmd_compat.executions_where(store, context.id, f"{condition} AND last_known_state = COMPLETE",
                                                 state_is(mlmd.Execution.COMPLETE), _PAGE):
            for execution in page:
                executed += 1
                if not records.read_property(execution, records.CACHE_FINGERPRINT):
                    caching_off += 1
                    continue
                task = records.read_property(execution, records.TASK_NAME) or ""
                misses[(context.name, task)] = misses.get((context.name, task), 0) + 1
        for page in mlmd_compat.executions_where(store, context.id, f"{condition} AND last_known_state = CACHED",
                                                 state_is(mlmd.Execution.CACHED), _PAGE):
            for execution in page:
                cached += 1
                source = records.read_property(execution, records.CACHED_EXECUTION_ID)
                if isinstance(source, str) and source.isdigit():
                    reused[int(source)] = reused.get(int(source), 0) + 1
    saved_ms = 0
    ids = sorted(reused)
    for start in range(0, len(ids), _BY_ID):
        for source in store.get_executions_by_id(ids[start:start + _BY_ID]):
            saved_ms += _duration_ms(source) * reused[source.id]
    ranked = sorted(misses.items(), key=lambda item: (-item[1], item[0]))[:max(0, top)]
    held, stale = reservations.held_counts(store, pipeline, now)
    return CacheStats(pipeline, since, len(contexts), executed, caching_off, cached, saved_ms / 1000.0,
                      [TaskMisses(p, t, n) for (p, t), n in ranked],
                      _invalidated_sources(store, contexts if pipeline is not None else None, since, now),
                      held_keys=held, stale_keys=stale)


def _undone(context: mlmd.Context) -> bool:
    """Whether an invalidation was undone (``--undo``): a record of it on the context."""
    return any(bool(records.read_property(context, name)) for name in ("undone", "undone_at", "undone_time")
               if name in context.custom_properties)


def _invalidated_sources(store: metadata_store.MetadataStore, pipelines: Optional[list[mlmd.Context]],
                         since: Optional[datetime.timedelta], now: Optional[float]) -> int:
    """Executions that an invalidation (a ``mlmd_cache.Invalidation`` context, not undone) took out
    of the cache; of ``pipelines`` only when given; invalidated within ``since`` when given."""
    try:
        invalidations = store.get_contexts_by_type(INVALIDATION_CONTEXT_TYPE)
    except mlmd_errors.NotFoundError:  # the type does not exist: nothing was ever invalidated
        return 0
    cutoff = None if since is None else int(((time.time() if now is None else now) - since.total_seconds()) * 1000)
    condition = "id > 0"
    keep: Callable[[mlmd.Execution], bool] = lambda e: True
    if pipelines is not None:
        [pipeline] = pipelines
        if not mlmd_compat.has_filter_query():
            in_pipeline = {e.id for e in store.get_executions_by_context(pipeline.id)}
            keep = lambda e: e.id in in_pipeline
        condition = (f"contexts_p.type = {records.filter_string(records.PIPELINE_CONTEXT_TYPE)} AND "
                     f"contexts_p.name = {records.filter_string(pipeline.name)}")
    invalidated: set[int] = set()
    for context in invalidations:
        if _undone(context) or (cutoff is not None and context.create_time_since_epoch < cutoff):
            continue
        for page in mlmd_compat.executions_where(store, context.id, condition, keep, _PAGE):
            invalidated.update(execution.id for execution in page)
    return len(invalidated)
