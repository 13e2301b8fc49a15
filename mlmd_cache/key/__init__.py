"""The cache key: KFP's ``CacheKey`` message built from a task, hashed as KFP's launcher does.

Owns :mod:`.cache_key` (:class:`CacheKey`, :func:`custom_fingerprint`, kfp-pipeline-spec's messages
loaded without the KFP SDK), :mod:`.gojson` (Go's ``encoding/json`` for the bytes that are hashed)
and :mod:`.json_values` (parameter values as KFP's protobuf ``Value`` holds them).

May import: the base modules (:mod:`mlmd_cache.errors`) only. Nothing here reads a store.

``from mlmd_cache.key import CacheKey`` works as it did when this was one module: the names below
are imported on first use.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {name: "cache_key" for name in (
    "ArtifactTypeSchema", "CacheKey", "CacheKeyError", "CacheKeyMessage", "OutputArtifactSpec", "RuntimeArtifact",
    "custom_fingerprint", "pipeline_spec_pb2")}

__all__ = ["ArtifactTypeSchema", "CacheKey", "RuntimeArtifact", "custom_fingerprint"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
