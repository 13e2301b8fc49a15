"""Records as KFP itself writes them into MLMD, without mlmd-cache's own: the stores that
``ExecutionCache.index_sources`` and ``mlmd-cache index`` are for."""
from __future__ import annotations

from typing import Optional, Sequence

from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import ExecutionCache

PIPELINE = "kfp-pipeline"


def record_as_kfp(cache: ExecutionCache, run: str, task: str, state: int, fingerprint: str = "",
                  outputs: Sequence[int] = (), new_output_uri: str = "", cached_from: int = 0,
                  parameters: Optional[dict] = None) -> int:
    """An execution recorded as KFP's driver and launcher record it (backend/src/v2/metadata): its
    pipeline and run contexts, KFP's custom properties, OUTPUT events; none of mlmd-cache's own
    records. Returns its ID."""
    store, types = cache.store, cache.types
    pipeline = store.get_context_by_type_and_name("system.Pipeline", PIPELINE)
    if pipeline is None:
        [pipeline_id] = store.put_contexts([mlmd.Context(type_id=types.context_type("system.Pipeline"),
                                                         name=PIPELINE)])
    else:
        pipeline_id = pipeline.id
    run_context = store.get_context_by_type_and_name("system.PipelineRun", run)
    if run_context is None:
        [run_id] = store.put_contexts([mlmd.Context(type_id=types.context_type("system.PipelineRun"), name=run)])
        store.put_parent_contexts([mlmd.ParentContext(child_id=run_id, parent_id=pipeline_id)])
        run_context = store.get_contexts_by_id([run_id])[0]
    execution = mlmd.Execution(type_id=types.execution_type("system.ContainerExecution"), last_known_state=state)
    for name, value in (("task_name", task), ("display_name", task), ("image", "python:3.11"),
                        ("cache_fingerprint", fingerprint), ("cached_execution_id", str(cached_from or ""))):
        if value:
            execution.custom_properties[name].string_value = value
    if parameters is not None:
        execution.custom_properties["outputs"].struct_value.update(parameters)
    pairs = []
    for artifact_id in outputs:
        event = mlmd.Event(type=mlmd.Event.OUTPUT, artifact_id=artifact_id)
        event.path.steps.add(key="model")
        pairs.append((None, event))
    if new_output_uri:
        artifact = mlmd.Artifact(type_id=types.artifact_type("system.Model"), uri=new_output_uri, state=mlmd.Artifact.LIVE)
        event = mlmd.Event(type=mlmd.Event.OUTPUT)
        event.path.steps.add(key="model")
        pairs.append((artifact, event))
    execution_id, _, _ = store.put_execution(execution, pairs, [store.get_contexts_by_id([pipeline_id])[0], run_context],
                                             reuse_context_if_already_exist=True)
    return execution_id
