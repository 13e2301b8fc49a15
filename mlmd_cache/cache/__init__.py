"""The execution cache: KFP v2 step caching over one store (:class:`ExecutionCache`) and its concerns.

Owns the facade :mod:`.execution_cache`, its data (:mod:`.model`), and each concern in its module:
keying a task in a run and looking it up (:mod:`.lookup`), finding and validating cache sources
(:mod:`.sources`, with :mod:`.staleness`, :mod:`.digests`, :mod:`.invalidation`, :mod:`.uris`),
writing executions (:mod:`.runs`, :mod:`.writes`, :mod:`.reuse`), no duplicate work under concurrency
(:mod:`.dedup`, :mod:`.leases`), what operators see of the reservations and their pruning
(:mod:`.reservations`), interrupted runs (:mod:`.recovery`), indexing a store KFP wrote
(:mod:`.indexing`) and hit rates (:mod:`.stats`).

May import: :mod:`mlmd_cache.store`, :mod:`mlmd_cache.key` and the base modules. The concerns take
what they need as arguments (a store, a type registry, a run and a task), never the facade:
:mod:`.execution_cache` imports them, none of them imports it.

``from mlmd_cache.cache import ExecutionCache`` works as it did when this was one module: the names
below are imported on first use.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {name: "execution_cache" for name in (
    "CacheHit", "CachedRecord", "Claim", "ExecutionCache", "Lookup", "Outputs", "PipelineRun", "SourceIndex",
    "SourceRules", "Task", "TaskExecution", "artifact_is_usable")}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
