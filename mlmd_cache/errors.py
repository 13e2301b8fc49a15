"""The one exception hierarchy of mlmd-cache: catch :class:`MlmdCacheError` to catch them all."""
from __future__ import annotations

__all__ = [
    "MlmdCacheError",
    "StoreURLError",
    "StoreConnectionError",
    "StoreFaultError",
    "NoStoreError",
    "CacheKeyError",
    "ExecutionStateError",
    "NotFoundError",
    "OutputError",
    "InvalidArgumentError",
    "DigestError",
    "TaskEnvironmentError",
]


class MlmdCacheError(Exception):
    """Base class of every error mlmd-cache raises on purpose."""


class StoreURLError(MlmdCacheError, ValueError):
    """A store URL is malformed or names an unsupported scheme."""


class StoreConnectionError(MlmdCacheError):
    """The store could not be opened: unreachable server, refused credentials, unreadable file."""


class NoStoreError(StoreConnectionError):
    """There is no MLMD store where one must already be (a read-only command, ``create=False``)."""


class StoreFaultError(StoreConnectionError):
    """The store failed during a call (a server gone, a deadline passed, a database that stayed busy)."""


class CacheKeyError(MlmdCacheError, ValueError):
    """A cache key is not valid: bad JSON, an unknown field, or a value of the wrong type."""


class ExecutionStateError(MlmdCacheError):
    """An execution is not in the state the operation needs (for example publishing a FAILED one)."""


class NotFoundError(MlmdCacheError, LookupError):
    """A record named by ID or name does not exist in the store."""


class OutputError(MlmdCacheError, ValueError):
    """What a task produced does not match its declared outputs."""


class InvalidArgumentError(MlmdCacheError, ValueError):
    """An argument is missing or not valid (an empty pipeline or run name, ...)."""


class DigestError(MlmdCacheError):
    """The bytes of an artifact cannot be digested (unreadable, or neither a file, a directory nor a link)."""


class TaskEnvironmentError(MlmdCacheError):
    """A task's environment cannot be had: a requirement not found, no index reachable, an image
    that cannot be pulled, Docker not answering."""
