"""mlmd-cache: Kubeflow Pipelines v2 step caching over any ML Metadata store.

>>> from mlmd_cache import CacheKey
>>> CacheKey.build(image="python:3.11", command=["sh", "ec"], args=["run"],
...                input_artifacts={"dataset": [10]},
...                output_parameters={"output_parameter": "DOUBLE"}).fingerprint()[:16]
'3d9a2a778fa3174c'
"""
from .cache import CacheHit, ExecutionCache, Outputs, PipelineRun, SourceIndex, Task, TaskExecution, artifact_is_usable
from .connection import connect, default_store_path, default_store_url, redact_url
from .errors import (
    CacheKeyError,
    ExecutionStateError,
    InvalidArgumentError,
    MlmdCacheError,
    NotFoundError,
    OutputError,
    StoreConnectionError,
    StoreFaultError,
    NoStoreError,
    StoreURLError,
)
from .key import CacheKey, custom_fingerprint

__version__ = "0.1.0"

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
    "TaskExecution",
    "artifact_is_usable",
    "connect",
    "custom_fingerprint",
    "default_store_path",
    "default_store_url",
    "redact_url",
]
