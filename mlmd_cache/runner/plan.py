"""What a run of a pipeline would take from the cache, before it starts (``mlmd-cache plan``).

:func:`plan_pipeline` goes through the pipeline as :func:`mlmd_cache.runner.run_pipeline` would —
the runner's own scheduler in planning mode (:mod:`mlmd_cache.runner.planning`): the same input
resolution, conditions, loops and cache keys, and :meth:`ExecutionCache.lookup` for each container
task — but runs nothing and writes nothing (no run context, no execution, no artifact, no file).
Each task is

- ``hit``: a valid cache source exists (its execution is named); the task's outputs are that
  source's, so downstream keys are known too;
- ``run``: no valid source (the reason says why: no source for the key, caching disabled for the
  task or the run, a source that is no longer valid), or an input artifact that is certainly new
  (a new output of an upstream task that runs: ``run (upstream runs)``);
- ``skipped``: its condition is false (or an upstream task is skipped);
- ``unknown``: what happens depends on a value the run learns only as it goes (an output
  parameter of an upstream task that runs, which may come out as before; a condition or loop over
  one). A plan does not guess.

A plan assumes every task that runs succeeds.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..cache.execution_cache import ExecutionCache, PipelineRun
from ..errors import InvalidArgumentError
from ..pipeline.spec import CompiledPipeline
from . import DEFAULT_TASK_ENV, check_task_names, default_pipeline_root, default_run_name, run_arguments
from .launchers import check_commands
from .containers import runtime_artifact
from .planning import UNKNOWN, Planner
from .reports import CACHED, FAILED, NOT_RUN, SKIPPED
from .scope import Pending
from .values import RunPlaceholders

__all__ = ["plan_pipeline", "Plan", "PlannedTask", "HIT", "RUN", "SKIP", "UNDECIDED", "FAIL"]

HIT, RUN, SKIP, UNDECIDED, FAIL = "hit", "run", "skipped", "unknown", "fails"
_DAG_KINDS = ("dag", "loop", "iteration")


@dataclass(frozen=True)
class PlannedTask:
    """One task of a plan. ``name`` is its path as a run reports it (``train``, ``condition-1/train``,
    ``for-loop-2/0/train``); ``kind`` as in :class:`~mlmd_cache.runner.TaskReport`. ``status`` is
    ``hit``, ``run``, ``skipped``, ``unknown`` or ``fails`` (its inputs cannot be resolved, as the
    run would find); ``upstream`` names the task whose running makes it run or leaves it undecided."""

    name: str
    kind: str
    status: str
    reason: str = ""
    source_execution_id: Optional[int] = None
    upstream: Optional[str] = None
    fingerprint: Optional[str] = None

    @property
    def label(self) -> str:
        """``hit (execution 12)``, ``run``, ``run (upstream runs)``, ``skipped``, ``unknown (depends on task 'x')``."""
        if self.status == HIT and self.source_execution_id is not None:
            return f"hit (execution {self.source_execution_id})"
        if self.status == RUN and self.upstream:
            return "run (upstream runs)"
        if self.status == UNDECIDED and self.upstream:
            return f"unknown (depends on task {self.upstream})"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "label": self.label, "reason": self.reason,
                "source_execution_id": self.source_execution_id, "upstream": self.upstream,
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Plan:
    """What a run of ``pipeline`` would do with each task (in the order a run would end them)."""

    pipeline: str
    tasks: dict[str, PlannedTask]
    enable_caching: Optional[bool] = None

    def counts(self) -> dict[str, int]:
        """How many tasks (containers and importers; not DAGs, loops, iterations) have each status."""
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            if task.kind not in _DAG_KINDS:
                counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "enable_caching": self.enable_caching, "counts": self.counts(),
                "tasks": {name: task.to_dict() for name, task in self.tasks.items()}}


def plan_pipeline(
    cache: ExecutionCache,
    pipeline: CompiledPipeline,
    parameters: Optional[Mapping[str, Any]] = None,
    *,
    artifacts: Optional[Mapping[str, Union[int, str]]] = None,
    run_name: Optional[str] = None,
    pipeline_root: Optional[os.PathLike] = None,
    enable_caching: Optional[bool] = None,
    max_staleness: Optional[datetime.timedelta] = None,
    task_staleness: Optional[Mapping[str, datetime.timedelta]] = None,
    digest: bool = False,
    key_by_content: bool = False,
    task_env: str = DEFAULT_TASK_ENV,
) -> Plan:
    """The plan of a run of ``pipeline`` with these arguments (as :func:`~mlmd_cache.runner.run_pipeline`
    takes them, and checked as it checks them): see the module docstring. Only reads the store.

    ``run_name`` and ``pipeline_root`` matter only to tasks whose inputs are run-time placeholders:
    a task given the run's name (or ID, or creation time) always runs, whatever the name.
    ``task_env``: commands must exist on this host unless it is ``"docker"``.
    ``max_staleness``, ``task_staleness``, ``digest`` and ``key_by_content`` are the run's (see
    :func:`~mlmd_cache.runner.run_pipeline`); keyed by content, a consumer of a task that runs is
    ``unknown`` (the new output may have the same bytes), and input files are hashed to key the rest."""
    if run_name is not None and cache.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run_name):
        raise InvalidArgumentError(f"a pipeline run named {run_name!r} is already in the store; "
                                   "a new run needs a new name")
    name = run_name or default_run_name(pipeline.name)
    arguments, input_artifacts = run_arguments(cache, pipeline, parameters, artifacts, name, find_only=True)
    task_staleness = dict(task_staleness or {})
    check_task_names(pipeline, task_staleness, "task staleness")
    if task_env != "docker":  # the shims give python and pip; the rest must be on this host's PATH
        check_commands(pipeline, os.environ.get("PATH", os.defpath), task_env)
    root = (Path(pipeline_root) if pipeline_root is not None else default_pipeline_root(None)).resolve()
    run = PipelineRun(pipeline.name, name, mlmd.Context(), mlmd.Context(), enable_caching,  # never written
                      max_staleness=max_staleness, digest=digest, key_by_content=key_by_content)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    planner = Planner(cache, pipeline, run, root,
                      RunPlaceholders.for_run(pipeline.name, name, str(root), created),
                      task_staleness)
    declared = pipeline.spec.root.input_definitions.artifacts
    root_artifacts = {
        key: [runtime_artifact(artifact, declared[key].artifact_type) if artifact.HasField("id")
              else Pending("", f"a new artifact of {artifact.uri} (no LIVE one of that URI and type in the store)",
                           new=True)]
        for key, artifact in input_artifacts.items()}
    planner.run_root(arguments, root_artifacts)
    return Plan(pipeline.name, _tasks(planner), enable_caching)


def _tasks(planner: Planner) -> dict[str, PlannedTask]:
    tasks: dict[str, PlannedTask] = {}
    for path, report in planner.reports.items():
        decision = planner.decisions.get(path)
        if decision is not None:
            tasks[path] = PlannedTask(path, report.kind, decision.status, decision.reason,
                                      decision.source_execution_id, decision.upstream, decision.fingerprint)
        elif report.state == SKIPPED:
            tasks[path] = PlannedTask(path, report.kind, SKIP, report.error)
        elif report.state == UNKNOWN:
            tasks[path] = PlannedTask(path, report.kind, UNDECIDED, report.error)
        elif report.state in (FAILED, NOT_RUN):
            tasks[path] = PlannedTask(path, report.kind, FAIL, report.error)
        elif report.kind in _DAG_KINDS:
            inside = [planner.decisions.get(p) for p, r in planner.reports.items()
                      if p.startswith(path + "/") and r.kind not in _DAG_KINDS]
            statuses = {d.status for d in inside if d is not None}
            status = UNDECIDED if UNDECIDED in statuses else RUN if RUN in statuses else HIT if HIT in statuses \
                else SKIP if statuses else HIT
            tasks[path] = PlannedTask(path, report.kind, status, _dag_reason(status))
        else:  # a container task the run would have ended otherwise: not expected
            tasks[path] = PlannedTask(path, report.kind, CACHED.lower() if report.state == CACHED else RUN,
                                      report.error)
    return tasks


def _dag_reason(status: str) -> str:
    return {HIT: "every task inside hits", RUN: "a task inside runs",
            UNDECIDED: "a task inside is undecided", SKIP: "every task inside is skipped"}[status]
