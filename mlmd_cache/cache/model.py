"""The cache's data: a pipeline run, a task as the cache sees it, what a task produced, an execution
of a task as recorded, a CACHED record not yet written and what a lookup found. Plain values: the
cache's concerns (:mod:`.lookup`, :mod:`.writes`, :mod:`.dedup`, ...) take and return them, and
:class:`~.execution_cache.ExecutionCache` hands them to its callers.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional, Sequence, Union

from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import digests
from ..key.cache_key import CacheKey, custom_fingerprint
from ..store import records
from ..store.source_records import CacheHit

__all__ = ["PipelineRun", "Task", "Outputs", "TaskExecution", "CachedRecord", "CacheHit", "Lookup", "caching_enabled"]


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
    ``input_digests`` (set by :meth:`~.execution_cache.ExecutionCache.keyed` in a ``key_by_content`` run) names the
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
    """A CACHED execution built by :meth:`~.execution_cache.ExecutionCache.cached_record` and not yet written: ``done``
    (its ID is set by :meth:`~.execution_cache.ExecutionCache.write_cached`) and its events, each naming its artifact."""

    done: TaskExecution
    events: list[mlmd.Event] = field(repr=False)


@dataclass(frozen=True)
class Lookup:
    """What a lookup found: the ``hit`` (None on a miss) and the newer candidates it passed over,
    as ``(execution ID, why not valid)``, newest first."""

    hit: Optional[CacheHit]
    rejected: tuple[tuple[int, str], ...] = ()

    @property
    def miss_reason(self) -> Optional[str]:
        """On a miss with candidates, why the newest was not reused; None for a hit or no candidate."""
        if self.hit is not None or not self.rejected:
            return None
        return self.rejected[0][1]



def caching_enabled(run: PipelineRun, task: Task) -> bool:
    """KFP's rule: a run-level ``enable_caching`` overrides every task; otherwise the task decides."""
    return task.enable_cache if run.enable_caching is None else run.enable_caching
