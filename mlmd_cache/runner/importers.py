"""``dsl.importer`` tasks and pipeline-level input artifacts: an artifact of a URI, reused when the
store already has a LIVE one of that URI and type (``reimport=False``), so downstream cache keys stay
the same, else created. Importers are never cached and run nothing."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from google.protobuf import json_format
from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import limits, records
from ..cache.execution_cache import ExecutionCache, PipelineRun
from ..errors import InvalidArgumentError
from ..pipeline.spec import pipeline_spec_pb2
from .containers import executor_input, runtime_artifact
from .inputs import ResolvedInputs

__all__ = ["run_importer", "importer_uri", "existing_artifact", "pipeline_input_artifacts", "write_input_artifacts"]


def existing_artifact(cache: ExecutionCache, uri: str, schema_title: str, owner: str) -> Optional[mlmd.Artifact]:
    """The LIVE artifact of ``uri`` and type (the newest) that an import with ``reimport=False``
    reuses, or None. Only reads: a plan (:mod:`mlmd_cache.runner.plan`) asks it too."""
    # an importer's URI may come from a parameter, known only now: checked before MLMD sees it
    limits.check_text(f"task {owner!r}: artifact URI", uri, limits.store_backend(cache.store))
    try:
        type_id = cache.store.get_artifact_type(schema_title or "system.Artifact").id
    except mlmd_errors.NotFoundError:  # no artifact of the type yet
        return None
    existing = [a for a in cache.store.get_artifacts_by_uri(uri)
                if a.type_id == type_id and a.state == mlmd.Artifact.LIVE]
    return max(existing, key=lambda a: a.id) if existing else None


def _artifact_of_uri(cache: ExecutionCache, uri: str, schema_title: str, reimport: bool,
                     metadata: Mapping[str, Any], owner: str, *, find_only: bool = False) -> mlmd.Artifact:
    """The LIVE artifact of ``uri`` and type (the newest), or a new one, not yet written (with
    ``find_only``, a new one has no type ID either: nothing is registered)."""
    if not reimport:
        existing = existing_artifact(cache, uri, schema_title, owner)
        if existing is not None:
            return existing
    else:
        limits.check_text(f"task {owner!r}: artifact URI", uri, limits.store_backend(cache.store))
    artifact = mlmd.Artifact(uri=uri, state=mlmd.Artifact.LIVE)
    if not find_only:
        artifact.type_id = cache.types.artifact_type(schema_title or "system.Artifact")
    artifact.custom_properties[records.DISPLAY_NAME].string_value = "artifact"
    kept = {key: value for key, value in metadata.items()
            if isinstance(value, (bool, int, float, str, dict))}  # lists: no MLMD value type holds them
    for key, value in records.metadata_properties(owner, kept).items():
        artifact.custom_properties[key].CopyFrom(value)
    return artifact


def importer_uri(importer: Any, component: pipeline_spec_pb2.ComponentSpec, inputs: ResolvedInputs) -> str:
    """The URI an importer imports, with its inputs (a parameter may give it) resolved."""
    # Here, not at the top: kfp.local runs kfp/__init__.py, the whole KFP SDK (about half a second),
    # which a run that imports nothing (its tasks all cached) does not pay for.
    from kfp.local import importer_handler

    return importer_handler.get_importer_uri(importer, executor_input(component, inputs, ""))


def run_importer(cache: ExecutionCache, run: PipelineRun, name: str, task_spec: pipeline_spec_pb2.PipelineTaskSpec,
                 component: pipeline_spec_pb2.ComponentSpec, importer: Any, inputs: ResolvedInputs,
                 parent_dag_id: int, pipeline_root: str) -> tuple[int, dict[str, list[pipeline_spec_pb2.RuntimeArtifact]]]:
    """Record the importer as KFP's importer launcher does: a ``system.ImporterExecution`` whose
    OUTPUT event ``artifact`` points at the artifact. Returns the execution ID and the outputs."""
    from kfp.local import executor_input_utils, placeholder_utils  # here: the KFP SDK (see importer_uri)

    message = executor_input(component, inputs, "")
    uri = importer_uri(importer, component, inputs)
    metadata = placeholder_utils.recursively_resolve_json_dict_placeholders(
        json_format.MessageToDict(importer.metadata),
        executor_input_dict=executor_input_utils.executor_input_to_dict(message, component),
        pipeline_resource_name=run.name, task_resource_name=name, pipeline_root=pipeline_root,
        pipeline_job_id=run.name, pipeline_task_id=name)
    artifact = _artifact_of_uri(cache, uri, importer.type_schema.schema_title, importer.reimport, metadata, name)
    execution = mlmd.Execution(type_id=cache.types.execution_type(records.IMPORTER_EXECUTION_TYPE),
                               last_known_state=mlmd.Execution.COMPLETE)
    properties = execution.custom_properties
    properties[records.DISPLAY_NAME].string_value = task_spec.task_info.name or name
    properties[records.TASK_NAME].string_value = name
    properties[records.PARENT_DAG_ID].int_value = parent_dag_id
    properties[records.INPUTS].CopyFrom(records.struct_value(inputs.parameters))
    event = mlmd.Event(type=mlmd.Event.OUTPUT)
    event.path.steps.add(key="artifact")
    execution_id, [artifact.id], _ = cache.store.put_execution(
        execution, [(artifact, event)], [run.pipeline_context, run.run_context], force_reuse_context=True)
    return execution_id, {"artifact": [runtime_artifact(artifact, importer.type_schema)]}


def pipeline_input_artifacts(cache: ExecutionCache, root: pipeline_spec_pb2.ComponentSpec,
                             given: Mapping[str, Union[int, str]], pipeline: str, *,
                             find_only: bool = False) -> dict[str, mlmd.Artifact]:
    """The pipeline's input artifacts by name, checked before anything is written: an ``int`` is an
    MLMD artifact ID (it must exist, be usable and be of the declared type), a ``str`` a URI
    (imported as ``dsl.importer`` does; the returned artifact has no ID yet when it is new).
    ``find_only`` (a plan) only reads: no artifact type is registered for a new one."""
    declared = root.input_definitions.artifacts
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidArgumentError(f"pipeline {pipeline!r} has no input artifact {unknown[0]!r} "
                                   f"(input artifacts: {', '.join(sorted(declared)) or 'none'})")
    missing = sorted(name for name, spec in declared.items() if name not in given and not spec.is_optional)
    if missing:
        raise InvalidArgumentError(f"pipeline {pipeline!r} needs input artifact {missing[0]!r} "
                                   "(--artifact NAME=ID or NAME=URI)")
    found: dict[str, mlmd.Artifact] = {}
    for name, value in given.items():
        schema_title = declared[name].artifact_type.schema_title or "system.Artifact"
        if isinstance(value, int):
            artifacts = cache.store.get_artifacts_by_id([value])
            if not artifacts:
                raise InvalidArgumentError(f"input artifact {name!r}: no MLMD artifact with ID {value}")
            artifact = artifacts[0]
            [artifact_type] = cache.store.get_artifact_types_by_id([artifact.type_id])
            if schema_title != "system.Artifact" and artifact_type.name != schema_title:
                raise InvalidArgumentError(f"input artifact {name!r}: artifact {value} is a {artifact_type.name}, "
                                           f"not a {schema_title}")
            if artifact.state != mlmd.Artifact.LIVE and artifact.state != mlmd.Artifact.UNKNOWN:
                raise InvalidArgumentError(f"input artifact {name!r}: artifact {value} is "
                                           f"{mlmd.Artifact.State.Name(artifact.state)}")
        else:
            if not value:
                raise InvalidArgumentError(f"input artifact {name!r}: an empty URI")
            artifact = _artifact_of_uri(cache, value, schema_title, False, {}, name, find_only=find_only)
        found[name] = artifact
    return found


def write_input_artifacts(cache: ExecutionCache, artifacts: Mapping[str, mlmd.Artifact],
                          root: pipeline_spec_pb2.ComponentSpec) -> dict[str, list[pipeline_spec_pb2.RuntimeArtifact]]:
    """Write the new ones of :func:`pipeline_input_artifacts` and return all as the root DAG's inputs."""
    new = [artifact for artifact in artifacts.values() if not artifact.HasField("id")]
    if new:
        for artifact, artifact_id in zip(new, cache.store.put_artifacts(new)):
            artifact.id = artifact_id
    return {name: [runtime_artifact(artifact, root.input_definitions.artifacts[name].artifact_type)]
            for name, artifact in artifacts.items()}
