"""The MLMD records of DAGs (the root, nested pipelines, condition branches, exit handler groups,
loops and their iterations) and the outputs a DAG hands to its parent.

A DAG execution is a ``system.DAGExecution`` in the run's contexts, with KFP's properties
(``display_name``, ``task_name``, ``parent_dag_id``, ``inputs``, ``total_dag_tasks``, and for
loops ``iteration_count`` or ``iteration_index``), an INPUT event per input artifact and, once
it completes, an OUTPUT event per output artifact and its output parameters in ``outputs``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..cache.execution_cache import ExecutionCache, PipelineRun
from ..pipeline.spec import pipeline_spec_pb2
from ..cache.writes import unique_events
from ..cache.recovery import RUNNER, runner_identity
from .scope import ArtifactList, InputError, Scope, artifact_ids
from .reports import SKIPPED, SUCCEEDED

__all__ = ["DagRecorder", "dag_outputs", "collect_outputs"]

ITERATION_COUNT = "iteration_count"
ITERATION_INDEX = records.ITERATION_INDEX
TOTAL_DAG_TASKS = "total_dag_tasks"


def _events(kind: int, artifacts: Mapping[str, ArtifactList]) -> list[tuple[None, mlmd.Event]]:
    return unique_events(kind, artifact_ids(artifacts))


class DagRecorder:
    """Writes the DAG executions of one run. Several DAGs begun or ended together are written in one
    transaction (``put_lineage_subgraph``): on a disk-backed store each commit costs milliseconds,
    and a cached loop otherwise commits twice per iteration beside its tasks' one write. Ended DAGs
    wait in memory until :meth:`flush`, which the scheduler calls before it waits for anything."""

    def __init__(self, cache: ExecutionCache, run: PipelineRun) -> None:
        self.cache, self.run = cache, run
        self._ended: list[tuple[mlmd.Execution, list[tuple[None, mlmd.Event]]]] = []

    def new(self, task_name: str, display_name: str, parameters: Mapping[str, Any], parent_dag_id: Optional[int], *,
            total_dag_tasks: Optional[int] = None, iteration_count: Optional[int] = None,
            iteration_index: Optional[int] = None, state: int = mlmd.Execution.RUNNING,
            execution_type: str = records.DAG_EXECUTION_TYPE) -> mlmd.Execution:
        """A DAG execution not yet written (``state`` CANCELED for a branch not taken, as KFP records it)."""
        execution = mlmd.Execution(type_id=self.cache.types.execution_type(execution_type), last_known_state=state)
        properties = execution.custom_properties
        properties[records.DISPLAY_NAME].string_value = display_name
        properties[records.TASK_NAME].string_value = task_name
        properties[records.INPUTS].CopyFrom(records.struct_value(parameters))
        if parent_dag_id is not None:
            properties[records.PARENT_DAG_ID].int_value = parent_dag_id
        if state == mlmd.Execution.RUNNING:  # who will end it (see mlmd_cache.cache.recovery)
            properties[RUNNER].string_value = runner_identity()
        for key, value in ((TOTAL_DAG_TASKS, total_dag_tasks), (ITERATION_COUNT, iteration_count),
                           (ITERATION_INDEX, iteration_index)):
            if value is not None:
                properties[key].int_value = value
        return execution

    def write(self, new: Sequence[tuple[mlmd.Execution, Mapping[str, ArtifactList]]]) -> None:
        """Write new DAG executions, with an INPUT event per input artifact, in one transaction; sets their IDs."""
        if not new:
            return
        executions = [execution for execution, _ in new]
        edges = [(index, None, event) for index, (_, artifacts) in enumerate(new)
                 for _, event in _events(mlmd.Event.INPUT, artifacts)]
        ids, _, _ = self.cache.store.put_lineage_subgraph(
            executions, [], [self.run.pipeline_context, self.run.run_context], edges,
            reuse_context_if_already_exist=True)
        for execution, execution_id in zip(executions, ids):
            execution.id = execution_id

    def start(self, task_name: str, display_name: str, parameters: Mapping[str, Any],
              artifacts: Mapping[str, ArtifactList], parent_dag_id: Optional[int], **options: Any) -> mlmd.Execution:
        """A new DAG execution, written at once (see :meth:`new` for the options)."""
        execution = self.new(task_name, display_name, parameters, parent_dag_id, **options)
        self.write([(execution, artifacts)])
        return execution

    def finish(self, execution: mlmd.Execution, state: int, parameters: Mapping[str, Any] = {},
               artifacts: Mapping[str, ArtifactList] = {}) -> None:
        """End a DAG execution: its state, output parameters and OUTPUT events (written by :meth:`flush`)."""
        execution.last_known_state = state
        if parameters:
            execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(parameters))
        self._ended.append((execution, _events(mlmd.Event.OUTPUT, artifacts)))

    def flush(self) -> None:
        """Write the DAG executions ended since the last flush, in one transaction."""
        if not self._ended:
            return
        ended, self._ended = self._ended, []
        edges = [(index, None, event) for index, (_, events) in enumerate(ended) for _, event in events]
        self.cache.store.put_lineage_subgraph([execution for execution, _ in ended], [], [], edges)


def dag_outputs(outputs_spec: pipeline_spec_pb2.DagOutputsSpec, scope: Scope
                ) -> tuple[dict[str, Any], dict[str, ArtifactList]]:
    """The output parameters and artifacts of a DAG that ran, from its tasks' outputs. ``dsl.OneOf``
    takes the first branch that ran (KFP 2.17's rule, for parameters and artifacts alike); an
    output whose only producer was in a branch not taken is left out."""
    parameters: dict[str, Any] = {}
    for name, selector in outputs_spec.parameters.items():
        kind = selector.WhichOneof("kind")
        if kind == "value_from_parameter":
            choices = [(selector.value_from_parameter.producer_subtask,
                        selector.value_from_parameter.output_parameter_key)]
        elif kind == "value_from_oneof":
            choices = [(s.producer_subtask, s.output_parameter_key) for s in selector.value_from_oneof.parameter_selectors]
        else:
            raise InputError(f"DAG output {name!r}: selector of kind {kind!r} is not supported")
        if not all(_skipped(scope, producer) for producer, _ in choices):
            parameters[name] = _first_that_ran(name, choices, scope)
    artifacts: dict[str, ArtifactList] = {}
    for name, selector in outputs_spec.artifacts.items():
        choices = [(s.producer_subtask, s.output_artifact_key) for s in selector.artifact_selectors]
        if choices and not all(_skipped(scope, producer) for producer, _ in choices):
            artifacts[name] = list(_first_that_ran(name, choices, scope))
    return parameters, artifacts


def _first_that_ran(name: str, choices: Sequence[tuple[str, str]], scope: Scope) -> Any:
    for producer, key in choices:
        report = scope.reports.get(producer)
        if report is not None and report.state in SUCCEEDED and scope.has_output(producer, key):
            return scope.output(producer, key)
    if len(choices) == 1:
        return scope.output(*choices[0])  # the error names the producer and its state
    raise InputError(f"output {name!r}: none of the branches {', '.join(p for p, _ in choices)} ran")


def collect_outputs(outputs_spec: pipeline_spec_pb2.DagOutputsSpec, iterations: Sequence[Scope],
                    loop_subtasks: frozenset[str]) -> tuple[dict[str, Any], dict[str, ArtifactList]]:
    """A loop's outputs (``dsl.Collected``): each output of the body, gathered over the iterations
    in order; what an inner loop already collected is flattened in (outer-major order), and an
    iteration whose producer was in a branch not taken adds nothing."""
    parameters: dict[str, Any] = {}
    for name, selector in outputs_spec.parameters.items():
        spec = selector.value_from_parameter
        values: list[Any] = []
        for scope in iterations:
            if _skipped(scope, spec.producer_subtask):
                continue
            value = scope.output(spec.producer_subtask, spec.output_parameter_key)
            if spec.producer_subtask in loop_subtasks:
                values.extend(value)
            else:
                values.append(value)
        parameters[name] = values
    artifacts: dict[str, ArtifactList] = {}
    for name, selector in outputs_spec.artifacts.items():
        collected: ArtifactList = []
        for scope in iterations:
            for spec in selector.artifact_selectors:
                if not _skipped(scope, spec.producer_subtask):
                    collected.extend(scope.output(spec.producer_subtask, spec.output_artifact_key))
        artifacts[name] = collected
    return parameters, artifacts


def _skipped(scope: Scope, task: str) -> bool:
    report = scope.reports.get(task)
    return report is not None and report.state == SKIPPED
