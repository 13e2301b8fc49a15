"""The scheduler in planning mode: it goes through a pipeline's DAGs exactly as a run does (the same
readiness, trigger policies, input resolution, conditions, loops, DAG outputs and cache keys), but
where a run records and executes, it only looks the cache up and notes what the run would do.

Nothing is written and nothing starts: DAG executions are not recorded (:class:`_NoRecords`), an
importer only looks for the artifact of its URI, and a container task is a lookup. What a run
learns only by running — an output of a task that executes, the ID of a new artifact, a
placeholder that is new in every run — is a :class:`~.scope.Pending` in the scope, which the
runner's own resolution hands to the tasks that use it; they are then ``run`` (a certainly new
input: an artifact ID, the run's name) or ``unknown`` (a value that may turn out as before).
"""
from __future__ import annotations

import datetime

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..cache.execution_cache import ExecutionCache, PipelineRun, Task
from ..key.cache_key import CacheKey
from ..pipeline.spec import CompiledPipeline, pipeline_spec_pb2
from . import containers, importers
from ..pipeline import expressions
from .inputs import ResolvedInputs
from .reports import CACHED, COMPLETE, TaskReport
from .launchers import Launcher
from .scheduler import Scheduler, _ALL_UPSTREAM_TASKS_COMPLETED, _Dag, _Node
from .scope import ArtifactList, InputError, Pending, first_pending
from .values import RunPlaceholders

__all__ = ["Planner", "Decision", "UNKNOWN", "RUN_SPECIFIC_PLACEHOLDERS"]

UNKNOWN = "UNKNOWN"  # a report state only a plan has: what the run does depends on what it learns

# The run-time placeholders whose value is new in every run (a run's name is new; the task ID is a
# new DAG execution's ID; the creation time is now): a key made from one never matched before.
RUN_SPECIFIC_PLACEHOLDERS = ("{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}",
                             "{{$.pipeline_job_uuid}}", "{{$.pipeline_task_uuid}}",
                             "{{$.pipeline_job_create_time_utc}}", "{{$.pipeline_job_schedule_time_utc}}")


@dataclass(frozen=True)
class Decision:
    """What the run would do with one task: ``status`` is ``hit``, ``run``, ``skipped`` or ``unknown``."""

    status: str
    reason: str
    source_execution_id: Optional[int] = None
    upstream: Optional[str] = None  # the task whose running (or outcome) decides this one
    fingerprint: Optional[str] = None


class _PlanPlaceholders(RunPlaceholders):
    """Placeholders as a run resolves them, except those new in every run: :class:`Pending`."""

    def value(self, text: str, task_name: str, parent_dag_id: Optional[int]) -> Any:
        if text in RUN_SPECIFIC_PLACEHOLDERS:
            return Pending("", f"{text} (new in every run)", new=True)
        return super().value(text, task_name, parent_dag_id)


class _NoRecords:
    """The DAG recorder of a plan: DAG executions exist in memory only (no ID) and nothing is written."""

    def new(self, *args: Any, **options: Any) -> mlmd.Execution:
        return mlmd.Execution()

    def write(self, new: Any) -> None:
        pass

    def start(self, *args: Any, **options: Any) -> mlmd.Execution:
        return mlmd.Execution()

    def finish(self, *args: Any, **options: Any) -> None:
        pass

    def flush(self) -> None:
        pass


def _pending_outputs(component: pipeline_spec_pb2.ComponentSpec, path: str, new_artifacts: bool,
                     what: str) -> dict[str, Any]:
    """A task's declared outputs, every one :class:`Pending`. Output artifacts of a task that
    executes are certainly new (new IDs); its output parameters may come out as before. A list of
    artifacts (a DAG's ``dsl.Collected`` output) is one Pending for the whole list: its length is unknown too."""
    outputs: dict[str, Any] = {name: Pending(path, what, False) for name in component.output_definitions.parameters}
    outputs.update({name: [Pending(path, what, new_artifacts, whole_list=spec.is_artifact_list)]
                    for name, spec in component.output_definitions.artifacts.items()})
    return outputs


def _without_pending(inputs: ResolvedInputs) -> ResolvedInputs:
    return ResolvedInputs({k: v for k, v in inputs.parameters.items() if first_pending(v) is None},
                          {k: v for k, v in inputs.artifacts.items() if first_pending(v) is None})


def _first_pending_input(inputs: ResolvedInputs, artifacts: bool) -> Optional[tuple[str, Pending]]:
    for name, value in sorted((inputs.artifacts if artifacts else inputs.parameters).items()):
        found = first_pending(value)
        if found is not None:
            return name, found
    return None


def _source(pending: Pending) -> str:
    return f"task {pending.producer!r}" if pending.producer else "the run"


class Planner(Scheduler):
    """A :class:`Scheduler` that plans instead of running: see the module docstring. ``decisions``
    holds what it decided for each task path (every container task and importer, and each DAG, loop
    or iteration that is skipped or undecided); ``reports`` holds the reports a run would make."""

    def __init__(self, cache: ExecutionCache, pipeline: CompiledPipeline, run: PipelineRun, pipeline_root: Path,
                 placeholders: RunPlaceholders,
                 task_staleness: Optional[Mapping[str, datetime.timedelta]] = None) -> None:
        plan_placeholders = _PlanPlaceholders(placeholders.job_name, placeholders.job_id,
                                              placeholders.pipeline_root, placeholders.create_time)
        super().__init__(cache, pipeline, run, pipeline_root, {}, Launcher(), 1, plan_placeholders, None, None,
                         task_staleness)
        self.dags = _NoRecords()
        self.decisions: dict[str, Decision] = {}
        self._maybe_not_run: set[str] = set()  # undecided paths that might not run at all (a condition)
        self._runs_by_fingerprint: dict[str, str] = {}
        self._run_type_id: Optional[int] = None

    def _wait(self) -> None:  # nothing ever runs, so there is nothing to wait for
        raise RuntimeError("the plan did not reach the end of the pipeline")

    def _decide(self, dag: _Dag, node: _Node, decision: Decision, state: str, outputs: Optional[dict[str, Any]],
                **report: Any) -> None:
        path = dag.path + node.name
        self.decisions[path] = decision
        self._end(dag, node, TaskReport(path, state, kind=self._kind(node), error=decision.reason,
                                        fingerprint=decision.fingerprint,
                                        cached_execution_id=decision.source_execution_id, **report), outputs)

    def _undecided(self, dag: _Dag, node: _Node, reason: str, upstream: Optional[str], maybe_not_run: bool) -> None:
        """The task, and every task inside it, is ``unknown``; its outputs are Pending."""
        path = dag.path + node.name
        decision = Decision("unknown", reason, upstream=upstream)
        loop = bool(node.spec.WhichOneof("iterator"))  # its iterations are not known: none is listed
        for inner, kind in [] if loop else self._inner_tasks(node.component, path + "/"):
            self.decisions[inner] = decision
            self._report(TaskReport(inner, UNKNOWN, error=reason, kind=kind))
            if maybe_not_run:
                self._maybe_not_run.add(inner)
        if maybe_not_run:
            self._maybe_not_run.add(path)
        self._decide(dag, node, decision, UNKNOWN, _pending_outputs(node.component, path, False, reason))

    # -- the steps where a plan differs from a run ---------------------------------------------------

    def _start(self, dag: _Dag, node: _Node) -> None:
        for upstream in sorted(node.upstream):
            report = dag.nodes[upstream].report
            if report.state != UNKNOWN:
                continue
            final_status = any(spec.HasField("task_final_status") and spec.task_final_status.producer_task == upstream
                               for spec in node.spec.inputs.parameters.values())
            waits = node.spec.trigger_policy.strategy != _ALL_UPSTREAM_TASKS_COMPLETED
            if final_status or (waits and dag.path + upstream in self._maybe_not_run):
                # whether the task runs (or what status it sees) depends on how its upstream ends
                return self._undecided(dag, node, f"depends on how task {dag.path + upstream!r} ends",
                                       dag.path + upstream, maybe_not_run=True)
        try:
            super()._start(dag, node)
        except _Undecided as undecided:
            self._undecided(dag, node, undecided.reason, undecided.upstream, maybe_not_run=True)

    def _condition_holds(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> bool:
        known = {name: value for name, value in inputs.parameters.items() if first_pending(value) is None}
        unknown = _first_pending_input(inputs, artifacts=False)
        try:
            return expressions.evaluate_condition(node.spec.trigger_policy.condition, known)
        except expressions.ExpressionError:
            if unknown is None:
                raise  # as in a run: the task fails
        name, pending = unknown
        what = f"{_source(pending)}'s output" if pending.producer else pending.what
        raise _Undecided(f"its condition depends on {what}, known once the run gets there", pending.producer)

    def _start_loop(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> None:
        items, _ = self._loop_items(node, inputs)
        if node.spec.WhichOneof("iterator") == "artifact_iterator":
            # A list of artifacts of known length lists its iterations even when some artifacts are not
            # known yet (new ones of tasks that run): each iteration's tasks are decided on their item.
            pending = next((item for item in items or [] if isinstance(item, Pending) and item.whole_list), None)
        else:
            pending = first_pending(items)
        if pending is not None:
            return self._undecided(dag, node, f"its items are {_source(pending)}'s output, known once it runs",
                                   pending.producer, maybe_not_run=False)
        super()._start_loop(dag, node, inputs)

    def _dag_outputs(self, dag: _Dag) -> tuple[dict[str, Any], dict[str, ArtifactList]]:
        try:
            return super()._dag_outputs(dag)
        except InputError:
            undecided = [name for name, n in dag.nodes.items() if n.report.state == UNKNOWN]
            if not undecided:
                raise
            # dsl.OneOf over branches not yet decided: the output is whichever ends up running
            outputs = _pending_outputs(dag.component, dag.path + undecided[0], False, "undecided branches")
            return ({name: value for name, value in outputs.items() if name in dag.component.output_definitions.parameters},
                    {name: value for name, value in outputs.items() if name in dag.component.output_definitions.artifacts})

    def _start_importer(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, importer: Any) -> None:
        path = dag.path + node.name
        unknown = _first_pending_input(inputs, artifacts=False)
        if unknown is not None:
            reason = f"an importer always runs; its URI depends on {_source(unknown[1])}'s output"
            return self._decide(dag, node, Decision("run", reason, upstream=unknown[1].producer or None), COMPLETE,
                                _pending_outputs(node.component, path, False, "an artifact of a URI not yet known"))
        uri = importers.importer_uri(importer, node.component, inputs)
        existing = None if importer.reimport else importers.existing_artifact(
            self.cache, uri, importer.type_schema.schema_title, node.name)
        if existing is not None:
            reason = f"an importer always runs; it reuses artifact {existing.id} of {uri}"
            outputs: dict[str, Any] = {"artifact": [containers.runtime_artifact(existing, importer.type_schema)]}
            ids = {"artifact": [existing.id]}
        else:
            why = "reimport=True" if importer.reimport else "no LIVE artifact of that URI and type in the store"
            reason = f"an importer always runs; it makes a new artifact of {uri} ({why})"
            outputs, ids = {"artifact": [Pending(path, f"a new artifact of {uri}", new=True)]}, {}
        self._decide(dag, node, Decision("run", reason), COMPLETE, outputs, output_artifact_ids=ids)

    def _start_container(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, container: Any) -> None:
        path = dag.path + node.name
        new_outputs = _pending_outputs(node.component, path, True, "an output of a task that runs")
        options = node.spec.caching_options
        if not ExecutionCache.caching_enabled(self.run, Task(node.name, CacheKey(), enable_cache=options.enable_cache)):
            where = "the run" if self.run.enable_caching is False else "the task"
            return self._decide(dag, node, Decision("run", f"caching is disabled for {where}"), COMPLETE, new_outputs)
        if options.cache_key:  # the fingerprint is the custom key's alone: the inputs do not enter it
            inputs = _without_pending(inputs)
        found = _first_pending_input(inputs, artifacts=True)
        # keyed by content, a new artifact with the same bytes as before keeps the key: not certainly new
        if found is not None and found[1].new and not self.run.key_by_content:
            name, pending = found
            if pending.producer:
                reason = f"input artifact {name!r} will be a new artifact of {_source(pending)}, which runs"
            else:
                reason = f"input artifact {name!r} will be {pending.what}"
            return self._decide(dag, node, Decision("run", reason, upstream=pending.producer or None), COMPLETE,
                                new_outputs)
        parameter = _first_pending_input(inputs, artifacts=False)
        if parameter is not None and parameter[1].new:
            name, pending = parameter
            return self._decide(dag, node, Decision("run", f"input {name!r} is {pending.what}"), COMPLETE, new_outputs)
        unknown = found or parameter
        if unknown is not None:
            name, pending = unknown
            reason = f"input {name!r} is {_source(pending)}'s output, known once it runs"
            return self._undecided(dag, node, reason, pending.producer, maybe_not_run=False)
        task = self.cache.keyed(self.run, self._cache_task(dag, node, inputs, container))  # as the run keys it
        fingerprint = task.fingerprint
        found = self.cache.look_up(self.run, task)  # the run's own lookup, validity rules and all
        hit = found.hit
        if hit is None and fingerprint in self._runs_by_fingerprint:
            earlier = self._runs_by_fingerprint[fingerprint]
            return self._undecided(dag, node, f"same cache key as task {earlier!r}, which runs in this run: a hit "
                                   "if that has ended when this one starts", earlier, maybe_not_run=False)
        if hit is not None:
            outputs = containers.scope_outputs(hit, node.component)
            decision = Decision("hit", f"reuses the outputs of {self._source_run(hit.source)}",
                                hit.source_execution_id, fingerprint=fingerprint)
            ids = {name: [a.id for a in artifacts] for name, artifacts in hit.output_artifacts.items()}
            return self._decide(dag, node, decision, CACHED, outputs, output_artifact_ids=ids,
                                output_parameters={k: v for k, v in outputs.items() if k in hit.output_parameters})
        self._runs_by_fingerprint[fingerprint] = path
        if found.rejected:
            execution, problem = found.rejected[0]
            more = f" (and {len(found.rejected) - 1} older ones)" if len(found.rejected) > 1 else ""
            reason = f"source execution {execution}{more} is no valid cache source: {problem}"
        else:
            reason = "no cache source for this key"
        self._decide(dag, node, Decision("run", reason, fingerprint=fingerprint), COMPLETE, new_outputs)


    def _source_run(self, source: mlmd.Execution) -> str:
        """``run 'NAME'`` of a source execution (the run it executed in), for people reading the plan."""
        if self._run_type_id is None:
            self._run_type_id = self.cache.store.get_context_type(records.RUN_CONTEXT_TYPE).id
        runs = [c.name for c in self.cache.store.get_contexts_by_execution(source.id) if c.type_id == self._run_type_id]
        return f"run {runs[0]!r}" if runs else f"execution {source.id}"


class _Undecided(Exception):
    """Raised inside :meth:`Planner._start` (a condition) when a task's fate is not known before the run."""

    def __init__(self, reason: str, upstream: str) -> None:
        super().__init__(reason)
        self.reason, self.upstream = reason, upstream

