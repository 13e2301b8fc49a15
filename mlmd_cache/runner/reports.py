"""What a run reports: one :class:`TaskReport` per task, DAG and loop iteration, and the
:class:`RunReport` of the whole run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["TaskReport", "RunReport", "Metrics", "RunInterrupted", "COMPLETE", "CACHED", "FAILED", "NOT_RUN",
           "SKIPPED", "SUCCEEDED"]

COMPLETE, CACHED, FAILED, NOT_RUN, SKIPPED = "COMPLETE", "CACHED", "FAILED", "NOT_RUN", "SKIPPED"
# States after which the dependents of a task may use its outputs. SKIPPED (a branch not taken)
# does not fail a run, but its dependents are skipped in turn, as KFP omits them.
SUCCEEDED = frozenset({COMPLETE, CACHED})


@dataclass
class TaskReport:
    """What happened to one task of a run.

    ``name`` is its path in the run: ``train``; inside a nested pipeline, condition or exit handler
    ``condition-1/train``; in iteration 0 of a loop ``for-loop-2/0/train`` (the loop itself is
    ``for-loop-2`` and the iteration ``for-loop-2/0``). ``kind`` is ``container``, ``importer``,
    ``dag``, ``loop`` or ``iteration``."""

    name: str
    state: str  # COMPLETE, CACHED, FAILED, NOT_RUN or SKIPPED
    execution_id: Optional[int] = None
    cached_execution_id: Optional[int] = None
    fingerprint: Optional[str] = None
    duration: float = 0.0
    error: str = ""  # why it failed or did not run
    task_dir: Optional[str] = None
    output_artifact_ids: dict[str, list[int]] = field(default_factory=dict)
    output_parameters: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # executions of the task's command (retries included); 0 when it did not run
    kind: str = "container"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "execution_id": self.execution_id,
                "cached_execution_id": self.cached_execution_id, "fingerprint": self.fingerprint,
                "kind": self.kind, "attempts": self.attempts}


@dataclass
class Metrics:
    """A ``system.Metrics`` artifact a task of the run output (or reused): the values logged with
    ``metrics.log_metric(name, value)``, which KFP keeps as the artifact's custom properties."""

    task: str  # the task's path
    output: str  # the output's name
    artifact_id: int
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "output": self.output, "artifact_id": self.artifact_id, "values": self.values}


@dataclass
class RunReport:
    """A pipeline run: its name, its root DAG execution and a report per task, in the order they ended.

    ``output_parameters`` and ``output_artifacts`` (ID and URI) are the pipeline's own outputs (the
    root's ``outputDefinitions``: what the pipeline function returns), known once the run completed;
    ``metrics`` the ``system.Metrics`` artifacts of its tasks; ``store`` the store's URL, password
    hidden; ``pipeline_root`` the directory the run's outputs went under; ``interrupted``: stopped by Ctrl-C or SIGTERM (see :class:`RunInterrupted`)."""

    run: str
    pipeline: str
    dag_execution_id: Optional[int]  # None only when interrupted before the root DAG was written
    tasks: dict[str, TaskReport]
    output_parameters: dict[str, Any] = field(default_factory=dict)
    output_artifacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: list[Metrics] = field(default_factory=list)
    store: str = ""
    interrupted: bool = False
    task_env: str = ""  # where tasks ran: venv, docker or host (see mlmd_cache.runner.launchers)
    task_env_detail: str = ""  # the same with where: venv (the environment cache's directory)
    pipeline_root: str = ""  # where the run's task outputs and logs went: <pipeline_root>/<run>/...

    @property
    def succeeded(self) -> bool:
        return not self.interrupted and all(task.state in SUCCEEDED or task.state == SKIPPED
                                            for task in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "pipeline": self.pipeline, "succeeded": self.succeeded,
                "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
                "store": self.store, "pipeline_root": self.pipeline_root, "interrupted": self.interrupted,
                "task_env": self.task_env,
                "outputs": {"parameters": self.output_parameters, "artifacts": self.output_artifacts},
                "metrics": [metrics.to_dict() for metrics in self.metrics]}


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM, where the caller makes it raise ``KeyboardInterrupt``):
    its running tasks' processes were stopped and every execution it had open marked FAILED before
    this was raised. ``report`` tells what had happened: the tasks that ended, FAILED for the tasks
    that were running, NOT_RUN for those that had not started."""

    def __init__(self, report: RunReport) -> None:
        super().__init__(f"run {report.run!r} was interrupted")
        self.report = report
