"""The records of one task execution as :class:`~mlmd_cache.ExecutionCache` writes them: the
execution with KFP's custom properties, its INPUT events, its new output artifacts and their
OUTPUT events, each checked (names, sizes, what the backend can hold) before anything is written;
and its life: started RUNNING (:func:`start`), then COMPLETE (:func:`publish`) or FAILED
(:func:`fail`), and RUNNING again for another attempt (:func:`restart`)."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .._messages import mlmd_stderr_captured
from ..errors import ExecutionStateError, NotFoundError, OutputError
from ..store import limits, records
from ..store.source_records import new_source_context
from . import digests
from .model import Outputs, PipelineRun, Task, TaskExecution, caching_enabled
from .recovery import RUNNER, runner_identity

__all__ = ["event", "unique_events", "input_events", "task_execution", "output_artifacts", "start", "stored_in_state",
           "publish", "fail", "restart"]


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


def input_events(store: metadata_store.MetadataStore, task: Task) -> list[tuple[None, mlmd.Event]]:
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


def task_execution(store: metadata_store.MetadataStore, types: records.TypeRegistry, task: Task, state: int,
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


def output_artifacts(store: metadata_store.MetadataStore, types: records.TypeRegistry, task: Task,
                     outputs: Outputs) -> list[tuple[mlmd.Artifact, mlmd.Event]]:
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
            for key, value in records.metadata_properties(name, outputs.metadata.get(name, {})).items():
                artifact.custom_properties[key].CopyFrom(value)
            pairs.append((artifact, event(mlmd.Event.OUTPUT, name)))
    return pairs


def start(store: metadata_store.MetadataStore, types: records.TypeRegistry, run: PipelineRun, task: Task,
          miss_reason: Optional[str] = None, reservation: Optional[mlmd.Context] = None) -> TaskExecution:
    """Record a RUNNING execution of ``task`` (keyed as ``run`` keys it) with INPUT events, its
    fingerprint when caching is on (as KFP does) and the calling process as its ``runner``
    (:mod:`.recovery` tells from it whether a RUNNING execution was left by a runner that was
    killed). ``miss_reason`` is kept for ``explain``. A new ``reservation`` context
    (:func:`.leases.new_reservation`) is written with it: if its name is taken, MLMD's
    ``AlreadyExistsError`` is raised and nothing is written (:func:`.dedup.claim` handles that)."""
    fingerprint = task.fingerprint if caching_enabled(run, task) else None
    execution = task_execution(store, types, task, mlmd.Execution.RUNNING, fingerprint)
    execution.custom_properties[RUNNER].string_value = runner_identity()
    if miss_reason:
        execution.custom_properties[records.MISS_REASON].string_value = limits.storable_text(
            miss_reason, limits.store_backend(store))
    contexts = [run.pipeline_context, run.run_context] + ([reservation] if reservation is not None else [])
    events = input_events(store, task)
    with mlmd_stderr_captured() if reservation is not None else contextlib.nullcontext():
        # a reservation another runner took is an AlreadyExistsError, whose C++ log is no news
        execution.id, _, context_ids = store.put_execution(
            execution, events, contexts, force_reuse_context=True, reuse_context_if_already_exist=False)
    if reservation is not None:
        reservation = mlmd.Context(id=context_ids[-1], type_id=reservation.type_id, name=reservation.name,
                                   custom_properties=reservation.custom_properties)
    return TaskExecution(execution, run, task, reservation=reservation)


def stored_in_state(store: metadata_store.MetadataStore, started: TaskExecution,
                    expected: int = mlmd.Execution.RUNNING) -> mlmd.Execution:
    """The execution as stored, which must be in state ``expected`` (RUNNING unless said)."""
    found = store.get_executions_by_id([started.id])
    if not found:
        raise NotFoundError(f"execution {started.id} does not exist")
    execution = found[0]
    if execution.last_known_state != expected:
        state = mlmd.Execution.State.Name(execution.last_known_state)
        raise ExecutionStateError(f"execution {started.id} is {state}, not {mlmd.Execution.State.Name(expected)}")
    return execution


def publish(store: metadata_store.MetadataStore, types: records.TypeRegistry, started: TaskExecution,
            outputs: Outputs) -> TaskExecution:
    """Complete a RUNNING execution: new LIVE output artifacts, OUTPUT events and the output
    parameters, in one atomic write. With caching on it becomes a cache source (a member of its
    key's ``mlmd_cache.CacheSource`` context)."""
    task = started.task
    declared_parameters = set(task.key.output_parameter_types)
    if set(outputs.parameters) != declared_parameters:
        raise OutputError(f"task {task.name!r} declares output parameters {sorted(declared_parameters)}, "
                          f"got {sorted(outputs.parameters)}")
    pairs = output_artifacts(store, types, task, outputs)
    if started.run.uses_digests:  # before the write: bytes that cannot be read leave the execution RUNNING
        for artifact, output in pairs:
            digests.record_digest(artifact, f"task {task.name!r}, output {output.path.steps[0].key!r}")
    execution = stored_in_state(store, started)
    execution.last_known_state = mlmd.Execution.COMPLETE
    execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(outputs.parameters))
    contexts = [started.run.pipeline_context, started.run.run_context]
    fingerprint = records.read_property(execution, records.CACHE_FINGERPRINT)
    if fingerprint:
        contexts.append(new_source_context(
            types.context_type(records.CACHE_SOURCE_CONTEXT_TYPE), started.run.pipeline, fingerprint))
    _, artifact_ids, _ = store.put_execution(
        execution, pairs, contexts, reuse_context_if_already_exist=True, force_reuse_context=True
    )
    by_name: dict[str, list[mlmd.Artifact]] = {}
    for (artifact, output), artifact_id in zip(pairs, artifact_ids):
        artifact.id = artifact_id
        by_name.setdefault(output.path.steps[0].key, []).append(artifact)
    if started.run.uses_digests:
        digests.remember(started.run.verified_digests, by_name)
    return replace(started, execution=execution, output_artifacts=by_name, output_parameters=dict(outputs.parameters))


def fail(store: metadata_store.MetadataStore, started: TaskExecution,
         stderr_log: Optional[str] = None) -> TaskExecution:
    """Mark a RUNNING execution FAILED. A failed execution is never a cache source. ``stderr_log``:
    the path of the failed attempt's stderr, recorded in the same write (``explain`` shows it)."""
    execution = stored_in_state(store, started)
    execution.last_known_state = mlmd.Execution.FAILED
    if stderr_log:
        execution.custom_properties[records.STDERR_LOG].string_value = limits.storable_text(
            stderr_log, limits.store_backend(store))
    store.put_executions([execution])
    return replace(started, execution=execution)


def restart(store: metadata_store.MetadataStore, failed: TaskExecution) -> TaskExecution:
    """Mark a FAILED execution RUNNING again for another attempt of its task (``set_retry``): as
    KFP does, every attempt reuses the task's one execution."""
    execution = stored_in_state(store, failed, expected=mlmd.Execution.FAILED)
    execution.last_known_state = mlmd.Execution.RUNNING
    execution.custom_properties[RUNNER].string_value = runner_identity()
    store.put_executions([execution])
    return replace(failed, execution=execution)
