"""A compiled KFP v2 pipeline as the runner takes it: :class:`CompiledPipeline` (its ``PipelineSpec``
and executors), its tasks walked (:func:`iter_tasks`, :func:`upstream_tasks`), run parameters parsed
by their declared types, and the errors of a pipeline that cannot run. Loading the IR file is
:mod:`.spec`; the platform spec, :mod:`.platform`: both build on this module."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from ..errors import InvalidArgumentError
from ..key import json_values
# kfp-pipeline-spec's generated module (kfp.pipeline_spec.pipeline_spec_pb2), loaded without running
# kfp/__init__.py (the whole SDK, its client and the Kubernetes client): see key._pipeline_spec_messages.
# The runner takes it from here, so that a run whose tasks are all cached never imports the KFP SDK.
from ..key.cache_key import pipeline_spec_pb2

__all__ = ["CompiledPipeline", "ExecutorSpec", "ParameterType", "PipelineSpecError", "UnsupportedPipelineError",
           "iter_tasks", "pipeline_spec_pb2", "upstream_tasks"]

ParameterType = pipeline_spec_pb2.ParameterType.ParameterTypeEnum
ExecutorSpec = pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec


class PipelineSpecError(InvalidArgumentError):
    """The file is not a compiled KFP pipeline, or a run parameter is unknown or not of its type."""


class UnsupportedPipelineError(PipelineSpecError):
    """The pipeline uses a feature the local runner does not support (named in the message)."""


@dataclass(frozen=True)
class CompiledPipeline:
    """A compiled pipeline: its ``PipelineSpec`` and its executors as ``ExecutorSpec`` messages."""

    spec: pipeline_spec_pb2.PipelineSpec
    executors: Mapping[str, ExecutorSpec]
    # kubernetes.set_timeout: seconds by executor label (the platform spec's only setting that runs here)
    timeouts: Mapping[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.pipeline_info.name

    @property
    def components(self) -> Mapping[str, pipeline_spec_pb2.ComponentSpec]:
        return self.spec.components

    def parse_parameters(self, given: Mapping[str, str]) -> dict[str, Any]:
        """Parse ``NAME=VALUE`` strings by the pipeline's declared parameter types. Unknown names,
        bad values and missing required parameters are errors. Defaults are not filled in here."""
        declared = self.spec.root.input_definitions.parameters
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise PipelineSpecError(f"pipeline {self.name!r} has no parameter {unknown[0]!r} "
                                    f"(parameters: {', '.join(sorted(declared)) or 'none'})")
        values = {name: _parse_value(name, text, declared[name].parameter_type) for name, text in given.items()}
        missing = [name for name, spec in declared.items()
                   if name not in values and not spec.is_optional and not spec.HasField("default_value")]
        if missing:
            raise PipelineSpecError(f"pipeline {self.name!r} needs parameter {sorted(missing)[0]!r} (--param NAME=VALUE)")
        return values


def iter_tasks(pipeline: CompiledPipeline, dag: Optional[pipeline_spec_pb2.DagSpec] = None, prefix: str = ""
               ) -> Iterator[tuple[str, pipeline_spec_pb2.PipelineTaskSpec, pipeline_spec_pb2.ComponentSpec]]:
    """Every task of the pipeline, nested pipelines' tasks included, as (path, task, component); a
    nested task's path is ``outer/inner``."""
    dag = pipeline.spec.root.dag if dag is None else dag
    for name, task in dag.tasks.items():
        component = pipeline.components.get(task.component_ref.name)
        if component is None:
            raise PipelineSpecError(f"task {prefix + name!r}: no component {task.component_ref.name!r}")
        yield prefix + name, task, component
        if component.WhichOneof("implementation") == "dag":
            yield from iter_tasks(pipeline, component.dag, f"{prefix}{name}/")


def upstream_tasks(task: pipeline_spec_pb2.PipelineTaskSpec) -> set[str]:
    """The tasks of its DAG that ``task`` waits for: its ``dependentTasks`` and the producer of every
    input, since a task output used only in a setting (``set_cpu_limit(t.output)``) has no edge."""
    upstream = set(task.dependent_tasks)
    for spec in task.inputs.parameters.values():
        if spec.HasField("task_output_parameter"):
            upstream.add(spec.task_output_parameter.producer_task)
        elif spec.HasField("task_final_status"):
            upstream.add(spec.task_final_status.producer_task)
    for spec in task.inputs.artifacts.values():
        if spec.HasField("task_output_artifact"):
            upstream.add(spec.task_output_artifact.producer_task)
    return upstream


def _parse_value(name: str, text: str, parameter_type: int) -> Any:
    type_name = ParameterType.Name(parameter_type)

    def bad(expected: str) -> PipelineSpecError:
        return PipelineSpecError(f"parameter {name!r}: {text!r} is not {expected} (declared {type_name})")

    if parameter_type == ParameterType.STRING:
        json_values.check(text, f"parameter {name!r}", error=PipelineSpecError)  # undecodable bytes of argv
        return text
    if parameter_type in (ParameterType.NUMBER_INTEGER, ParameterType.NUMBER_DOUBLE):
        integer = parameter_type == ParameterType.NUMBER_INTEGER
        try:
            return json_values.parse_number(text, integer=integer)
        except json_values.JSONValueError as error:
            if error.syntax:
                raise bad("an integer (ASCII digits and a sign, as JSON writes one)" if integer else
                          "a number (ASCII digits, a sign, a fraction and an exponent, as JSON writes one)") from None
            raise PipelineSpecError(json_values.message(f"parameter {name!r}", error)) from None
    if parameter_type == ParameterType.BOOLEAN:
        # As KFP's SDK reads a bool pipeline argument given as text (kfp run create, from 2.16):
        # true or false in any letter case; 1/0/yes/no would reach KFP as a number or a string,
        # which its API server refuses for a bool parameter.
        if text.isascii() and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise bad("a boolean (true or false)")
    if parameter_type in (ParameterType.LIST, ParameterType.STRUCT):
        expected_type, expected = (list, "a JSON list") if parameter_type == ParameterType.LIST else (dict, "a JSON object")
        try:
            value = json_values.parse(text)
        except json_values.JSONValueError as error:
            if error.syntax:
                raise bad(expected) from None
            raise PipelineSpecError(json_values.message(f"parameter {name!r}", error)) from None
        if not isinstance(value, expected_type):
            raise bad(expected)
        return value
    raise PipelineSpecError(f"parameter {name!r}: type {type_name} is not supported")
