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

import contextlib
import datetime
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .._messages import mlmd_stderr_captured
from . import dedup as dedup_, digests, indexing, leases, sources, writes
from ..store import limits, records
from .dedup import Claim
from .indexing import SourceIndex
from .sources import CacheHit, Lookup, SourceRules, artifact_is_usable
from ..errors import ExecutionStateError, InvalidArgumentError, NotFoundError, OutputError
from ..key.cache_key import CacheKey, custom_fingerprint
from .recovery import RUNNER, runner_identity

__all__ = ["ExecutionCache", "PipelineRun", "Task", "CacheHit", "TaskExecution", "CachedRecord", "Outputs", "SourceIndex",
           "SourceRules", "Claim", "artifact_is_usable"]


@dataclass(frozen=True)
class PipelineRun:
    """A run of a pipeline: its ``system.Pipeline`` and ``system.PipelineRun`` contexts.

    ``enable_caching`` is the run-level switch of KFP's ``create_run_from_pipeline_func``: ``None``
    lets every task decide, ``True``/``False`` overrides every task's own setting.
    ``max_staleness``: sources that started longer ago are not reused, unless a task sets its own.
    ``digest=True`` records each output's SHA-256 at publish and, at lookup, refuses a source whose
    outputs no longer hash to what was recorded; ``key_by_content=True`` (which implies ``digest``)
    names input artifacts in cache keys by digest instead of MLMD ID (see :mod:`mlmd_cache.cache.digests`).
    ``verified_digests`` holds the digests this run published or checked, by artifact ID.
    """

    pipeline: str
    name: str
    pipeline_context: mlmd.Context = field(repr=False)
    run_context: mlmd.Context = field(repr=False)
    enable_caching: Optional[bool] = None
    max_staleness: Optional[datetime.timedelta] = None
    digest: bool = False
    key_by_content: bool = False
    verified_digests: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def uses_digests(self) -> bool:
        """Whether outputs are digested at publish and checked at lookup."""
        return self.digest or self.key_by_content


@dataclass(frozen=True)
class Task:
    """One task of a pipeline, as the cache sees it.

    ``key`` is the task's full KFP cache key. ``cache_key`` is KFP's custom cache key
    (``set_caching_options(cache_key=...)``): when set, the fingerprint is made from it and
    ``component_name`` alone. ``enable_cache=False`` is ``set_caching_options(False)``.
    ``max_staleness`` overrides the run's for this task.
    ``input_digests`` (set by :meth:`ExecutionCache.keyed` in a ``key_by_content`` run) names the
    input artifacts by content: the fingerprint is then :func:`mlmd_cache.cache.digests.content_fingerprint`,
    not KFP's.
    """

    name: str
    key: CacheKey
    display_name: str = ""
    enable_cache: bool = True
    cache_key: str = ""
    component_name: str = ""
    parent_dag_id: Optional[int] = None
    max_staleness: Optional[datetime.timedelta] = None
    input_digests: Optional[Mapping[str, Sequence[str]]] = field(default=None, repr=False, hash=False)

    @property
    def fingerprint(self) -> str:
        if self.input_digests is not None:
            return self._content_fingerprint
        if self.cache_key:
            return custom_fingerprint(self.component_name, self.cache_key)
        return self.key.fingerprint()

    @cached_property
    def _content_fingerprint(self) -> str:
        custom = custom_fingerprint(self.component_name, self.cache_key) if self.cache_key else ""
        return digests.content_fingerprint(self.key, self.input_digests or {}, custom)

    @property
    def key_mode(self) -> str:
        """``"content"`` when input artifacts enter the key by digest, else ``"id"`` (KFP's)."""
        return digests.KEY_MODE_ID if self.input_digests is None else digests.KEY_MODE_CONTENT


@dataclass(frozen=True)
class Outputs:
    """What a task produced: output artifact URIs (one or a list per output name), output parameter
    values, and optional metadata per output artifact (recorded as its custom properties)."""

    artifacts: Mapping[str, Union[str, Sequence[str]]] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskExecution:
    """An execution of a task as recorded in MLMD, with its outputs once it has them."""

    execution: mlmd.Execution = field(repr=False)
    run: PipelineRun = field(repr=False)
    task: Task = field(repr=False)
    output_artifacts: dict[str, list[mlmd.Artifact]] = field(default_factory=dict, repr=False)
    output_parameters: dict[str, Any] = field(default_factory=dict)
    reservation: Optional[mlmd.Context] = field(default=None, repr=False)
    """The ``mlmd_cache.Reservation`` context by which this execution holds its key (:mod:`.dedup`)."""

    @property
    def id(self) -> int:
        return self.execution.id

    @property
    def state(self) -> str:
        """The MLMD state name: ``RUNNING``, ``COMPLETE``, ``CACHED`` or ``FAILED``."""
        return mlmd.Execution.State.Name(self.execution.last_known_state)

    @property
    def cached_execution_id(self) -> Optional[int]:
        value = records.read_property(self.execution, records.CACHED_EXECUTION_ID)
        return int(value) if value else None

    @property
    def fingerprint(self) -> Optional[str]:
        return records.read_property(self.execution, records.CACHE_FINGERPRINT) or None

    @property
    def miss_reason(self) -> Optional[str]:
        """Why an earlier execution with the same key was not reused (say, its output file is gone),
        for an execution that ran although one existed; None otherwise."""
        return records.read_property(self.execution, records.MISS_REASON) or None

    @property
    def output_artifact_ids(self) -> dict[str, list[int]]:
        return {name: [artifact.id for artifact in artifacts] for name, artifacts in self.output_artifacts.items()}


@dataclass(frozen=True)
class CachedRecord:
    """A CACHED execution built by :meth:`ExecutionCache.cached_record` and not yet written: ``done``
    (its ID is set by :meth:`ExecutionCache.write_cached`) and its events, each naming its artifact."""

    done: TaskExecution
    events: list[mlmd.Event] = field(repr=False)


class ExecutionCache:
    """KFP v2 step caching over one MLMD store.

    The records are KFP's own (see :mod:`mlmd_cache.store.records`); on top of them, every execution
    that is a valid cache source is associated with a ``mlmd_cache.CacheSource`` context named
    after its pipeline and fingerprint, which makes :meth:`lookup` a handful of indexed reads.
    """

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.store = store
        self.types = records.TypeRegistry(store)

    @cached_property
    def heartbeats(self) -> leases.Heartbeats:
        """The heartbeat of the reservations this cache's executions hold (:mod:`.leases`)."""
        return leases.Heartbeats(self.store)

    # -- runs -------------------------------------------------------------------------------------

    def _get_or_create_context(self, type_name: str, name: str, properties: Mapping[str, str]) -> tuple[mlmd.Context, bool]:
        context = self.store.get_context_by_type_and_name(type_name, name)
        if context is not None:
            return context, False
        new = mlmd.Context(type_id=self.types.context_type(type_name), name=name)
        for key, value in properties.items():
            new.custom_properties[key].string_value = value
        try:
            [new.id] = self.store.put_contexts([new])
        except mlmd_errors.AlreadyExistsError:  # another writer created it first
            return self.store.get_context_by_type_and_name(type_name, name), False
        return self.store.get_contexts_by_id([new.id])[0], True

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
        """Get or create the ``system.Pipeline`` and ``system.PipelineRun`` contexts of a run.

        An existing run is returned (as KFP's driver finds the run of each task it starts) unless
        ``exist_ok`` is false; a run belongs to one pipeline, so a run of another pipeline by that
        name is an :class:`InvalidArgumentError` either way, and nothing is written then."""
        if not pipeline or not run:
            raise InvalidArgumentError("a pipeline run needs a pipeline name and a run name")
        backend = limits.store_backend(self.store)
        limits.check_name("pipeline name", pipeline, backend)
        limits.check_name("run name", run, backend)
        limits.check_text("pipeline root", pipeline_root, backend)
        existing = self.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
        if existing is not None:
            self._check_reusable(existing, pipeline, exist_ok)
        pipeline_context, _ = self._get_or_create_context(records.PIPELINE_CONTEXT_TYPE, pipeline, {})
        run_properties = {records.PIPELINE_ROOT: pipeline_root} if pipeline_root else {}
        run_context, created = self._get_or_create_context(records.RUN_CONTEXT_TYPE, run, run_properties)
        if created:
            try:
                self.store.put_parent_contexts(
                    [mlmd.ParentContext(child_id=run_context.id, parent_id=pipeline_context.id)]
                )
            except mlmd_errors.AlreadyExistsError:
                pass
        elif existing is None:  # another writer created it since
            self._check_reusable(run_context, pipeline, exist_ok)
        return PipelineRun(pipeline, run, pipeline_context, run_context, enable_caching, max_staleness, digest=digest,
                           key_by_content=key_by_content)

    def _check_reusable(self, run_context: mlmd.Context, pipeline: str, exist_ok: bool) -> None:
        if not exist_ok:
            raise InvalidArgumentError(f"a pipeline run named {run_context.name!r} is already in the store; "
                                       "a new run needs a new name")
        owners = [c.name for c in self.store.get_parent_contexts_by_context(run_context.id)]
        if owners and pipeline not in owners:
            raise InvalidArgumentError(f"pipeline run {run_context.name!r} belongs to pipeline {owners[0]!r}, "
                                       f"not {pipeline!r}")

    @staticmethod
    def caching_enabled(run: PipelineRun, task: Task) -> bool:
        """KFP's rule: a run-level ``enable_caching`` overrides every task; otherwise the task decides."""
        return task.enable_cache if run.enable_caching is None else run.enable_caching

    # -- lookup and reuse -------------------------------------------------------------------------

    @staticmethod
    def rules(run: PipelineRun, task: Task) -> SourceRules:
        """What a source must satisfy for ``task`` in ``run`` beyond KFP's rule."""
        staleness = task.max_staleness if task.max_staleness is not None else run.max_staleness
        return SourceRules(max_staleness=staleness, key_mode=task.key_mode,
                           verify_digests=run.uses_digests or task.key_mode == digests.KEY_MODE_CONTENT)

    def lookup(self, run: PipelineRun, task: Task) -> Optional[CacheHit]:
        """The cache hit for ``task`` in ``run``, or None: a miss, or caching is off for the task
        or the run (then nothing is read)."""
        return self.look_up(run, task).hit

    def look_up(self, run: PipelineRun, task: Task) -> Lookup:
        """:meth:`lookup` with the sources passed over and why (``miss_reason``), for :meth:`start`."""
        if not self.caching_enabled(run, task):
            return Lookup(None)
        task = self.keyed(run, task)
        found = sources.look_up(self.store, run.pipeline, task.fingerprint, self.rules(run, task))
        if found.hit is not None and run.uses_digests:  # checked just now: a consumer's content key may trust them
            digests.remember(run.verified_digests, found.hit.output_artifacts)
        return found

    def keyed(self, run: PipelineRun, task: Task) -> Task:
        """``task`` as ``run`` keys it: with its input artifacts named by content in a
        ``key_by_content`` run (one read of the input artifacts, and hashing those not yet verified
        in this run), unchanged otherwise or when it already is."""
        if not run.key_by_content or task.input_digests is not None:
            return task
        named = digests.input_digests(self.store, task.key.input_artifact_ids, run.verified_digests)
        return replace(task, input_digests=named)

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
        task = self.keyed(run, task)
        execution = writes.task_execution(self.store, self.types, task, mlmd.Execution.CACHED, task.fingerprint)
        execution.custom_properties[records.CACHED_EXECUTION_ID].string_value = str(hit.source.id)
        execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(hit.output_parameters))
        events = [event for _, event in writes.input_events(self.store, task)] + [
            writes.event(mlmd.Event.OUTPUT, name, artifact.id)
            for name, artifacts in hit.output_artifacts.items()
            for artifact in artifacts
        ]
        return CachedRecord(TaskExecution(execution, run, task, hit.output_artifacts, dict(hit.output_parameters)),
                            events)

    def write_cached(self, run: PipelineRun, pending: Sequence[CachedRecord]) -> None:
        """Write CACHED records in one transaction (``put_lineage_subgraph``) and set their IDs: on a
        disk-backed store each commit costs milliseconds, and a cached re-run is all such records.

        The records are what ``put_execution`` writes for each, attributions included: every artifact
        of an event is attributed to the run's contexts. ``put_lineage_subgraph`` attributes only the
        artifacts it is given, and upserts them, so they are read just before and given as stored
        (an unchanged upsert writes nothing), as are the two contexts."""
        if not pending:
            return
        wanted = sorted({event.artifact_id for record in pending for event in record.events})
        artifacts = self.store.get_artifacts_by_id(wanted) if wanted else []
        index = {artifact.id: position for position, artifact in enumerate(artifacts)}
        missing = [artifact_id for artifact_id in wanted if artifact_id not in index]
        if missing:
            raise NotFoundError(f"no MLMD artifact with ID {missing[0]}: it was in the store when the cache was "
                                "looked up")
        context_ids = [run.pipeline_context.id, run.run_context.id]
        contexts = {context.id: context for context in self.store.get_contexts_by_id(context_ids)}
        if len(contexts) != len(context_ids):
            raise NotFoundError(f"the contexts of run {run.name!r} are gone from the store")
        edges = []
        for position, record in enumerate(pending):
            for event in record.events:
                edge = mlmd.Event()
                edge.CopyFrom(event)
                edge.ClearField("artifact_id")
                edges.append((position, index[event.artifact_id], edge))
        ids, _, _ = self.store.put_lineage_subgraph(
            [record.done.execution for record in pending], artifacts, [contexts[i] for i in context_ids], edges)
        for record, execution_id in zip(pending, ids):
            record.done.execution.id = execution_id

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
        task = self.keyed(run, task)
        fingerprint = task.fingerprint if self.caching_enabled(run, task) else None
        execution = writes.task_execution(self.store, self.types, task, mlmd.Execution.RUNNING, fingerprint)
        execution.custom_properties[RUNNER].string_value = runner_identity()
        if miss_reason:
            execution.custom_properties[records.MISS_REASON].string_value = limits.storable_text(
                miss_reason, limits.store_backend(self.store))
        contexts = [run.pipeline_context, run.run_context] + ([reservation] if reservation is not None else [])
        events = writes.input_events(self.store, task)
        with mlmd_stderr_captured() if reservation is not None else contextlib.nullcontext():
            # a reservation another runner took is an AlreadyExistsError, whose C++ log is no news
            execution.id, _, context_ids = self.store.put_execution(
                execution, events, contexts, force_reuse_context=True, reuse_context_if_already_exist=False)
        if reservation is not None:
            reservation = mlmd.Context(id=context_ids[-1], type_id=reservation.type_id, name=reservation.name,
                                       custom_properties=reservation.custom_properties)
        return TaskExecution(execution, run, task, reservation=reservation)

    def claim(self, run: PipelineRun, task: Task, miss_reason: Optional[str] = None, *,
              lease_seconds: float = leases.DEFAULT_LEASE_SECONDS, known: int = 0) -> Claim:
        """On a miss, reserve the task's key and :meth:`start` it, unless another runner holds the
        key (``Claim.held``: look again later) or completed it meanwhile (``Claim.hit``); see
        :func:`mlmd_cache.cache.dedup.claim`. The reservation's heartbeat runs until :meth:`publish`
        or :meth:`fail`."""
        return dedup_.claim(self, run, task, miss_reason, lease_seconds, known)

    def _stored_in_state(self, started: TaskExecution, expected: int = mlmd.Execution.RUNNING) -> mlmd.Execution:
        """The execution as stored, which must be in state ``expected`` (RUNNING unless said)."""
        found = self.store.get_executions_by_id([started.id])
        if not found:
            raise NotFoundError(f"execution {started.id} does not exist")
        execution = found[0]
        if execution.last_known_state != expected:
            state = mlmd.Execution.State.Name(execution.last_known_state)
            raise ExecutionStateError(f"execution {started.id} is {state}, not {mlmd.Execution.State.Name(expected)}")
        return execution

    def publish(self, started: TaskExecution, outputs: Outputs = Outputs()) -> TaskExecution:
        """Complete a RUNNING execution: new LIVE output artifacts, OUTPUT events and the output
        parameters, in one atomic write. With caching on it becomes a cache source."""
        task = started.task
        declared_parameters = set(task.key.output_parameter_types)
        if set(outputs.parameters) != declared_parameters:
            raise OutputError(f"task {task.name!r} declares output parameters {sorted(declared_parameters)}, "
                              f"got {sorted(outputs.parameters)}")
        pairs = writes.output_artifacts(self.store, self.types, task, outputs)
        if started.run.uses_digests:  # before the write: bytes that cannot be read leave the execution RUNNING
            for artifact, event in pairs:
                digests.record_digest(artifact, f"task {task.name!r}, output {event.path.steps[0].key!r}")
        execution = self._stored_in_state(started)
        execution.last_known_state = mlmd.Execution.COMPLETE
        execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(outputs.parameters))
        contexts = [started.run.pipeline_context, started.run.run_context]
        fingerprint = records.read_property(execution, records.CACHE_FINGERPRINT)
        if fingerprint:
            contexts.append(sources.new_source_context(
                self.types.context_type(records.CACHE_SOURCE_CONTEXT_TYPE), started.run.pipeline, fingerprint))
        _, artifact_ids, _ = self.store.put_execution(
            execution, pairs, contexts, reuse_context_if_already_exist=True, force_reuse_context=True
        )
        by_name: dict[str, list[mlmd.Artifact]] = {}
        for (artifact, event), artifact_id in zip(pairs, artifact_ids):
            artifact.id = artifact_id
            by_name.setdefault(event.path.steps[0].key, []).append(artifact)
        if started.run.uses_digests:
            digests.remember(started.run.verified_digests, by_name)
        if started.reservation is not None:  # COMPLETE: waiters now find the source
            self.heartbeats.stop(started.reservation.id)
        return replace(started, execution=execution, output_artifacts=by_name,
                       output_parameters=dict(outputs.parameters))

    def fail(self, started: TaskExecution, *, keep_reservation: bool = False) -> TaskExecution:
        """Mark a RUNNING execution FAILED. A failed execution is never a cache source. Its
        reservation is released, so that a waiter takes the key over at once, unless
        ``keep_reservation`` (another attempt follows: :meth:`restart`)."""
        execution = self._stored_in_state(started)
        execution.last_known_state = mlmd.Execution.FAILED
        self.store.put_executions([execution])
        if started.reservation is not None and not keep_reservation:
            self.heartbeats.release(started.reservation.id)
        return replace(started, execution=execution)

    def restart(self, failed: TaskExecution) -> TaskExecution:
        """Mark a FAILED execution RUNNING again for another attempt of its task (``set_retry``): as
        KFP does, every attempt reuses the task's one execution."""
        execution = self._stored_in_state(failed, expected=mlmd.Execution.FAILED)
        execution.last_known_state = mlmd.Execution.RUNNING
        execution.custom_properties[RUNNER].string_value = runner_identity()
        self.store.put_executions([execution])
        return replace(failed, execution=execution)

    # -- stores written by KFP itself ----------------------------------------------------------------

    def pipeline_names(self) -> list[str]:
        """The names of the store's ``system.Pipeline`` contexts, oldest first."""
        try:
            contexts = self.store.get_contexts_by_type(records.PIPELINE_CONTEXT_TYPE)
        except mlmd_errors.NotFoundError:  # no such type yet: an empty store
            return []
        return [c.name for c in sorted(contexts, key=lambda c: c.id)]

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
        :data:`~.leases.MIN_LEASE_SECONDS` is refused (:class:`~.errors.InvalidArgumentError`)."""
        if dedup:
            leases.check_lease(lease_seconds, max_wait_seconds)
        task = self.keyed(run, task)
        found = self.look_up(run, task)
        if found.hit is not None:
            return self.reuse(run, task, found.hit)
        if dedup and self.caching_enabled(run, task):
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
