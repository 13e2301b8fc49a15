"""The run's event loop: which task is ready, what kind of task it is, and what its end means for
the tasks after it.

One thread — the caller's — decides everything and does every MLMD read and write, so the store
sees one writer whatever the backend (SQLite included); the one exception is the heartbeat of the
cache keys this run reserved (:mod:`mlmd_cache.cache.leases`), a write every fifth of a lease over a
connection of its own. Worker
threads only run task processes, at most ``parallelism`` at a time, and hand each exit code back
through a queue; retries, and tasks waiting for a key another run holds (:mod:`mlmd_cache.cache.dedup`),
wait on timers in the same loop. A DAG (the root, a nested pipeline, a condition branch, an exit handler
group, a loop iteration) is a :class:`_Dag`: its tasks start as soon as everything they depend on
has ended, a failure stops only the tasks that depend on it, and when all its tasks have ended the
DAG ends and its parent's task with it.
"""
from __future__ import annotations

import datetime
import heapq
import itertools
import json
import queue
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..cache import dedup, leases
from ..store import records
from ..cache.execution_cache import CachedRecord, ExecutionCache, PipelineRun, Task, TaskExecution
from ..errors import ExecutionStateError, MlmdCacheError, StoreFaultError
from ..pipeline.spec import CompiledPipeline, pipeline_spec_pb2, upstream_tasks
from . import containers, importers
from ..pipeline import expressions
from .dags import DagRecorder, collect_outputs, dag_outputs
from .inputs import ResolvedInputs, resolve_inputs
from .interrupts import DeferredStop
from .launchers import Launcher, TaskLaunch
from .paths import safe_name, task_directory
from .reports import COMPLETE, FAILED, NOT_RUN, SKIPPED, TaskReport
from .scope import ArtifactList, InputError, Scope, artifact_ids
from .values import RunPlaceholders, coerce
from .watchdog import Watchdog

__all__ = ["Scheduler"]

_ALL_UPSTREAM_TASKS_COMPLETED = pipeline_spec_pb2.PipelineTaskSpec.TriggerPolicy.ALL_UPSTREAM_TASKS_COMPLETED
_POLL_SECONDS = 0.5
_DAG_STATES = {COMPLETE: mlmd.Execution.COMPLETE, FAILED: mlmd.Execution.FAILED}
_INTERRUPTED = "the run was interrupted"


@dataclass
class _Node:
    """A task of a running DAG."""

    name: str  # the IR task key
    spec: pipeline_spec_pb2.PipelineTaskSpec
    component: pipeline_spec_pb2.ComponentSpec
    upstream: frozenset[str]
    retry: pipeline_spec_pb2.PipelineTaskSpec.RetryPolicy
    report: Optional[TaskReport] = None  # set when the task has ended


@dataclass
class _Dag:
    """A DAG being run, with the values its tasks see."""

    path: str  # the report name of its tasks' prefix: "" for the root, "for-loop-2/0/" in a loop
    component: pipeline_spec_pb2.ComponentSpec
    execution: mlmd.Execution
    scope: Scope
    nodes: dict[str, _Node]
    on_end: Callable[["_Dag", str, dict[str, Any], dict[str, ArtifactList], str], None]
    pending: set[str] = field(default_factory=set)
    ended: bool = False
    began: float = field(default_factory=time.monotonic)


@dataclass
class _Loop:
    """A ``dsl.ParallelFor`` being run: its iterations start while fewer than its limit are running."""

    dag: _Dag  # the DAG the loop task belongs to
    node: _Node
    execution: mlmd.Execution
    inputs: ResolvedInputs
    items: list[Any]
    limit: int
    iterations: list[Optional[_Dag]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # the indexes of the iterations that failed
    next_index: int = 0
    running: int = 0
    ended: int = 0
    began: float = field(default_factory=time.monotonic)


@dataclass
class _Attempt:
    """A container task whose process runs, or waits for a retry."""

    dag: _Dag
    node: _Node
    started: TaskExecution
    message: pipeline_spec_pb2.ExecutorInput
    task: TaskLaunch
    began: float
    number: int = 0
    process: Optional[containers.TaskProcess] = None


@dataclass
class _KeyWait:
    """A container task whose cache key another runner holds: it looks again when its timer is due."""

    dag: _Dag
    node: _Node
    inputs: ResolvedInputs
    container: Any
    task: Task
    miss_reason: Optional[str]
    waiting: dedup.Waiting


class Scheduler:
    """Runs one pipeline run; see the module docstring."""

    def __init__(self, cache: ExecutionCache, pipeline: CompiledPipeline, run: PipelineRun, pipeline_root: Path,
                 env: dict[str, str], launcher: Launcher, parallelism: int, placeholders: RunPlaceholders,
                 on_task: Optional[Callable[[TaskReport], None]], on_start: Optional[Callable[[str], None]],
                 task_staleness: Optional[Mapping[str, datetime.timedelta]] = None, *, dedup: bool = True,
                 lease_seconds: float = leases.DEFAULT_LEASE_SECONDS, max_wait_seconds: Optional[float] = None,
                 on_wait: Optional[Callable[[str, int], None]] = None,
                 on_queued: Optional[Callable[[list[str]], None]] = None, stop: Optional[DeferredStop] = None,
                 watchdog: Optional[Watchdog] = None) -> None:
        self.cache, self.pipeline, self.run, self.pipeline_root = cache, pipeline, run, pipeline_root
        self.dedup, self.lease_seconds, self.on_wait = dedup, lease_seconds, on_wait
        self.max_wait_seconds = max_wait_seconds
        self.task_staleness = dict(task_staleness or {})  # by task path or task name
        self.env, self.launcher, self.placeholders = env, launcher, placeholders
        self.on_task, self.on_start, self.on_queued = on_task, on_start, on_queued
        self.stop = stop or DeferredStop()
        self.dags = DagRecorder(cache, run)
        self.reports: dict[str, TaskReport] = {}
        # The root DAG's outputs once it completed (the pipeline's outputs, root outputDefinitions).
        self.output_parameters: dict[str, Any] = {}
        self.output_artifacts: dict[str, ArtifactList] = {}
        self.root_execution_id: Optional[int] = None
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="mlmd-cache-task")
        # Ended processes; None wakes the loop for a stop signal (SimpleQueue.put is safe in a signal handler).
        self._finished: queue.SimpleQueue[Optional[tuple[_Attempt, int]]] = queue.SimpleQueue()
        self.stop.wake = lambda: self._finished.put(None)
        self._timers: list[tuple[float, int, _Attempt]] = []
        self._key_waits: list[tuple[float, int, _KeyWait]] = []
        self._sequence = itertools.count()
        self._running_attempts: dict[int, _Attempt] = {}
        self._parallelism = parallelism
        self._waiting: deque[Callable[[], None]] = deque()  # task processes and retries waiting for a slot
        self._open_dags: list[_Dag] = []
        self._open_loops: list[_Loop] = []
        self._dirty: deque[_Dag] = deque()
        self._cached: list[tuple[CachedRecord, TaskReport]] = []  # hits not yet recorded (_write_cached)
        self._watchdog = watchdog or Watchdog()  # stops the task processes if this process is killed

    # -- the loop ----------------------------------------------------------------------------------

    def run_root(self, arguments: dict[str, Any], artifacts: dict[str, ArtifactList]
                 ) -> tuple[mlmd.Execution, bool, dict[str, Any]]:
        """Run the root DAG; returns its execution, whether every task succeeded, and its output
        parameters. On an exception (Ctrl-C) every running process is stopped and every open
        execution marked FAILED before it propagates."""
        root = self.pipeline.spec.root
        # total_dag_tasks, as on every DAG: lineage counts the tasks a failure left without an execution by it
        execution = self.dags.start("", self.run.name, arguments, artifacts, None, total_dag_tasks=len(root.dag.tasks))
        self.root_execution_id = execution.id
        result: dict[str, Any] = {}

        def ended(dag: _Dag, state: str, parameters: dict[str, Any], outputs: dict[str, ArtifactList],
                  error: str) -> None:
            result.update(state=state, parameters=parameters)
            if state == COMPLETE:
                self.output_parameters, self.output_artifacts = parameters, outputs

        root_dag: Optional[_Dag] = None
        try:
            root_dag = self._open_dag("", root, execution, {**arguments, **artifacts}, ended,
                                      pipeline_spec_pb2.PipelineTaskSpec.RetryPolicy())
            self.stop.check()  # a stop signal is acted on here, between two steps, never amid a write
            self._advance()
            while not root_dag.ended:
                self._wait()
                self.stop.check()
                self._advance()
        except StoreFaultError as error:
            self._abort(write=False)  # each write would wait out the store's retries again
            raise StoreFaultError(f"{error}; run {self.run.name!r} stopped and its task processes with it "
                                  "(once the store is back, `mlmd-cache recover` marks its unfinished executions "
                                  "FAILED; a re-run reuses what completed)") from None
        except KeyboardInterrupt:
            attempts = [a for _, _, a in self._timers] + list(self._running_attempts.values())
            self._abort()
            if root_dag is not None:
                self._report_interrupted(root_dag, attempts)
            raise
        except BaseException:
            self._abort()
            raise
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._watchdog.close()
        return execution, result["state"] == COMPLETE, result["parameters"]

    def _wait(self) -> None:
        """Handle the next process that ends, then the retries and key waits that are due."""
        # A bounded wait keeps the loop responsive to signals (Ctrl-C, SIGTERM) on every platform.
        timeout = _POLL_SECONDS
        for timers in (self._timers, self._key_waits):
            if timers:
                timeout = min(timeout, max(0.0, timers[0][0] - time.monotonic()))
        try:
            ended = self._finished.get(timeout=timeout)
        except queue.Empty:
            ended = None
        if ended is not None:
            attempt, returncode = ended
            self._running_attempts.pop(id(attempt), None)
            self._process_ended(attempt, returncode)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, due = heapq.heappop(self._timers)
            self._waiting.append(lambda due=due: self._launch(due))
        while self._key_waits and self._key_waits[0][0] <= now:
            _, _, wait = heapq.heappop(self._key_waits)
            self._waiting.append(lambda wait=wait: self._execute(wait.dag, wait.node, wait.inputs, wait.container,
                                                                 wait.task, wait.miss_reason, wait))

    def _advance(self) -> None:
        """Start all that can start: ready tasks, then waiting processes (whose failure to start may
        make more tasks ready); then write the DAGs that ended."""
        self._drain()
        self._write_cached()  # before a miss starts: the records keep the order the tasks ended in
        while self._fill_slots():
            self._drain()
            self._write_cached()
        self.dags.flush()

    def _write_cached(self) -> None:
        """Write the CACHED records of the hits since the last call in one transaction, then report
        those tasks (a report names its execution's ID). Before the DAGs that ended: a DAG is never
        recorded ended before its tasks."""
        if not self._cached:
            return
        pending, self._cached = self._cached, []
        self.cache.write_cached(self.run, [record for record, _ in pending])
        for record, report in pending:
            report.execution_id = record.done.id
            self._report(report)

    def _drain(self) -> None:
        """Start every task whose upstream tasks have ended, in every DAG where something changed."""
        while self._dirty:
            dag = self._dirty.popleft()
            if dag.ended:
                continue
            for name in sorted(dag.pending):
                node = dag.nodes[name]
                if all(dag.nodes[upstream].report is not None for upstream in node.upstream):
                    dag.pending.discard(name)
                    self._start(dag, node)
            if not dag.pending and all(node.report is not None for node in dag.nodes.values()) and not dag.ended:
                self._end_dag(dag)

    def _abort(self, write: bool = True) -> None:
        """Stop every process and (``write``) mark every open execution FAILED, innermost first. Each
        write is tried on its own: when the store itself is what failed, the first error is the one to report."""
        for attempt in list(self._running_attempts.values()):
            if attempt.process is not None:
                attempt.process.stop()
        if not write:
            return
        try:
            self._write_cached()  # hits already taken are facts: a re-run need not look them up again
        except Exception:  # the store is gone: the first error is the one to report
            pass
        for attempt in [a for _, _, a in self._timers] + list(self._running_attempts.values()):
            try:
                self.cache.fail(attempt.started, stderr_log=_stderr_log(attempt))
            except Exception:  # already FAILED (a retry was waiting), or the store is gone
                pass
            if attempt.started.reservation is not None:  # a retry's waiters need not wait for the lease
                self.cache.heartbeats.release(attempt.started.reservation.id)
        self._timers.clear()
        self._key_waits.clear()
        for execution in reversed(self._open_executions()):
            self.dags.finish(execution, mlmd.Execution.FAILED)
        try:
            self.dags.flush()
        except Exception:
            pass

    def _report_interrupted(self, root: _Dag, attempts: list[_Attempt]) -> None:
        """After a stop (:meth:`_abort`): FAILED for every task whose process ran or waited for a
        retry, then, through the DAGs from the root, NOT_RUN for every task that had not started and
        FAILED for every DAG, loop and iteration still open (innermost first), as they are in MLMD."""
        now = time.monotonic()
        for attempt in sorted(attempts, key=lambda a: a.began):
            attempt.node.report = TaskReport(
                attempt.dag.path + attempt.node.name, FAILED, attempt.started.id,
                fingerprint=attempt.started.fingerprint, duration=now - attempt.began,
                error=f"{_INTERRUPTED}: its process was stopped", task_dir=str(attempt.task.task_dir),
                attempts=attempt.number)
            self._report(attempt.node.report)
        open_dags = {dag.path: dag for dag in self._open_dags if not dag.ended}
        loops = {(id(loop.dag), loop.node.name): loop for loop in self._open_loops}
        self._report_unfinished(root, now, open_dags, loops)

    def _report_unfinished(self, dag: _Dag, now: float, open_dags: dict[str, _Dag],
                           loops: dict[tuple[int, str], _Loop]) -> None:
        for name in sorted(dag.nodes):
            node = dag.nodes[name]
            if node.report is not None:
                continue
            path = dag.path + name
            loop, child = loops.get((id(dag), name)), open_dags.get(path + "/")
            if loop is not None:
                for index, iteration in enumerate(loop.iterations):
                    if iteration is None:  # not opened yet (the loop's parallelism): it and its tasks never ran
                        for inner, kind in self._inner_tasks(node.component, f"{path}/{index}/"):
                            self._report(TaskReport(inner, NOT_RUN, error=f"{_INTERRUPTED} before it started",
                                                    kind=kind))
                        self._report(TaskReport(f"{path}/{index}", NOT_RUN, error=f"{_INTERRUPTED} before it started",
                                                kind="iteration"))
                    elif not iteration.ended:
                        self._report_unfinished(iteration, now, open_dags, loops)
                        self._report(TaskReport(iteration.path.rstrip("/"), FAILED, iteration.execution.id,
                                                duration=now - iteration.began, error=_INTERRUPTED, kind="iteration"))
                node.report = TaskReport(path, FAILED, loop.execution.id, duration=now - loop.began,
                                         error=_INTERRUPTED, kind="loop")
            elif child is not None:
                self._report_unfinished(child, now, open_dags, loops)
                node.report = TaskReport(path, FAILED, child.execution.id, duration=now - child.began,
                                         error=_INTERRUPTED, kind="dag")
            else:  # not started, waiting for a slot, or waiting for a key another run holds
                for inner, kind in self._inner_tasks(node.component, path + "/"):
                    self._report(TaskReport(inner, NOT_RUN, error=f"{_INTERRUPTED} before it started", kind=kind))
                node.report = TaskReport(path, NOT_RUN, error=f"{_INTERRUPTED} before it started",
                                         kind=self._kind(node))
            self._report(node.report)

    def _open_executions(self) -> list[mlmd.Execution]:
        """The DAG and loop executions not yet ended, outermost first."""
        open_dags = [dag.execution for dag in self._open_dags if not dag.ended]
        open_loops = [loop.execution for loop in self._open_loops]
        return sorted(open_dags + open_loops, key=lambda execution: execution.id)

    # -- DAGs --------------------------------------------------------------------------------------

    def _open_dag(self, path: str, component: pipeline_spec_pb2.ComponentSpec, execution: mlmd.Execution,
                  inputs: dict[str, Any], on_end: Callable, retry: pipeline_spec_pb2.PipelineTaskSpec.RetryPolicy
                  ) -> _Dag:
        nodes = {}
        for name, spec in component.dag.tasks.items():
            nodes[name] = _Node(name, spec, self.pipeline.components[spec.component_ref.name],
                                frozenset(upstream_tasks(spec)),
                                spec.retry_policy if spec.retry_policy.max_retry_count else retry)
        dag = _Dag(path, component, execution, Scope(inputs), nodes, on_end, pending=set(nodes))
        self._open_dags.append(dag)
        self._dirty.append(dag)
        if self.on_queued is not None:
            self.on_queued([path + name for name, node in sorted(nodes.items())
                            if node.component.WhichOneof("implementation") != "dag"])
        return dag

    def _end_dag(self, dag: _Dag) -> None:
        dag.ended = True
        self._open_dags.remove(dag)
        failed = [n for n in dag.nodes.values() if n.report.state in (FAILED, NOT_RUN)]
        parameters: dict[str, Any] = {}
        artifacts: dict[str, ArtifactList] = {}
        error = ""
        if failed:
            first = min(failed, key=lambda n: (n.report.state != FAILED, n.name))
            error = f"task {dag.path + first.name!r} {'failed' if first.report.state == FAILED else 'did not run'}"
        else:
            try:
                parameters, artifacts = self._dag_outputs(dag)
            except InputError as error_:
                error = f"the DAG's outputs: {error_}"
        state = FAILED if error else COMPLETE
        self.dags.finish(dag.execution, _DAG_STATES[state], parameters, artifacts)
        dag.on_end(dag, state, parameters, artifacts, error)

    def _dag_outputs(self, dag: _Dag) -> tuple[dict[str, Any], dict[str, ArtifactList]]:
        return dag_outputs(dag.component.dag.outputs, dag.scope)

    def _child_ended(self, parent: _Dag, node: _Node, kind: str) -> Callable:
        def ended(child: _Dag, state: str, parameters: dict[str, Any], artifacts: dict[str, ArtifactList],
                  error: str) -> None:
            report = TaskReport(parent.path + node.name, state, child.execution.id, duration=time.monotonic() - child.began,
                                error=error, kind=kind, output_parameters=parameters,
                                output_artifact_ids=artifact_ids(artifacts))
            self._end(parent, node, report, {**parameters, **artifacts})
        return ended

    # -- a task's start and end --------------------------------------------------------------------

    def _end(self, dag: _Dag, node: _Node, report: TaskReport, outputs: Optional[dict[str, Any]] = None,
             announce: bool = True) -> None:
        """The task ended: its dependents may start. ``announce`` False: reported once recorded
        (a hit, by :meth:`_write_cached`)."""
        node.report = report
        dag.scope.put(node.name, report, outputs)
        if announce:
            self._report(report)
        self._dirty.append(dag)

    def _report(self, report: TaskReport) -> None:
        self.reports[report.name] = report
        if self.on_task is not None:
            self.on_task(report)

    def _start(self, dag: _Dag, node: _Node) -> None:
        path = dag.path + node.name
        upstream = sorted(node.upstream)
        if node.spec.trigger_policy.strategy != _ALL_UPSTREAM_TASKS_COMPLETED:
            failed = [u for u in upstream if dag.nodes[u].report.state in (FAILED, NOT_RUN)]
            if failed:
                return self._not_started(dag, node, NOT_RUN, f"upstream task {dag.path + failed[0]!r} did not succeed")
            skipped = [u for u in upstream if dag.nodes[u].report.state == SKIPPED]
            if skipped:
                return self._not_started(dag, node, SKIPPED, f"upstream task {dag.path + skipped[0]!r} was skipped")
        implementation = node.component.WhichOneof("implementation")
        try:
            inputs = resolve_inputs(node.name, node.spec, node.component, dag.scope, self.placeholders,
                                    dag.execution.id)
            if node.spec.trigger_policy.condition and not self._condition_holds(dag, node, inputs):
                return self._skip(dag, node, inputs)
        except (InputError, expressions.ExpressionError) as error:
            return self._end(dag, node, TaskReport(path, FAILED, error=str(error), kind=self._kind(node)))
        if implementation == "dag":
            if node.spec.WhichOneof("iterator"):
                return self._start_loop(dag, node, inputs)
            return self._start_sub_dag(dag, node, inputs)
        executor = self.pipeline.executors[node.component.executor_label]
        if executor.WhichOneof("spec") == "importer":
            return self._start_importer(dag, node, inputs, executor.importer)
        return self._start_container(dag, node, inputs, executor.container)

    # The steps below are where a plan (.planning.Planner) differs from a run: it decides what would
    # happen from the same inputs, where a run does it.

    def _condition_holds(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> bool:
        return expressions.evaluate_condition(node.spec.trigger_policy.condition, inputs.parameters)

    def _start_importer(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, importer: Any) -> None:
        path = dag.path + node.name
        began = time.monotonic()
        if self.on_start is not None:
            self.on_start(path)
        execution_id, outputs = importers.run_importer(self.cache, self.run, node.name, node.spec, node.component,
                                                       importer, inputs, dag.execution.id, str(self.pipeline_root))
        self._end(dag, node, TaskReport(path, COMPLETE, execution_id, duration=time.monotonic() - began,
                                        kind="importer", output_artifact_ids=artifact_ids(outputs)),
                  outputs)

    def _kind(self, node: _Node) -> str:
        if node.component.WhichOneof("implementation") == "dag":
            return "loop" if node.spec.WhichOneof("iterator") else "dag"
        executor = self.pipeline.executors[node.component.executor_label]
        return "importer" if executor.WhichOneof("spec") == "importer" else "container"

    def _not_started(self, dag: _Dag, node: _Node, state: str, reason: str, execution_id: Optional[int] = None) -> None:
        """NOT_RUN or SKIPPED, for the task and, in a DAG task, every task inside it."""
        path = dag.path + node.name
        for inner, kind in self._inner_tasks(node.component, path + "/"):
            self._report(TaskReport(inner, state, error=reason, kind=kind))
        self._end(dag, node, TaskReport(path, state, execution_id, error=reason, kind=self._kind(node)))

    def _inner_tasks(self, component: pipeline_spec_pb2.ComponentSpec, prefix: str) -> Iterator[tuple[str, str]]:
        """The paths and kinds of the tasks inside a DAG component, innermost first."""
        if component.WhichOneof("implementation") != "dag":
            return
        for name, spec in component.dag.tasks.items():
            inner = _Node(name, spec, self.pipeline.components[spec.component_ref.name], frozenset(), spec.retry_policy)
            if not spec.WhichOneof("iterator"):  # a loop's iterations are not known until it runs
                yield from self._inner_tasks(inner.component, f"{prefix}{name}/")
            yield prefix + name, self._kind(inner)

    def _skip(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> None:
        """A branch not taken: its DAG execution recorded CANCELED (KFP), no execution for its tasks."""
        is_dag = node.component.WhichOneof("implementation") == "dag"
        execution = self.dags.start(
            node.name, node.spec.task_info.name or node.name, inputs.parameters, inputs.artifacts, dag.execution.id,
            total_dag_tasks=len(node.component.dag.tasks) if is_dag else None, state=mlmd.Execution.CANCELED,
            execution_type=records.DAG_EXECUTION_TYPE if is_dag else records.CONTAINER_EXECUTION_TYPE)
        reason = "the condition of " + (f"{dag.path + node.name!r}" if is_dag else "the task") + " is false"
        self._not_started(dag, node, SKIPPED, reason, execution.id)

    def _start_sub_dag(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> None:
        """A nested pipeline, condition branch or exit handler group: its own DAG execution."""
        execution = self.dags.start(node.name, node.spec.task_info.name or node.name, inputs.parameters,
                                    inputs.artifacts, dag.execution.id, total_dag_tasks=len(node.component.dag.tasks))
        self._open_dag(f"{dag.path}{node.name}/", node.component, execution,
                       {**inputs.parameters, **inputs.artifacts}, self._child_ended(dag, node, "dag"), node.retry)

    # -- loops -------------------------------------------------------------------------------------

    @staticmethod
    def _loop_items(node: _Node, inputs: ResolvedInputs) -> tuple[Any, dict[str, Any]]:
        """The items of a ``dsl.ParallelFor`` (a list, unless the input is not one), and the loop's parameters.
        Over artifacts (``artifact_iterator``), the items are the looped-over list of artifacts."""
        if node.spec.WhichOneof("iterator") == "artifact_iterator":
            name = node.spec.artifact_iterator.items.input_artifact
            # None (not a list) when the loop's DAG has no such input: the loop fails saying so
            return inputs.artifacts.get(name), dict(inputs.parameters)
        iterator = node.spec.parameter_iterator
        parameters = dict(inputs.parameters)
        if iterator.items.WhichOneof("kind") == "raw":
            items: Any = json.loads(iterator.items.raw)
            parameters[iterator.item_input] = items  # as KFP's driver keeps a literal list
        else:
            items = parameters.get(iterator.items.input_parameter)
            if isinstance(items, str):
                try:
                    items = json.loads(items)
                except ValueError:
                    pass
        return items, parameters

    def _start_loop(self, dag: _Dag, node: _Node, inputs: ResolvedInputs) -> None:
        path = dag.path + node.name
        items, parameters = self._loop_items(node, inputs)
        if not isinstance(items, list):
            what = (f"input artifact {node.spec.artifact_iterator.items.input_artifact!r} has no artifacts"
                    if node.spec.WhichOneof("iterator") == "artifact_iterator"
                    else f"the items are not a list: {json.dumps(items)[:200]}")
            return self._end(dag, node, TaskReport(path, FAILED, kind="loop", error=f"dsl.ParallelFor: {what}"))
        # The loop's record holds the whole list: an INPUT event per artifact of a list of artifacts.
        execution = self.dags.start(node.name, node.spec.task_info.name or node.name, parameters, inputs.artifacts,
                                    dag.execution.id, total_dag_tasks=len(node.component.dag.tasks),
                                    iteration_count=len(items))
        limit = node.spec.iterator_policy.parallelism_limit or len(items) or 1
        loop = _Loop(dag, node, execution, inputs, items, limit, [None] * len(items))
        self._open_loops.append(loop)
        self._open_iterations(loop)

    @staticmethod
    def _iteration_inputs(loop: _Loop, index: int) -> tuple[dict[str, Any], dict[str, ArtifactList]]:
        """The inputs an iteration's record holds: the loop's, with the looped-over list replaced by the
        iteration's item under the item's name, as KFP's driver records an iteration."""
        node, item = loop.node, loop.items[index]
        parameters = dict(loop.inputs.parameters)
        artifacts = dict(loop.inputs.artifacts)
        if node.spec.WhichOneof("iterator") == "artifact_iterator":
            iterator = node.spec.artifact_iterator
            artifacts.pop(iterator.items.input_artifact, None)
            # first: MLMD keeps one event per artifact, under the first name it comes under
            return parameters, {iterator.item_input: [item], **artifacts}
        parameter_iterator = node.spec.parameter_iterator
        if parameter_iterator.items.WhichOneof("kind") != "raw":
            parameters.pop(parameter_iterator.items.input_parameter, None)
        declared = node.component.input_definitions.parameters
        item_spec = declared.get(parameter_iterator.item_input)
        parameters[parameter_iterator.item_input] = coerce(item, item_spec.parameter_type) if item_spec else item
        return parameters, artifacts

    def _open_iterations(self, loop: _Loop) -> None:
        if loop.ended == len(loop.items):
            return self._end_loop(loop)
        node = loop.node
        opening = []
        while loop.running < loop.limit and loop.next_index < len(loop.items):
            index = loop.next_index
            loop.next_index += 1
            loop.running += 1
            parameters, artifacts = self._iteration_inputs(loop, index)
            execution = self.dags.new(node.name, node.spec.task_info.name or node.name, parameters, loop.execution.id,
                                      total_dag_tasks=len(node.component.dag.tasks), iteration_index=index)
            opening.append((index, parameters, artifacts, execution))
        self.dags.write([(execution, artifacts) for _, _, artifacts, execution in opening])  # one transaction
        for index, parameters, artifacts, execution in opening:
            path = f"{loop.dag.path}{node.name}/{index}/"
            # The iteration's record leaves the looped-over list out, as KFP's driver does, but its tasks
            # still see it (kfp.local too): a loop inside may go over the same list.
            scope = {**loop.inputs.parameters, **loop.inputs.artifacts, **parameters, **artifacts}
            loop.iterations[index] = self._open_dag(path, node.component, execution, scope,
                                                    self._iteration_ended(loop, index), node.retry)

    def _iteration_ended(self, loop: _Loop, index: int) -> Callable:
        def ended(child: _Dag, state: str, parameters: dict[str, Any], artifacts: dict[str, ArtifactList],
                  error: str) -> None:
            self._report(TaskReport(child.path.rstrip("/"), state, child.execution.id, kind="iteration",
                                    duration=time.monotonic() - child.began, error=error))
            loop.running -= 1
            loop.ended += 1
            if state != COMPLETE:
                loop.failed.append(index)
            self._open_iterations(loop)
        return ended

    def _end_loop(self, loop: _Loop) -> None:
        self._open_loops.remove(loop)
        dag, node = loop.dag, loop.node
        path = dag.path + node.name
        iterations = [iteration for iteration in loop.iterations if iteration is not None]
        parameters: dict[str, Any] = {}
        artifacts: dict[str, ArtifactList] = {}
        error = f"iteration {min(loop.failed)} did not succeed" if loop.failed else ""
        if not error:
            inner_loops = frozenset(name for name, spec in node.component.dag.tasks.items() if spec.WhichOneof("iterator"))
            try:
                parameters, artifacts = collect_outputs(node.component.dag.outputs, [i.scope for i in iterations],
                                                        inner_loops)
            except InputError as error_:
                error = f"the loop's outputs: {error_}"
        state = FAILED if error else COMPLETE
        self.dags.finish(loop.execution, _DAG_STATES[state], parameters, artifacts)
        report = TaskReport(path, state, loop.execution.id, duration=time.monotonic() - loop.began, error=error,
                            kind="loop", output_parameters=parameters,
                            output_artifact_ids=artifact_ids(artifacts))
        self._end(dag, node, report, {**parameters, **artifacts})

    # -- container tasks ---------------------------------------------------------------------------

    def _start_container(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, container: Any) -> None:
        """A hit is recorded at once; a miss waits for a free slot (:meth:`_fill_slots`), so that an
        execution is RUNNING only while its process runs."""
        began = time.monotonic()
        task = self._cache_task(dag, node, inputs, container)
        try:
            task = self.cache.keyed(self.run, task)  # by content in a key_by_content run: once, for lookup and start
            found = self.cache.look_up(self.run, task)
            if found.hit is not None:  # recorded with the other hits of this step (_write_cached)
                record = self.cache.cached_record(self.run, task, found.hit)
                report = self._container_ended(dag, node, record.done, began, None, attempts=0, announce=False)
                self._cached.append((record, report))
                return
        except StoreFaultError:  # the store is gone: the run ends, not the task
            raise
        except MlmdCacheError as error:  # e.g. an input artifact that no longer exists
            return self._end(dag, node, TaskReport(dag.path + node.name, FAILED, error=str(error)))
        self._waiting.append(lambda: self._execute(dag, node, inputs, container, task, found.miss_reason))

    def _cache_task(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, container: Any) -> Task:
        """The task as the cache sees it (its key, and its own max staleness by path or name)."""
        return containers.cache_task(node.name, node.spec, node.component, container, inputs, dag.execution.id,
                                     max_staleness=self.task_staleness.get(dag.path + node.name,
                                                                           self.task_staleness.get(node.name)))

    def _fill_slots(self) -> bool:
        """Start waiting tasks and retries while fewer than ``parallelism`` processes run; whether any started."""
        started = False
        while self._waiting and len(self._running_attempts) < self._parallelism:
            self._waiting.popleft()()
            started = True
        return started

    def _execute(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, container: Any, task: Any,
                 miss_reason: Optional[str] = None, wait: Optional[_KeyWait] = None) -> None:
        began = time.monotonic() if wait is None else wait.waiting.began
        path = dag.path + node.name
        try:
            started = self._reserve(dag, node, inputs, container, task, miss_reason, wait)
        except StoreFaultError:  # the store is gone: the run ends, not the task
            raise
        except MlmdCacheError as error:
            return self._end(dag, node, TaskReport(path, FAILED, error=str(error)))
        if started is None:  # a hit after all, or another runner holds the key
            return
        if self.on_start is not None:
            self.on_start(path)
        task_dir = self.pipeline_root / safe_name(self.run.name) / task_directory(path) / str(started.id)
        try:
            task_dir.mkdir(parents=True, exist_ok=True)
            message = containers.executor_input(node.component, inputs, str(task_dir))

            def resolve(arguments: list[str]) -> list[str]:
                return containers.command_line(arguments, message, node.component, job_name=self.run.name,
                                               task_name=node.name, pipeline_root=str(self.pipeline_root),
                                               job_id=self.run.name)

            entrypoint = resolve(list(container.command))
            command = [*entrypoint, *resolve(list(container.args))]
            env = containers.task_env(self.env, container, resolve)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:  # kfp.local's placeholder errors
            self.cache.fail(started)
            return self._end(dag, node, TaskReport(path, FAILED, started.id, fingerprint=started.fingerprint,
                                                   error=f"cannot prepare the task: {error}", task_dir=str(task_dir)))
        uris = tuple(artifact.uri for artifacts in message.inputs.artifacts.values() for artifact in artifacts.artifacts)
        launch = TaskLaunch(command, len(entrypoint), env, container, task_dir, self.pipeline_root, self.run.name, path,
                            started.id, resolve=resolve, input_uris=uris)
        self._launch(_Attempt(dag, node, started, message, launch, began))

    def _reserve(self, dag: _Dag, node: _Node, inputs: ResolvedInputs, container: Any, task: Task,
                 miss_reason: Optional[str], wait: Optional[_KeyWait]) -> Optional[TaskExecution]:
        """Start the task's execution, holding its cache key (:mod:`mlmd_cache.cache.dedup`) when caching
        is on; None when another runner completed the key meanwhile (the task ended CACHED) or holds
        it now (the task waits, holding no slot, and looks again on a backoff timer)."""
        if not self.dedup or not self.cache.caching_enabled(self.run, task):
            return self.cache.start(self.run, task, miss_reason)
        if wait is not None and wait.waiting.over():
            return wait.waiting.start_anyway(self.cache, self.run, task)
        claimed = self.cache.claim(self.run, task, miss_reason, lease_seconds=self.lease_seconds,
                                   known=wait.waiting.generation if wait is not None else 0)
        if claimed.hit is not None:
            done = self.cache.reuse(self.run, task, claimed.hit)
            self._container_ended(dag, node, done, wait.waiting.began if wait is not None else time.monotonic(), None,
                                  attempts=0)
            return None
        if claimed.held is None:
            return claimed.started
        if wait is None:
            wait = _KeyWait(dag, node, inputs, container, task, miss_reason,
                            dedup.Waiting(self.lease_seconds, self.max_wait_seconds))
        if wait.waiting.saw(claimed) and self.on_wait is not None:
            self.on_wait(dag.path + node.name, wait.waiting.holder)
        heapq.heappush(self._key_waits, (time.monotonic() + wait.waiting.next_delay(), next(self._sequence), wait))
        return None

    def _launch(self, attempt: _Attempt) -> None:
        if attempt.number > 0:
            attempt.started = self.cache.restart(attempt.started)
        attempt.number += 1
        attempt.process = containers.TaskProcess(attempt.task, self.launcher, attempt.number,
                                                 self.pipeline.timeouts.get(attempt.node.component.executor_label),
                                                 self._watchdog)
        self._running_attempts[id(attempt)] = attempt
        process = attempt.process
        self._pool.submit(lambda: self._finished.put((attempt, _returncode(process))))

    def _process_ended(self, attempt: _Attempt, returncode: int) -> None:
        dag, node, started = attempt.dag, attempt.node, attempt.started
        error = ""
        if returncode == 0:
            try:
                outputs = containers.produced_outputs(node.component, attempt.message)
                done = self.cache.publish(started, outputs)
            except StoreFaultError:  # the store is gone: the run ends, not the task
                raise
            except MlmdCacheError as failure:  # outputs that do not match the component's declaration
                error = str(failure)
            except ValueError as failure:  # an unreadable output parameter file (kfp.local's own error)
                error = f"{failure}: {failure.__cause__ or ''}".rstrip(": ")
            else:
                return self._container_ended(dag, node, done, attempt.began, str(attempt.task.task_dir), attempt.number)
        elif attempt.process.setup_error:
            error = attempt.process.setup_error
        elif attempt.process.timed_out:
            error = f"stopped after {attempt.process.timeout:g} s (kubernetes.set_timeout)"
        else:
            tail = containers.stderr_tail(attempt.process.stderr_path)
            full = containers.disk_full(attempt.task.task_dir, tail)
            error = f"exit code {returncode}" + (f"; {full}" if full else "") + "\n" + tail
        retrying = attempt.number <= node.retry.max_retry_count
        try:
            self.cache.fail(started, keep_reservation=retrying, stderr_log=_stderr_log(attempt))
        except ExecutionStateError:  # no longer RUNNING: marked FAILED by a runner that took its key over, or by recover
            retrying = False
            error = (f"its execution {started.id} was marked FAILED meanwhile by another runner that took over "
                     "its cache key (its lease ran out), or by `mlmd-cache recover`")
        if retrying:
            delay = _backoff(node.retry, attempt.number)
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), attempt))
            return
        self._end(dag, node, TaskReport(dag.path + node.name, FAILED, started.id, fingerprint=started.fingerprint,
                                        duration=time.monotonic() - attempt.began, error=error.strip(),
                                        task_dir=str(attempt.task.task_dir), attempts=attempt.number))

    def _container_ended(self, dag: _Dag, node: _Node, done: TaskExecution, began: float, task_dir: Optional[str],
                         attempts: int, announce: bool = True) -> TaskReport:
        outputs = containers.scope_outputs(done, node.component)
        report = TaskReport(dag.path + node.name, done.state, done.id, done.cached_execution_id, done.fingerprint,
                            time.monotonic() - began, task_dir=task_dir, output_artifact_ids=done.output_artifact_ids,
                            output_parameters={k: v for k, v in outputs.items() if k in done.output_parameters},
                            attempts=attempts)
        self._end(dag, node, report, outputs, announce)
        return report


def _stderr_log(attempt: _Attempt) -> Optional[str]:
    """The path of the attempt's stderr, once its process was made (None for a retry not yet begun)."""
    return str(attempt.process.stderr_path) if attempt.process is not None else None


def _returncode(process: containers.TaskProcess) -> int:
    try:
        return process.run()
    except BaseException:  # never lose an attempt: the loop waits for every one
        return -1


def _backoff(policy: pipeline_spec_pb2.PipelineTaskSpec.RetryPolicy, attempt: int) -> float:
    """Seconds before retry ``attempt`` (1 = the first retry): backoff_duration x factor^(n-1),
    at most backoff_max_duration, as Argo's retryStrategy computes it."""
    duration = policy.backoff_duration.ToTimedelta().total_seconds()
    factor = policy.backoff_factor or 2.0
    delay = duration * factor ** (attempt - 1)
    if policy.HasField("backoff_max_duration"):
        delay = min(delay, policy.backoff_max_duration.ToTimedelta().total_seconds())
    return max(0.0, delay)
