"""The MLMD records KFP v2 writes, by name, and the few records of our own beside them.

KFP's names come from ``backend/src/v2/metadata/client.go``; a store written through this package
reads, in KFP's UI and in any KFP tool, like one written by KFP itself.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Optional

from google.protobuf import json_format
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .._messages import mlmd_stderr_captured
from ..errors import OutputError

__all__ = [
    "PIPELINE_CONTEXT_TYPE",
    "RUN_CONTEXT_TYPE",
    "CONTAINER_EXECUTION_TYPE",
    "DAG_EXECUTION_TYPE",
    "IMPORTER_EXECUTION_TYPE",
    "CACHE_SOURCE_CONTEXT_TYPE",
    "TypeRegistry",
    "task_metadata",
    "metadata_properties",
    "cache_source_context_name",
    "filter_string",
    "filter_matching",
    "task_paths",
    "context_type_id",
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
ITERATION_INDEX = "iteration_index"  # a loop iteration's DAG (the loop's own DAG has iteration_count)

# Our own records. A context of this type groups the executions that are valid cache sources for one
# fingerprint in one pipeline: lookup is one indexed read by (type, name) and one by context, so its
# cost depends neither on the size of the store nor on how many CACHED executions reused the key.
CACHE_SOURCE_CONTEXT_TYPE = "mlmd_cache.CacheSource"
# The full cache key (struct, so it is not an indexed string) kept with every execution.
CACHE_KEY = "mlmd_cache_key"
# Why a lookup passed over the sources of an identical key (invalid outputs, too old, ...), kept with
# the execution that ran instead, so that ``mlmd-lineage explain`` can say it exactly afterwards.
MISS_REASON = "mlmd_cache_miss_reason"
# The path of a failed task's stderr (its last attempt's), written by run-pipeline with FAILED: only
# the runner knows its run's pipeline root and the attempt, and explain shows the log's last lines.
STDERR_LOG = "mlmd_cache_stderr_log"
SOURCE_PIPELINE = "pipeline_name"
# The exact value of each float in an artifact's metadata (``metrics.log_metric``, ``artifact.metadata``)
# that a store may not keep as it is: a struct of ``repr`` texts by key, beside KFP's double custom
# property of the same key. ML Metadata (1.17.1, 1.21) keeps a double to six decimal places on every
# backend (1.2345678901e-7 reads back 0.0): KFP's record stays as KFP writes it, for KFP's tools, and
# mlmd-cache reads the exact value from here.
EXACT_METADATA = "mlmd_cache_exact_metadata"


def cache_source_context_name(pipeline: str, fingerprint: str) -> str:
    """A fixed-length name (64 hex) for the cache-source context of a fingerprint in a pipeline:
    pipeline names may be long or hold any character, and context names are indexed strings."""
    return hashlib.sha256(f"{pipeline}\x00{fingerprint}".encode("utf-8")).hexdigest()


# ZetaSQL's escapes for the characters that may not stand for themselves in a quoted literal.
_ZETASQL_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
                    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def filter_string(value: str) -> str:
    """``value`` as a quoted ZetaSQL string literal for an MLMD ``filter_query``: the one way text
    from users or from the store goes into a filter.

    MLMD parses a filter with ZetaSQL, so this is ZetaSQL's syntax: backslash, both quotes and
    control characters are escaped (``\\n``, ``\\x01``, ``\\u2028``), everything else stands for
    itself. That makes every value one literal to ZetaSQL, never an operator. It is not enough for
    an exact match: see :func:`filter_matching`, which is what queries by a user's text use."""
    if not isinstance(value, str):
        raise TypeError(f"filter_string takes text, not {type(value).__name__}")
    out = []
    for char in value:
        if char in _ZETASQL_ESCAPES:
            out.append(_ZETASQL_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "'" + "".join(out) + "'"


# Characters that mean the same in ZetaSQL and in the SQL of SQLite, MySQL and PostgreSQL, inside a
# quoted literal and in a LIKE pattern.
def _plain(char: str) -> bool:
    return char.isprintable() and char not in "'\"\\%_"


def filter_matching(field: str, value: str) -> str:
    """A ``filter_query`` condition true for every record whose string ``field`` equals ``value``,
    and possibly for others: compare the records it returns with ``value`` exactly.

    An exact ``field = 'value'`` filter is not exact on MLMD 1.17.1. MLMD prints the parsed literal
    back, ZetaSQL-escaped, into the database's SQL, where SQLite and PostgreSQL read backslashes as
    themselves (``a\\b`` is not found; a value holding both kinds of quote ends its literal early:
    an error, or a condition of the user's making), and MySQL compares without case and trailing
    spaces (``A`` finds ``a`` and ``a ``). So this is a LIKE pattern in which every character that
    is not plain (a quote, a backslash, ``%``, ``_``, a control character) becomes the ``%``
    wildcard: the literal is then the same in ZetaSQL and in every database's SQL."""
    pattern = []
    for char in value:
        if _plain(char):
            pattern.append(char)
        elif not pattern or pattern[-1] != "%":
            pattern.append("%")
    return f"{field} LIKE {filter_string(''.join(pattern))}"


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


def _kept(value: float) -> bool:
    """Whether every store keeps ``value`` as it is (six decimal places, 15 significant digits): 3.0,
    0.5, 0.25, but not 0.1234567 nor 1234567890.5."""
    return abs(value) < 1e15 and float(f"{value:.6f}") == value and float(f"{value:.15g}") == value


def metadata_properties(artifact: str, metadata: Mapping[str, Any]) -> dict[str, mlmd.Value]:
    """An artifact's metadata as the custom properties recorded for it: KFP's (see
    :func:`metadata_value`), and :data:`EXACT_METADATA` when any value is a float."""
    properties = {key: metadata_value(artifact, key, value) for key, value in metadata.items()}
    exact = {key: repr(value) for key, value in metadata.items() if isinstance(value, float) and not _kept(value)}
    if exact:
        properties[EXACT_METADATA] = struct_value(exact)
    return properties


_MYSQL_DOUBLE_LIMIT = 1e65


def _exact(stored: float, text: Any) -> Optional[float]:
    """The exact value ``text`` (a ``repr``) of a double custom property that reads back ``stored``,
    or None when it does not stand for it (not a float's text, or a value someone wrote over
    KFP's since): it must agree with ``stored`` as far as MLMD 1.17.1 keeps a double, which is six
    decimal places and 15 significant digits, within +-1e65 on MySQL (1e300 reads back 1e65)."""
    try:
        exact = float(text)
    except (TypeError, ValueError):
        return None
    if exact == stored or math.isclose(exact, stored, rel_tol=1e-12, abs_tol=1e-6):
        return exact
    if abs(exact) > _MYSQL_DOUBLE_LIMIT and math.isclose(stored, math.copysign(_MYSQL_DOUBLE_LIMIT, exact), rel_tol=1e-12):
        return exact
    return None


def exact_doubles(node: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (custom properties of ``node`` read as Python values) with each double replaced by
    its exact value from :data:`EXACT_METADATA`, when recorded. Values KFP itself wrote (no exact
    record) are left as they are."""
    if EXACT_METADATA not in node.custom_properties:
        return dict(values)
    recorded = read_struct(node.custom_properties[EXACT_METADATA])
    result = dict(values)
    for key, text in recorded.items():
        if key not in result or key not in node.custom_properties:
            continue
        value = node.custom_properties[key]
        if value.WhichOneof("value") != "double_value":
            continue
        exact = _exact(value.double_value, text)
        if exact is not None:
            result[key] = exact
    return result


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


def task_metadata(artifact: mlmd.Artifact) -> dict[str, Any]:
    """The metadata a task gave its output artifact (``artifact.metadata[...]``,
    ``metrics.log_metric``): its custom properties but KFP's ``display_name`` and mlmd-cache's own
    records (``mlmd_cache_digest``, ...), which are no task's."""
    return exact_doubles(artifact, {key: read_property(artifact, key) for key in sorted(artifact.custom_properties)
                                    if key != DISPLAY_NAME and not key.startswith("mlmd_cache_")})


class TypeRegistry:
    """Type IDs of one store, registered on first use and then served from memory.

    MLMD makes a type by reading it by name and inserting it when there is none; its MySQL and
    PostgreSQL schemas hold no unique key on the name, so two processes that make one type at
    once on a new store make two of it, and records of one are not found by the other (nor by
    name). So a type this registry makes has ``external_id`` ``mlmd_cache:<kind>:<name>``, which
    MLMD keeps unique: the second insert fails, and the type the first made is read instead.
    (KFP's own puts of the ``system.*`` types accept a stored type with an external ID.)
    """

    _PUT = {"execution": ("put_execution_type", "get_execution_type", mlmd.ExecutionType),
            "context": ("put_context_type", "get_context_type", mlmd.ContextType),
            "artifact": ("put_artifact_type", "get_artifact_type", mlmd.ArtifactType)}

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self._store = store
        self._ids: dict[tuple[str, str], int] = {}

    def _get(self, kind: str, name: str) -> int:
        type_id = self._ids.get((kind, name))
        if type_id is None:
            put, get, message = self._PUT[kind]
            try:
                existing = getattr(self._store, get)(name)
            except mlmd_errors.NotFoundError:
                existing = None
            if existing is not None:
                type_id = existing.id
            else:
                try:
                    with mlmd_stderr_captured():  # the C++ log of a lost race is no news
                        type_id = getattr(self._store, put)(message(name=name, external_id=f"mlmd_cache:{kind}:{name}"),
                                                            can_omit_fields=True)
                except mlmd_errors.StatusError:  # made meanwhile by another process (its external_id is taken)
                    type_id = getattr(self._store, get)(name).id
            self._ids[(kind, name)] = type_id
        return type_id

    def execution_type(self, name: str) -> int:
        return self._get("execution", name)

    def context_type(self, name: str) -> int:
        return self._get("context", name)

    def artifact_type(self, name: str) -> int:
        return self._get("artifact", name)



def context_type_id(store: metadata_store.MetadataStore, name: str) -> Optional[int]:
    """The ID of the context type ``name``, or None when the store has none (nothing of it written)."""
    try:
        return store.get_context_type(name).id
    except mlmd_errors.NotFoundError:
        return None


def task_paths(store: metadata_store.MetadataStore, executions: list[mlmd.Execution]) -> dict[int, str]:
    """Each execution's task path in its run, as ``run-pipeline`` reports it: the ``task_name`` of
    every enclosing DAG but the run's root, a loop iteration as its index (``for-loop-2/0/train``;
    KFP names an iteration's DAG as its loop, so without the index two iterations read the same).
    The enclosing DAGs are read by ``parent_dag_id``, a level at a time; a root DAG's path is "".
    For example, execution 12, task ``train`` in iteration 0 of loop ``for-loop-2``:
    ``{12: 'for-loop-2/0/train'}``.
    """
    known = {execution.id: execution for execution in executions}
    wanted = {int(read_property(e, PARENT_DAG_ID) or 0) for e in executions} - set(known) - {0}
    while wanted:
        found = store.get_executions_by_id(sorted(wanted))
        known.update((execution.id, execution) for execution in found)
        wanted = {int(read_property(e, PARENT_DAG_ID) or 0) for e in found} - set(known) - {0}
        wanted -= {e.id for e in found}  # a missing parent ends its chain (a store edited by hand)

    def path(execution: mlmd.Execution) -> str:
        parts, seen, current = [], set(), execution
        while current is not None and current.id not in seen:
            seen.add(current.id)
            index = read_property(current, ITERATION_INDEX)
            if index is not None:
                parts.append(str(int(index)))
            elif read_property(current, TASK_NAME):
                parts.append(str(read_property(current, TASK_NAME)))
            current = known.get(int(read_property(current, PARENT_DAG_ID) or 0))
        return "/".join(reversed(parts))

    return {execution.id: path(execution) for execution in executions}
