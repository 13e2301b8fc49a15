"""Resolving a task's inputs in its DAG's :class:`~.scope.Scope`, as KFP's driver does: constants
(run-time placeholders among them), the DAG's own inputs, upstream outputs, a task's final status,
parameter expression selectors, and the coercion into each input's declared type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


from ..errors import MlmdCacheError
from ..pipeline.spec import pipeline_spec_pb2
from ..pipeline import expressions
from .reports import CACHED, COMPLETE, FAILED, NOT_RUN, SKIPPED
from .scope import ArtifactList, InputError, Pending, Scope, artifact_ids
from .values import RunPlaceholders, coerce, from_protobuf

__all__ = ["ResolvedInputs", "resolve_inputs", "final_status_state"]

# The MLMD state name KFP's PipelineTaskFinalStatus carries, by report state.
_FINAL_STATES = {COMPLETE: "COMPLETE", CACHED: "CACHED", FAILED: "FAILED", NOT_RUN: "FAILED", SKIPPED: "CANCELED"}


@dataclass
class ResolvedInputs:
    """A task's input parameters (Python values) and input artifacts (lists), by input name."""

    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, ArtifactList] = field(default_factory=dict)

    def artifact_ids(self) -> dict[str, list[int]]:
        return artifact_ids(self.artifacts)


def final_status_state(report_state: str) -> str:
    return _FINAL_STATES.get(report_state, "FAILED")


def resolve_inputs(task_name: str, task: pipeline_spec_pb2.PipelineTaskSpec,
                   component: pipeline_spec_pb2.ComponentSpec, scope: Scope, placeholders: RunPlaceholders,
                   parent_dag_id: Optional[int]) -> ResolvedInputs:
    """The task's inputs; an input that cannot be resolved raises :class:`InputError` naming it."""
    declared = component.input_definitions
    resolved = ResolvedInputs()
    for name, spec in task.inputs.parameters.items():
        kind = spec.WhichOneof("kind")
        if kind == "task_output_parameter" and not scope.has_output(spec.task_output_parameter.producer_task,
                                                                     spec.task_output_parameter.output_parameter_key) \
                and _may_be_left_out(declared.parameters.get(name)):
            # ignore_upstream_failure(): an upstream that failed produced nothing; the default stands in.
            continue
        if kind == "component_input_parameter" and spec.component_input_parameter not in scope.inputs:
            continue  # an optional input of the DAG that was not given: the task's default, if any, stands in
        try:
            value = _parameter(name, spec, scope, placeholders, task_name, parent_dag_id)
            if spec.parameter_expression_selector and not isinstance(value, Pending):
                value = expressions.select(spec.parameter_expression_selector, value)
        except MlmdCacheError as error:  # InputError, or an ExpressionError of the selector
            raise InputError(f"input {name!r}: {error}") from None
        if name in declared.parameters:
            value = coerce(value, declared.parameters[name].parameter_type)
        resolved.parameters[name] = value
    for name, spec in task.inputs.artifacts.items():
        kind = spec.WhichOneof("kind")
        try:
            if kind == "task_output_artifact":
                value = scope.output(spec.task_output_artifact.producer_task, spec.task_output_artifact.output_artifact_key)
            elif kind == "component_input_artifact":
                if spec.component_input_artifact not in scope.inputs:
                    continue  # an optional input artifact that was not given
                value = scope.input(spec.component_input_artifact)
            else:
                raise InputError(f"artifact input of kind {kind!r} is not supported")
        except InputError as error:
            raise InputError(f"input {name!r}: {error}") from None
        resolved.artifacts[name] = list(value)
    for name, spec in declared.parameters.items():  # defaults of the inputs the task does not set
        if name not in resolved.parameters and spec.HasField("default_value"):
            resolved.parameters[name] = coerce(from_protobuf(spec.default_value), spec.parameter_type)
    # a loop's item (a parameter or an artifact) is an input of each iteration, set there
    item = task.parameter_iterator.item_input or task.artifact_iterator.item_input
    missing = sorted([n for n, spec in declared.parameters.items() if n not in resolved.parameters
                      and n != item and not _may_be_left_out(spec)]
                     + [n for n, spec in declared.artifacts.items() if n not in resolved.artifacts
                        and n != item and not spec.is_optional])
    if missing:
        raise InputError(f"input {missing[0]!r} has no value (it is not optional and has no default)")
    return resolved


def _may_be_left_out(spec: Optional[pipeline_spec_pb2.ComponentInputsSpec.ParameterSpec]) -> bool:
    return spec is not None and (spec.is_optional or spec.HasField("default_value"))


def _parameter(name: str, spec: pipeline_spec_pb2.TaskInputsSpec.InputParameterSpec, scope: Scope,
               placeholders: RunPlaceholders, task_name: str, parent_dag_id: Optional[int]) -> Any:
    kind = spec.WhichOneof("kind")
    if kind == "runtime_value":
        constant = from_protobuf(spec.runtime_value.constant)
        if isinstance(constant, str):
            value = placeholders.value(constant, task_name, parent_dag_id)
            if value is not None:
                return value
        return constant
    if kind == "component_input_parameter":
        return scope.input(spec.component_input_parameter)
    if kind == "task_output_parameter":
        return scope.output(spec.task_output_parameter.producer_task, spec.task_output_parameter.output_parameter_key)
    if kind == "task_final_status":
        producer = spec.task_final_status.producer_task
        report = scope.reports.get(producer)
        if report is None:
            raise InputError(f"task {producer!r} has not ended")
        # KFP's driver: the run's Kubernetes object name (resolve.go, PipelineJobResourceName: opts.RunName)
        status: dict[str, Any] = {"state": final_status_state(report.state),
                                  "pipelineTaskName": producer,
                                  "pipelineJobResourceName": placeholders.resource_name or placeholders.job_name,
                                  "error": {}}
        if report.state in (FAILED, NOT_RUN) and report.error:
            status["error"] = {"message": report.error.splitlines()[0]}
        return status
    raise InputError(f"parameter input of kind {kind!r} is not supported")

