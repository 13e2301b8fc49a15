"""The values one DAG sees while it runs: its own inputs, and the outputs and reports of its tasks.

Parameters are Python values; artifacts are always lists of ``RuntimeArtifact`` (one element for an
ordinary input or output, several for a ``dsl.Collected`` fan-in), each named by its MLMD ID as in
KFP's executor input.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional


from ..errors import MlmdCacheError
from ..pipeline.spec import pipeline_spec_pb2
from .reports import TaskReport

__all__ = ["Scope", "InputError", "ArtifactList", "artifact_ids", "Pending", "first_pending"]

ArtifactList = list[pipeline_spec_pb2.RuntimeArtifact]


def artifact_ids(artifacts: Mapping[str, ArtifactList]) -> dict[str, list[int]]:
    """The MLMD IDs of artifact lists, by name (a RuntimeArtifact's name is its MLMD ID); a plan's
    :class:`Pending` artifact has none yet."""
    return {name: [int(artifact.name) for artifact in artifact_list if not isinstance(artifact, Pending)]
            for name, artifact_list in artifacts.items()}


class Pending:
    """A value a plan (:mod:`mlmd_cache.runner.plan`) cannot know before the run: an output of a task that
    will execute, a new artifact, or a run-time placeholder whose value is new in every run. It
    stands in the scope where the value will be, so that the runner's own input resolution carries
    it to the tasks that use it. ``new`` is true when the value is certainly new (a new artifact ID,
    a new run's name): a cache key made from it cannot match any earlier one. ``whole_list`` is true
    when it stands for a whole list of artifacts whose length is not known either (the collected
    outputs of a loop the plan could not go into), so a loop over it cannot list its iterations. A run
    never sees one.
    """

    __slots__ = ("producer", "what", "new", "whole_list")

    def __init__(self, producer: str, what: str, new: bool, whole_list: bool = False) -> None:
        self.producer, self.what, self.new, self.whole_list = producer, what, new, whole_list

    def __iter__(self) -> Iterator["Pending"]:  # an unknown list (a loop's Collected outputs) is one unknown element
        yield self

    def __repr__(self) -> str:
        return f"Pending({self.producer!r}, {self.what!r}, new={self.new}, whole_list={self.whole_list})"


def first_pending(value: Any) -> Optional[Pending]:
    """The first :class:`Pending` in a resolved value (a parameter, a list of artifacts, a list of either)."""
    if isinstance(value, Pending):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = first_pending(item)
            if found is not None:
                return found
    elif isinstance(value, dict):
        for item in value.values():
            found = first_pending(item)
            if found is not None:
                return found
    return None


class InputError(MlmdCacheError):
    """A task's input cannot be resolved (an upstream output that was not produced, a selector
    that fails): the task fails without running."""


class Scope:
    """The inputs of one DAG and what its tasks produced, by task name (the IR task key)."""

    def __init__(self, inputs: Mapping[str, Any]) -> None:
        self.inputs: dict[str, Any] = dict(inputs)
        self.outputs: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, TaskReport] = {}

    def put(self, task: str, report: TaskReport, outputs: Optional[Mapping[str, Any]] = None) -> None:
        self.reports[task] = report
        self.outputs[task] = dict(outputs or {})

    def input(self, name: str) -> Any:
        if name not in self.inputs:
            raise InputError(f"the enclosing DAG has no input {name!r}")
        return self.inputs[name]

    def output(self, task: str, key: str) -> Any:
        outputs = self.outputs.get(task)
        if outputs is None or key not in outputs:
            report = self.reports.get(task)
            why = f" (it is {report.state})" if report is not None else ""
            raise InputError(f"task {task!r} produced no output {key!r}{why}")
        return outputs[key]

    def has_output(self, task: str, key: str) -> bool:
        return key in self.outputs.get(task, {})
