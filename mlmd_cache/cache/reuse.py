"""A hit recorded: a CACHED execution of a task reusing a source's outputs, built and checked first
(:func:`cached_record`), then written with others in one transaction (:func:`write_cached`): on a
disk-backed store each commit costs milliseconds, and a cached re-run is all such records."""
from __future__ import annotations

from typing import Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import NotFoundError
from ..store import records
from . import writes
from .model import CachedRecord, CacheHit, PipelineRun, Task, TaskExecution

__all__ = ["cached_record", "write_cached"]


def cached_record(store: metadata_store.MetadataStore, types: records.TypeRegistry, run: PipelineRun, task: Task,
                  hit: CacheHit) -> CachedRecord:
    """The CACHED execution of ``task`` (keyed as ``run`` keys it) reusing ``hit``, checked (every
    input artifact exists) but not yet written: the execution with ``cached_execution_id`` and the
    source's ``outputs``, INPUT events for the task's inputs and OUTPUT events to the source's very
    artifacts (same IDs, same path keys)."""
    execution = writes.task_execution(store, types, task, mlmd.Execution.CACHED, task.fingerprint)
    execution.custom_properties[records.CACHED_EXECUTION_ID].string_value = str(hit.source.id)
    execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(hit.output_parameters))
    events = [event for _, event in writes.input_events(store, task)] + [
        writes.event(mlmd.Event.OUTPUT, name, artifact.id)
        for name, artifacts in hit.output_artifacts.items()
        for artifact in artifacts
    ]
    return CachedRecord(TaskExecution(execution, run, task, hit.output_artifacts, dict(hit.output_parameters)), events)


def write_cached(store: metadata_store.MetadataStore, run: PipelineRun, pending: Sequence[CachedRecord]) -> None:
    """Write CACHED records in one transaction (``put_lineage_subgraph``) and set their IDs.

    The records are what ``put_execution`` writes for each, attributions included: every artifact
    of an event is attributed to the run's contexts. ``put_lineage_subgraph`` attributes only the
    artifacts it is given, and upserts them, so they are read just before and given as stored
    (an unchanged upsert writes nothing), as are the two contexts."""
    if not pending:
        return
    wanted = sorted({event.artifact_id for record in pending for event in record.events})
    artifacts = store.get_artifacts_by_id(wanted) if wanted else []
    index = {artifact.id: position for position, artifact in enumerate(artifacts)}
    missing = [artifact_id for artifact_id in wanted if artifact_id not in index]
    if missing:
        raise NotFoundError(f"no MLMD artifact with ID {missing[0]}: it was in the store when the cache was "
                            "looked up")
    context_ids = [run.pipeline_context.id, run.run_context.id]
    contexts = {context.id: context for context in store.get_contexts_by_id(context_ids)}
    if len(contexts) != len(context_ids):
        raise NotFoundError(f"the contexts of run {run.name!r} are gone from the store")
    edges = []
    for position, record in enumerate(pending):
        for event in record.events:
            edge = mlmd.Event()
            edge.CopyFrom(event)
            edge.ClearField("artifact_id")
            edges.append((position, index[event.artifact_id], edge))
    ids, _, _ = store.put_lineage_subgraph(
        [record.done.execution for record in pending], artifacts, [contexts[i] for i in context_ids], edges)
    for record, execution_id in zip(pending, ids):
        record.done.execution.id = execution_id
