"""The MLMD records KFP v2 writes, by name, and the few records of our own beside them.

KFP's names come from ``backend/src/v2/metadata/client.go``; a store written through this package
reads, in KFP's UI and in any KFP tool, like one written by KFP itself.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from google.protobuf import json_format
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .errors import OutputError

__all__ = [
    "PIPELINE_CONTEXT_TYPE",
    "RUN_CONTEXT_TYPE",
    "CONTAINER_EXECUTION_TYPE",
    "DAG_EXECUTION_TYPE",
    "IMPORTER_EXECUTION_TYPE",
    "CACHE_SOURCE_CONTEXT_TYPE",
    "TypeRegistry",
    "cache_source_context_name",
]

PIPELINE_CONTEXT_TYPE = "system.Pipeline"
RUN_CONTEXT_TYPE = "system.PipelineRun"
CONTAINER_EXECUTION_TYPE = "system.ContainerExecution"
DAG_EXECUTION_TYPE = "system.DAGExecution"
IMPORTER_EXECUTION_TYPE = "system.ImporterExecution"

# Execution custom properties, as KFP names them.
DISPLAY_NAME = "display_name"
TASK_NAME = "task_name"
IMAGE = "image"
CACHE_FINGERPRINT = "cache_fingerprint"
CACHED_EXECUTION_ID = "cached_execution_id"
INPUTS = "inputs"
OUTPUTS = "outputs"
PARENT_DAG_ID = "parent_dag_id"
PIPELINE_ROOT = "pipeline_root"

# Our own records. A context of this type groups the executions that are valid cache sources for one
# fingerprint in one pipeline: lookup is one indexed read by (type, name) and one by context, so its
# cost depends neither on the size of the store nor on how many CACHED executions reused the key.
CACHE_SOURCE_CONTEXT_TYPE = "mlmd_cache.CacheSource"
# The full cache key (struct, so it is not an indexed string) kept with every execution.
CACHE_KEY = "mlmd_cache_key"
SOURCE_PIPELINE = "pipeline_name"


def cache_source_context_name(pipeline: str, fingerprint: str) -> str:
    """A fixed-length name (64 hex) for the cache-source context of a fingerprint in a pipeline:
    pipeline names may be long or hold any character, and context names are indexed strings."""
    return hashlib.sha256(f"{pipeline}\x00{fingerprint}".encode("utf-8")).hexdigest()


def string_value(text: str) -> mlmd.Value:
    return mlmd.Value(string_value=text)


def struct_value(document: Mapping[str, Any]) -> mlmd.Value:
    value = mlmd.Value()
    json_format.ParseDict(dict(document), value.struct_value)
    return value


def metadata_value(artifact: str, key: str, value: Any) -> mlmd.Value:
    """An artifact metadata entry as the MLMD custom property value KFP records for it."""
    if isinstance(value, bool):
        return mlmd.Value(bool_value=value)
    if isinstance(value, int):
        return mlmd.Value(int_value=value)
    if isinstance(value, float):
        return mlmd.Value(double_value=value)
    if isinstance(value, str):
        return mlmd.Value(string_value=value)
    if isinstance(value, Mapping):
        return struct_value(value)
    raise OutputError(f"artifact {artifact!r}: metadata {key!r} has unsupported type {type(value).__name__}")


def read_struct(value: mlmd.Value) -> dict[str, Any]:
    return json_format.MessageToDict(value.struct_value) if value.HasField("struct_value") else {}


def read_property(node: Any, name: str) -> Any:
    """A custom property of an MLMD node as a Python value, or None when it is not set."""
    if name not in node.custom_properties:
        return None
    value = node.custom_properties[name]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        return json_format.MessageToDict(value.struct_value)
    return getattr(value, kind) if kind else None


class TypeRegistry:
    """Type IDs of one store, registered on first use and then served from memory."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self._store = store
        self._ids: dict[tuple[str, str], int] = {}

    def _get(self, kind: str, name: str) -> int:
        type_id = self._ids.get((kind, name))
        if type_id is None:
            if kind == "execution":
                type_id = self._store.put_execution_type(mlmd.ExecutionType(name=name), can_omit_fields=True)
            elif kind == "context":
                type_id = self._store.put_context_type(mlmd.ContextType(name=name), can_omit_fields=True)
            else:
                type_id = self._store.put_artifact_type(mlmd.ArtifactType(name=name), can_omit_fields=True)
            self._ids[(kind, name)] = type_id
        return type_id

    def execution_type(self, name: str) -> int:
        return self._get("execution", name)

    def context_type(self, name: str) -> int:
        return self._get("context", name)

    def artifact_type(self, name: str) -> int:
        return self._get("artifact", name)

