"""The records of one task execution as :class:`~mlmd_cache.ExecutionCache` writes them: the
execution with KFP's custom properties, its INPUT events, its new output artifacts and their
OUTPUT events; each checked (names, sizes, what the backend can hold) before anything is written."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import digests
from ..store import limits, records
from ..errors import NotFoundError, OutputError

if TYPE_CHECKING:
    from .execution_cache import Outputs, Task

__all__ = ["event", "unique_events", "input_events", "task_execution", "output_artifacts"]


def event(kind: int, name: str, artifact_id: Optional[int] = None) -> mlmd.Event:
    event = mlmd.Event(type=kind)
    if artifact_id is not None:
        event.artifact_id = artifact_id
    event.path.steps.add(key=name)
    return event


def unique_events(kind: int, artifact_ids: Mapping[str, Sequence[int]]) -> list[tuple[None, mlmd.Event]]:
    """An event per artifact, keyed by the first name it comes under: MLMD holds one event of a
    kind per (execution, artifact), so one artifact given to two inputs, or twice in a list (a
    Collected input of cached iterations), is recorded once. The cache key still lists each."""
    seen: set[int] = set()
    events = []
    for name, ids in artifact_ids.items():
        for artifact_id in ids:
            if artifact_id not in seen:
                seen.add(artifact_id)
                events.append((None, event(kind, name, artifact_id)))
    return events


def input_events(store: metadata_store.MetadataStore, task: "Task") -> list[tuple[None, mlmd.Event]]:
    """INPUT events for the task's input artifacts, which must exist: MLMD itself would record an
    event to a missing artifact on some backends, and such an event is a broken lineage."""
    inputs = task.key.input_artifact_ids
    wanted = {artifact_id for ids in inputs.values() for artifact_id in ids}
    if wanted:
        found = {artifact.id for artifact in store.get_artifacts_by_id(sorted(wanted))}
        for name, ids in inputs.items():
            missing = [artifact_id for artifact_id in ids if artifact_id not in found]
            if missing:
                raise NotFoundError(f"task {task.name!r}, input {name!r}: no MLMD artifact with ID {missing[0]}")
    return unique_events(mlmd.Event.INPUT, inputs)


def task_execution(store: metadata_store.MetadataStore, types: records.TypeRegistry, task: "Task", state: int,
                   fingerprint: Optional[str]) -> mlmd.Execution:
    backend = limits.store_backend(store)
    limits.check_text("task name", task.name, backend)
    limits.check_text(f"task {task.name!r}: display name", task.display_name, backend)
    limits.check_text(f"task {task.name!r}: image", task.key.image, backend)
    execution = mlmd.Execution(type_id=types.execution_type(records.CONTAINER_EXECUTION_TYPE),
                               last_known_state=state)
    properties = execution.custom_properties
    properties[records.DISPLAY_NAME].string_value = task.display_name or task.name
    properties[records.TASK_NAME].string_value = task.name
    properties[records.IMAGE].string_value = task.key.image
    properties[records.INPUTS].CopyFrom(records.struct_value(task.key.input_parameters))
    if fingerprint:
        properties[records.CACHE_FINGERPRINT].string_value = fingerprint
    if task.key_mode != digests.KEY_MODE_ID:
        properties[digests.KEY_MODE].string_value = task.key_mode
    if task.parent_dag_id is not None:
        properties[records.PARENT_DAG_ID].int_value = task.parent_dag_id
    stored_key: dict[str, Any] = {"cacheKey": task.key.to_dict()}
    if task.cache_key:
        stored_key.update(customCacheKey=task.cache_key, componentName=task.component_name)
    if task.input_digests is not None:
        stored_key["inputDigests"] = {name: list(names) for name, names in task.input_digests.items()}
    properties[records.CACHE_KEY].CopyFrom(records.struct_value(stored_key))
    return execution


def output_artifacts(store: metadata_store.MetadataStore, types: records.TypeRegistry, task: "Task",
                     outputs: "Outputs") -> list[tuple[mlmd.Artifact, mlmd.Event]]:
    declared = task.key.output_artifact_types
    given = set(outputs.artifacts)
    if given != set(declared):
        raise OutputError(
            f"task {task.name!r} declares output artifacts {sorted(declared)}, got {sorted(given)}"
        )
    unknown_metadata = set(outputs.metadata) - given
    if unknown_metadata:
        raise OutputError(f"task {task.name!r}: metadata for unknown outputs {sorted(unknown_metadata)}")
    backend = limits.store_backend(store)  # checked before anything of the task is written
    for name, uris in outputs.artifacts.items():
        metadata = outputs.metadata.get(name, {})
        texts = [("URI", uri) for uri in ([uris] if isinstance(uris, str) else list(uris))]
        texts += [("metadata key", key) for key in metadata]
        texts += [(f"metadata {key!r}", value) for key, value in metadata.items() if isinstance(value, str)]
        for what, text in texts:
            problem = limits.text_problem(text, backend)
            if problem:
                raise OutputError(f"task {task.name!r}, output {name!r}: {what} {limits.shown(text)} {problem}")
    pairs = []
    for name, uris in outputs.artifacts.items():
        for uri in [uris] if isinstance(uris, str) else list(uris):
            artifact = mlmd.Artifact(
                type_id=types.artifact_type(declared[name]), uri=uri, state=mlmd.Artifact.LIVE
            )
            artifact.custom_properties[records.DISPLAY_NAME].string_value = name
            for key, value in outputs.metadata.get(name, {}).items():
                artifact.custom_properties[key].CopyFrom(records.metadata_value(name, key, value))
            pairs.append((artifact, event(mlmd.Event.OUTPUT, name)))
    return pairs
