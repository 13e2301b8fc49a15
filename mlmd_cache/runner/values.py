"""Parameter values as KFP's driver handles them: protobuf ``Value`` <-> Python, the coercion of a
value into the declared type of the input that receives it, and the run-time placeholders a task
input may be set to (``dsl.PIPELINE_JOB_NAME_PLACEHOLDER`` and the like).

>>> coerce(3.0, ParameterType.STRING), coerce(2.0, ParameterType.NUMBER_INTEGER), coerce(True, ParameterType.STRING)
('3', 2, 'true')
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from google.protobuf import struct_pb2

from ..key import json_values
from ..pipeline.spec import pipeline_spec_pb2
from ..pipeline.expressions import value_text
from .scope import Pending

__all__ = ["ParameterType", "from_protobuf", "to_protobuf", "coerce", "integer_outputs", "RunPlaceholders"]

ParameterType = pipeline_spec_pb2.ParameterType.ParameterTypeEnum


def from_protobuf(value: struct_pb2.Value) -> Any:
    """A protobuf Value as Python (``null`` is None; numbers stay float, see :func:`coerce`)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return {key: from_protobuf(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [from_protobuf(item) for item in value.list_value.values]
    return getattr(value, kind)


def to_protobuf(value: Any) -> struct_pb2.Value:
    """A Python parameter value as a protobuf Value."""
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=value)
    if isinstance(value, Mapping):
        return struct_pb2.Value(struct_value=struct_pb2.Struct(
            fields={str(key): to_protobuf(item) for key, item in value.items()}))
    if isinstance(value, (list, tuple)):
        return struct_pb2.Value(list_value=struct_pb2.ListValue(values=[to_protobuf(item) for item in value]))
    raise TypeError(f"not a parameter value: {type(value).__name__}")


def coerce(value: Any, parameter_type: int) -> Any:
    """A resolved value in the type of the input that receives it: text for STRING (as KFP's
    driver writes it, see :func:`~mlmd_cache.pipeline.expressions.value_text`), an int for a
    whole-valued NUMBER_INTEGER, JSON text parsed for a LIST or STRUCT given as a string."""
    if value is None or isinstance(value, Pending):  # a plan's unknown value stays unknown
        return value
    if parameter_type == ParameterType.STRING:
        return value_text(value)
    if parameter_type == ParameterType.NUMBER_INTEGER and isinstance(value, float) and value.is_integer():
        return int(value)
    if parameter_type in (ParameterType.LIST, ParameterType.STRUCT) and isinstance(value, str):
        try:
            return json_values.parse(value)  # -0 keeps its sign; NaN, 1e400, deep nesting are not JSON values here
        except json_values.JSONValueError:
            return value
    return value


def integer_outputs(values: dict[str, Any], specs: Mapping[str, Any]) -> dict[str, Any]:
    """A task's output parameter ``values`` (a dict, changed and returned) with those its component
    declares NUMBER_INTEGER (``specs``: ``output_definitions.parameters``) made ints: a protobuf
    Value holds every number as a float. kfp.local's ``executor_output_utils.cast_protobuf_numbers``,
    without importing the KFP SDK (a cached task's outputs are read with it)."""
    for name, spec in specs.items():
        if spec.parameter_type == ParameterType.NUMBER_INTEGER and name in values:  # an output never written is absent
            values[name] = int(values[name])
    return values


# Kubernetes' generateName suffix: 5 characters of this alphabet, after a prefix cut to 58 characters.
_K8S_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def resource_name(pipeline_name: str, run_name: str) -> str:
    """The run's ``{{$.pipeline_job_resource_name}}``. KFP's backend gives the run's Kubernetes
    object name: its Argo workflow is created with ``generateName`` set to the last ``/``-part of
    the pipeline's name plus ``-`` (backend/src/v2/compiler/argocompiler/argo.go), to which
    Kubernetes adds 5 random characters. Here the 5 characters come from a digest of the run's
    name, so that ``plan`` and a run of the same name see the same value.

    >>> resource_name("pipeline-with-placeholders", "my run")
    'pipeline-with-placeholders-5lnmn'
    """
    prefix = (pipeline_name.split("/")[-1] + "-")[:58]
    digest = hashlib.sha256(run_name.encode("utf-8", "surrogatepass")).digest()
    return prefix + "".join(_K8S_SUFFIX_ALPHABET[byte % len(_K8S_SUFFIX_ALPHABET)] for byte in digest[:5])


@dataclass(frozen=True)
class RunPlaceholders:
    """The values of the run-time placeholders of one run (see ``kfp.dsl``'s ``PIPELINE_*_PLACEHOLDER``),
    as KFP's driver resolves a task input that is one (backend/src/v2/driver/resolve.go): the run's
    display name (``job_name``), its Kubernetes object name (``resource_name``), its ID, the pipeline
    root, and its creation time, which is also the schedule time of a run no schedule started."""

    job_name: str
    job_id: str
    pipeline_root: str
    create_time: str  # RFC 3339, UTC
    resource_name: str = ""

    @classmethod
    def for_run(cls, pipeline_name: str, run_name: str, pipeline_root: str, create_time: str) -> "RunPlaceholders":
        """The placeholders of the run ``run_name`` of ``pipeline_name`` (its ID is its name: the
        name of its ``system.PipelineRun`` context, which KFP names by the run's ID)."""
        return cls(job_name=run_name, job_id=run_name, pipeline_root=pipeline_root, create_time=create_time,
                   resource_name=resource_name(pipeline_name, run_name))

    def value(self, text: str, task_name: str, parent_dag_id: Optional[int]) -> Optional[str]:
        """The value of ``text`` when it is exactly a placeholder, else None."""
        return {
            "{{$.pipeline_job_name}}": self.job_name,
            "{{$.pipeline_job_resource_name}}": self.resource_name or self.job_name,
            "{{$.pipeline_job_uuid}}": self.job_id,
            "{{$.pipeline_task_name}}": task_name,
            # KFP's driver resolves the task ID to the execution ID of the task's parent DAG.
            "{{$.pipeline_task_uuid}}": str(parent_dag_id) if parent_dag_id is not None else "",
            "{{$.pipeline_root}}": self.pipeline_root,
            "{{$.pipeline_job_create_time_utc}}": self.create_time,
            "{{$.pipeline_job_schedule_time_utc}}": self.create_time,
        }.get(text)
