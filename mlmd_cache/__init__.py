"""mlmd-cache: Kubeflow Pipelines v2 step caching over any ML Metadata store.

The packages are the architecture, each importing only from the layers below it (checked by
``tests/test_architecture.py``, which also finds any import cycle):

* :mod:`mlmd_cache.cli` (top): the ``mlmd-cache`` commands, one module per command group;
* :mod:`mlmd_cache.runner` (run a compiled pipeline locally, with its run display),
  :mod:`mlmd_cache.server` (``mlmd-cache serve``) and :mod:`lineage`, side by side;
* :mod:`mlmd_cache.pipeline`: a compiled pipeline (the IR and its platform spec) read and checked;
* :mod:`mlmd_cache.cache`: :class:`ExecutionCache`, a facade over the cache's concerns (lookup,
  sources, writes, dedup, leases, digests, invalidation, staleness, recovery, indexing, stats);
* :mod:`mlmd_cache.store`: ``connect`` and the store's records, as plain MLMD reads and writes;
* :mod:`mlmd_cache.key` (the cache key) and :mod:`mlmd_cache.environments` (task environments);
* the base modules, which import nothing of the project but each other: :mod:`mlmd_cache.errors`
  (one error hierarchy), :mod:`mlmd_cache.defaults`, :mod:`mlmd_cache.durations`,
  :mod:`mlmd_cache.terminal` (text made safe for a terminal), ``_messages`` (MLMD's log and
  messages in one line), ``_protobuf``, ``_lazy`` and ``_entry`` (the console scripts' entry, with
  the stop signals' handling).

This module is the public API: its names are imported on first use.

>>> from mlmd_cache import CacheKey
>>> CacheKey.build(image="python:3.11", command=["sh", "ec"], args=["run"],
...                input_artifacts={"dataset": [10]},
...                output_parameters={"output_parameter": "DOUBLE"}).fingerprint()[:16]
'3d9a2a778fa3174c'
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import _version
from ._lazy import lazy_exports

__version__ = _version.__version__

# The public API, by the module that defines it. It is imported on first use (PEP 562), not here:
# ml_metadata (with grpc) takes a few hundred milliseconds to import, and `mlmd-cache --help`,
# `mlmd_cache.errors` or a cache key need none of it.
_EXPORTS = {
    "CacheHit": "cache.execution_cache",
    "ExecutionCache": "cache.execution_cache",
    "Outputs": "cache.execution_cache",
    "PipelineRun": "cache.execution_cache",
    "SourceIndex": "cache.execution_cache",
    "Task": "cache.execution_cache",
    "TaskExecution": "cache.execution_cache",
    "artifact_is_usable": "cache.execution_cache",
    "connect": "store.connection",
    "default_store_path": "store.connection",
    "default_store_url": "store.connection",
    "redact_url": "store.connection",
    "CacheKeyError": "errors",
    "ExecutionStateError": "errors",
    "InvalidArgumentError": "errors",
    "MlmdCacheError": "errors",
    "NotFoundError": "errors",
    "OutputError": "errors",
    "StoreConnectionError": "errors",
    "StoreFaultError": "errors",
    "NoStoreError": "errors",
    "StoreURLError": "errors",
    "TaskEnvironmentError": "errors",
    "EnvironmentCache": "environments",
    "CacheKey": "key.cache_key",
    "custom_fingerprint": "key.cache_key",
}

__all__ = [
    "CacheHit",
    "CacheKey",
    "CacheKeyError",
    "ExecutionCache",
    "ExecutionStateError",
    "InvalidArgumentError",
    "MlmdCacheError",
    "NotFoundError",
    "OutputError",
    "Outputs",
    "PipelineRun",
    "SourceIndex",
    "StoreConnectionError",
    "StoreFaultError",
    "NoStoreError",
    "StoreURLError",
    "Task",
    "TaskEnvironmentError",
    "EnvironmentCache",
    "TaskExecution",
    "artifact_is_usable",
    "connect",
    "custom_fingerprint",
    "default_store_path",
    "default_store_url",
    "redact_url",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .cache.execution_cache import (CacheHit, ExecutionCache, Outputs, PipelineRun, SourceIndex, Task,
                                        TaskExecution, artifact_is_usable)
    from .store.connection import connect, default_store_path, default_store_url, redact_url
    from .errors import (CacheKeyError, ExecutionStateError, InvalidArgumentError, MlmdCacheError, NoStoreError,
                         NotFoundError, OutputError, StoreConnectionError, StoreFaultError, StoreURLError,
                         TaskEnvironmentError)
    from .environments import EnvironmentCache
    from .key.cache_key import CacheKey, custom_fingerprint
