"""What a run reports: one :class:`TaskReport` per task, DAG and loop iteration, and the
:class:`RunReport` of the whole run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["TaskReport", "RunReport", "COMPLETE", "CACHED", "FAILED", "NOT_RUN", "SKIPPED", "SUCCEEDED"]

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
class RunReport:
    """A pipeline run: its name, its root DAG execution and a report per task, in the order they ended."""

    run: str
    pipeline: str
    dag_execution_id: int
    tasks: dict[str, TaskReport]

    @property
    def succeeded(self) -> bool:
        return all(task.state in SUCCEEDED or task.state == SKIPPED for task in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "pipeline": self.pipeline, "succeeded": self.succeeded,
                "tasks": {name: task.to_dict() for name, task in self.tasks.items()}}
