"""The execution cache over MLMD: lookup, reuse, and start/publish/fail, as a KFP launcher does them.

>>> import tempfile, os
>>> from mlmd_cache import connect, CacheKey, ExecutionCache, Task, Outputs
>>> cache = ExecutionCache(connect("sqlite:///" + os.path.join(tempfile.mkdtemp(), "doc.sqlite")))
>>> run = cache.pipeline_run("demo", "run-1")
>>> task = Task("hello", CacheKey.build(image="python:3.11", command=["echo", "hi"],
...                                     output_parameters={"greeting": "STRING"}))
>>> cache.execute(run, task, lambda started: Outputs(parameters={"greeting": "hi"})).state
'COMPLETE'
>>> again = cache.execute(cache.pipeline_run("demo", "run-2"), task, lambda started: None)
>>> again.state, again.output_parameters
('CACHED', {'greeting': 'hi'})
"""
from __future__ import annotations

import datetime
from functools import cached_property
from typing import Callable, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from . import dedup as dedup_, indexing, leases, lookup, reuse, runs, sources, writes
from .dedup import Claim
from .indexing import SourceIndex
from .model import CachedRecord, CacheHit, Lookup, Outputs, PipelineRun, Task, TaskExecution, caching_enabled
from .sources import SourceRules, artifact_is_usable

__all__ = ["ExecutionCache", "PipelineRun", "Task", "CacheHit", "TaskExecution", "CachedRecord", "Outputs", "SourceIndex",
           "SourceRules", "Claim", "Lookup", "artifact_is_usable"]


class ExecutionCache:
    """KFP v2 step caching over one MLMD store.

    The records are KFP's own (see :mod:`mlmd_cache.store.records`); on top of them, every execution
    that is a valid cache source is associated with a ``mlmd_cache.CacheSource`` context named
    after its pipeline and fingerprint, which makes :meth:`lookup` a handful of indexed reads.

    A facade: each method is one concern of the package (:mod:`.runs`, :mod:`.lookup`,
    :mod:`.sources`, :mod:`.reuse`, :mod:`.writes`, :mod:`.dedup`, :mod:`.indexing`), given this
    cache's store and type registry; none of them calls back here.
    """

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.store = store
        self.types = records.TypeRegistry(store)

    @cached_property
    def heartbeats(self) -> leases.Heartbeats:
        """The heartbeat of the reservations this cache's executions hold (:mod:`.leases`)."""
        return leases.Heartbeats(self.store)

    # -- runs -------------------------------------------------------------------------------------

    def pipeline_run(
        self,
        pipeline: str,
        run: str,
        *,
        enable_caching: Optional[bool] = None,
        pipeline_root: str = "",
        exist_ok: bool = True,
        max_staleness: Optional[datetime.timedelta] = None,
        digest: bool = False,
        key_by_content: bool = False,
    ) -> PipelineRun:
        """Get or create the ``system.Pipeline`` and ``system.PipelineRun`` contexts of a run (see
        :func:`mlmd_cache.cache.runs.pipeline_run`).

        ``enable_caching`` is the run-level switch of KFP's ``create_run_from_pipeline_func``;
        ``max_staleness``, ``digest`` and ``key_by_content`` are the rules of :class:`PipelineRun`.
        An existing run is returned unless ``exist_ok`` is false."""
        return runs.pipeline_run(self.store, self.types, pipeline, run, enable_caching=enable_caching,
                                 pipeline_root=pipeline_root, exist_ok=exist_ok, max_staleness=max_staleness,
                                 digest=digest, key_by_content=key_by_content)

    @staticmethod
    def caching_enabled(run: PipelineRun, task: Task) -> bool:
        """KFP's rule: a run-level ``enable_caching`` overrides every task; otherwise the task decides."""
        return caching_enabled(run, task)

    # -- lookup and reuse -------------------------------------------------------------------------

    @staticmethod
    def rules(run: PipelineRun, task: Task) -> SourceRules:
        """What a source must satisfy for ``task`` in ``run`` beyond KFP's rule."""
        return lookup.rules(run, task)

    def lookup(self, run: PipelineRun, task: Task) -> Optional[CacheHit]:
        """The cache hit for ``task`` in ``run``, or None: a miss, or caching is off for the task
        or the run (then nothing is read)."""
        return self.look_up(run, task).hit

    def look_up(self, run: PipelineRun, task: Task) -> Lookup:
        """:meth:`lookup` with the sources passed over and why (``miss_reason``), for :meth:`start`."""
        return lookup.look_up(self.store, run, task)

    def keyed(self, run: PipelineRun, task: Task) -> Task:
        """``task`` as ``run`` keys it: with its input artifacts named by content in a
        ``key_by_content`` run, unchanged otherwise (:func:`mlmd_cache.cache.lookup.keyed`)."""
        return lookup.keyed(self.store, run, task)

    def find_source(self, pipeline: str, fingerprint: str, rules: SourceRules = SourceRules()) -> Optional[CacheHit]:
        """The newest valid cache source of ``fingerprint`` in ``pipeline``, or None (see
        :func:`mlmd_cache.cache.sources.find_source`)."""
        return sources.find_source(self.store, pipeline, fingerprint, rules)

    def reuse(self, run: PipelineRun, task: Task, hit: CacheHit) -> TaskExecution:
        """Record a CACHED execution of ``task`` reusing ``hit``: the execution with
        ``cached_execution_id`` and the source's ``outputs``, INPUT events for the task's inputs and
        OUTPUT events to the source's very artifacts (same IDs, same path keys), in one transaction."""
        record = self.cached_record(run, task, hit)
        self.write_cached(run, [record])
        return record.done

    def cached_record(self, run: PipelineRun, task: Task, hit: CacheHit) -> CachedRecord:
        """:meth:`reuse`'s record, checked (every input artifact exists) but not yet written: several
        are written together by :meth:`write_cached`."""
        return reuse.cached_record(self.store, self.types, run, self.keyed(run, task), hit)

    def write_cached(self, run: PipelineRun, pending: Sequence[CachedRecord]) -> None:
        """Write CACHED records in one transaction and set their IDs
        (:func:`mlmd_cache.cache.reuse.write_cached`): a cached re-run is all such records."""
        reuse.write_cached(self.store, run, pending)

    # -- a miss: start, publish, fail ---------------------------------------------------------------

    def start(self, run: PipelineRun, task: Task, miss_reason: Optional[str] = None, *,
              reservation: Optional[mlmd.Context] = None) -> TaskExecution:
        """Record a RUNNING execution of ``task`` with INPUT events (and its fingerprint when caching
        is on, as KFP does), and the calling process as its ``runner`` (:mod:`mlmd_cache.cache.recovery`
        tells from it whether a RUNNING execution was left by a runner that was killed).
        ``miss_reason`` (:attr:`Lookup.miss_reason`) is kept for ``explain``. A new
        ``reservation`` context (:func:`mlmd_cache.cache.leases.new_reservation`) is written with it: if
        its name is taken, MLMD's ``AlreadyExistsError`` is raised and nothing is written (use
        :meth:`claim`, which handles that)."""
        return writes.start(self.store, self.types, run, self.keyed(run, task), miss_reason, reservation)

    def claim(self, run: PipelineRun, task: Task, miss_reason: Optional[str] = None, *,
              lease_seconds: float = leases.DEFAULT_LEASE_SECONDS, known: int = 0) -> Claim:
        """On a miss, reserve the task's key and :meth:`start` it, unless another runner holds the
        key (``Claim.held``: look again later) or completed it meanwhile (``Claim.hit``); see
        :func:`mlmd_cache.cache.dedup.claim`. The reservation's heartbeat runs until :meth:`publish`
        or :meth:`fail`."""
        return dedup_.claim(self, run, task, miss_reason, lease_seconds, known)

    def publish(self, started: TaskExecution, outputs: Outputs = Outputs()) -> TaskExecution:
        """Complete a RUNNING execution: new LIVE output artifacts, OUTPUT events and the output
        parameters, in one atomic write. With caching on it becomes a cache source."""
        done = writes.publish(self.store, self.types, started, outputs)
        if started.reservation is not None:  # COMPLETE: waiters now find the source
            self.heartbeats.stop(started.reservation.id)
        return done

    def fail(self, started: TaskExecution, *, keep_reservation: bool = False,
             stderr_log: Optional[str] = None) -> TaskExecution:
        """Mark a RUNNING execution FAILED. A failed execution is never a cache source. Its
        reservation is released, so that a waiter takes the key over at once, unless
        ``keep_reservation`` (another attempt follows: :meth:`restart`). ``stderr_log``: where the
        failed attempt's stderr is (recorded; ``mlmd-lineage explain`` shows its last lines)."""
        failed = writes.fail(self.store, started, stderr_log)
        if started.reservation is not None and not keep_reservation:
            self.heartbeats.release(started.reservation.id)
        return failed

    def restart(self, failed: TaskExecution) -> TaskExecution:
        """Mark a FAILED execution RUNNING again for another attempt of its task (``set_retry``): as
        KFP does, every attempt reuses the task's one execution."""
        return writes.restart(self.store, failed)

    # -- stores written by KFP itself ----------------------------------------------------------------

    def pipeline_names(self) -> list[str]:
        """The names of the store's ``system.Pipeline`` contexts, oldest first."""
        return runs.pipeline_names(self.store)

    def index_sources(self, pipeline: str, *, dry_run: bool = False) -> SourceIndex:
        """Make the executions of ``pipeline`` that KFP (or anyone) recorded as cache sources (see
        :func:`mlmd_cache.cache.indexing.index_sources`)."""
        return indexing.index_sources(self.store, self.types, pipeline, dry_run=dry_run)

    def execute(
        self, run: PipelineRun, task: Task, work: Callable[[TaskExecution], Optional[Outputs]], *,
        dedup: bool = True, lease_seconds: float = leases.DEFAULT_LEASE_SECONDS,
        max_wait_seconds: Optional[float] = None, on_wait: Optional[Callable[[int], None]] = None,
    ) -> TaskExecution:
        """Run one task with caching: reuse a valid source when there is one; otherwise start an
        execution, call ``work(started)`` and publish what it returns. If ``work`` raises, the
        execution is marked FAILED and the exception propagates.

        With ``dedup`` (the default, when caching is on for the task) a miss first reserves the
        key (:meth:`claim`): while another runner holds it, this one waits (``on_wait`` is told the
        holder's execution ID) and then reuses the holder's result, or takes the key over if the
        holder failed or its lease of ``lease_seconds`` ran out without a heartbeat. After
        ``max_wait_seconds`` (default: no limit) it runs the work anyway. A lease shorter than
        :data:`~.leases.MIN_LEASE_SECONDS` is refused (:class:`~mlmd_cache.errors.InvalidArgumentError`)."""
        if dedup:
            leases.check_lease(lease_seconds, max_wait_seconds)
        task = self.keyed(run, task)
        found = self.look_up(run, task)
        if found.hit is not None:
            return self.reuse(run, task, found.hit)
        if dedup and caching_enabled(run, task):
            claimed = dedup_.claim_or_wait(self, run, task, found.miss_reason, lease_seconds, max_wait_seconds,
                                           on_wait)
            if claimed.hit is not None:
                return self.reuse(run, task, claimed.hit)
            started = claimed.started
        else:
            started = self.start(run, task, found.miss_reason)
        try:
            outputs = work(started) or Outputs()
            return self.publish(started, outputs)
        except BaseException:
            self.fail(started)
            raise
