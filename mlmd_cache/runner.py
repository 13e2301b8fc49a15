"""Run a compiled KFP v2 pipeline locally, task by task, with KFP's caching and MLMD records.

The tasks of the root DAG run in dependency order (``kfp.local.graph_utils``) as local subprocesses:
lightweight Python components and container components whose command exists on this host (the
image is recorded, never pulled). Arguments, executor input, placeholders and executor output are
handled by the KFP SDK's own local-execution helpers (``kfp.local.dag_orchestrator``,
``executor_input_utils``, ``placeholder_utils``, ``executor_output_utils``). Each task goes through
:class:`~mlmd_cache.cache.ExecutionCache` with the cache key KFP's driver builds: a hit never starts
the subprocess and hands the source's very artifacts (same IDs, same URIs) to downstream tasks.

A lightweight component's command begins with ``python3 -m pip install ... 'kfp==2.13.0'``: tasks
run with a shim directory first on their PATH whose ``python3``/``python`` is the runner's own
interpreter and whose ``pip install`` installs only what that interpreter lacks
(:mod:`mlmd_cache._pip_shim`), so the preamble costs milliseconds and the commands run unchanged.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from google.protobuf import json_format
from kfp import dsl
from kfp.local import (dag_orchestrator, executor_input_utils, executor_output_utils, graph_utils, importer_handler, io,
                       placeholder_utils)
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import records
from .cache import ExecutionCache, Outputs, PipelineRun, Task, TaskExecution
from .connection import connection_config, default_store_path, default_store_url
from .errors import MlmdCacheError
from .key import CacheKey
from .pipeline_spec import CompiledPipeline, ExecutorSpec, UnsupportedPipelineError, iter_tasks

__all__ = ["run_pipeline", "RunReport", "TaskReport", "default_pipeline_root"]

COMPLETE, CACHED, FAILED, NOT_RUN = "COMPLETE", "CACHED", "FAILED", "NOT_RUN"
_STDERR_TAIL_LINES = 20
_PIP_SHIM = Path(__file__).resolve().with_name("_pip_shim.py")
# Artifacts whose content is their metadata (``metrics.log_metric(...)``): a task often never writes
# their file. The runner then leaves an empty file at the URI, so that the execution stays a valid
# cache source (ExecutionCache refuses sources whose local output files are gone).
_METADATA_ARTIFACTS = frozenset({"system.Metrics", "system.ClassificationMetrics",
                                 "system.SlicedClassificationMetrics"})


@dataclass
class TaskReport:
    """What happened to one task of a run."""

    name: str
    state: str  # COMPLETE, CACHED, FAILED or NOT_RUN
    execution_id: Optional[int] = None
    cached_execution_id: Optional[int] = None
    fingerprint: Optional[str] = None
    duration: float = 0.0
    error: str = ""  # why it failed: the tail of its stderr, or the reason
    task_dir: Optional[str] = None
    output_artifact_ids: dict[str, list[int]] = field(default_factory=dict)
    output_parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "execution_id": self.execution_id,
                "cached_execution_id": self.cached_execution_id, "fingerprint": self.fingerprint}


@dataclass
class RunReport:
    """A pipeline run: its name, its root DAG execution and a report per task (in run order)."""

    run: str
    pipeline: str
    dag_execution_id: int
    tasks: dict[str, TaskReport]

    @property
    def succeeded(self) -> bool:
        return all(task.state in (COMPLETE, CACHED) for task in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "pipeline": self.pipeline,
                "tasks": {name: task.to_dict() for name, task in self.tasks.items()}}


def default_pipeline_root(db_url: Optional[str]) -> Path:
    """Beside the store: ``<directory of the SQLite file>/pipeline-root``; for a server store, beside
    the embedded default store."""
    config = connection_config(db_url or default_store_url())
    if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite") \
            and config.sqlite.filename_uri != ":memory:":
        return Path(config.sqlite.filename_uri).parent / "pipeline-root"
    return default_store_path().parent / "pipeline-root"


# -- the python3/pip shim ---------------------------------------------------------------------------

def _write_shims(directory: Path) -> None:
    python = shlex.quote(sys.executable)
    check = f"{python} -I {shlex.quote(str(_PIP_SHIM))}"
    scripts = {
        "python3": f'if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then\n'
                   f'    shift 3\n    exec {check} "$@"\nfi\nexec {python} "$@"\n',
        "pip": f'if [ "$1" = "install" ]; then\n    shift\n    exec {check} "$@"\nfi\nexec {python} -m pip "$@"\n',
    }
    scripts["python"] = scripts["python3"]
    scripts["pip3"] = scripts["pip"]
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/bin/sh\n# mlmd-cache run-pipeline: the runner's Python; pip installs only what is missing.\n"
                        + body)
        path.chmod(0o755)


# -- the runner -------------------------------------------------------------------------------------

class _Runner:
    def __init__(self, cache: ExecutionCache, pipeline: CompiledPipeline, run: PipelineRun, pipeline_root: Path,
                 on_task: Optional[Callable[[TaskReport], None]], on_start: Optional[Callable[[str], None]],
                 env: dict[str, str]) -> None:
        self.cache, self.pipeline, self.run, self.pipeline_root = cache, pipeline, run, pipeline_root
        self.on_task, self.on_start = on_task, on_start
        self.env = env
        self.reports: dict[str, TaskReport] = {}
        self.types = cache.types

    # DAG executions (system.DAGExecution): the root DAG, and one per nested pipeline task
    def start_dag(self, task_name: str, display_name: str, arguments: Mapping[str, Any],
                  parent_dag_id: Optional[int]) -> mlmd.Execution:
        execution = mlmd.Execution(type_id=self.types.execution_type(records.DAG_EXECUTION_TYPE),
                                   last_known_state=mlmd.Execution.RUNNING)
        properties = execution.custom_properties
        properties[records.DISPLAY_NAME].string_value = display_name
        properties[records.TASK_NAME].string_value = task_name
        parameters = {k: v for k, v in arguments.items() if not isinstance(v, dsl.Artifact)}
        properties[records.INPUTS].CopyFrom(records.struct_value(parameters))
        if parent_dag_id is not None:
            properties[records.PARENT_DAG_ID].int_value = parent_dag_id
        execution.id, _, _ = self.cache.store.put_execution(
            execution, [], [self.run.pipeline_context, self.run.run_context], force_reuse_context=True)
        return execution

    def finish_dag(self, execution: mlmd.Execution, state: int, outputs: Mapping[str, Any] = {}) -> None:
        execution = self.cache.store.get_executions_by_id([execution.id])[0]
        execution.last_known_state = state
        if outputs:
            execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(outputs))
        self.cache.store.put_executions([execution])

    def _report(self, report: TaskReport) -> None:
        self.reports[report.name] = report
        if self.on_task is not None:
            self.on_task(report)

    def run_dag(self, component: pipeline_spec_pb2.ComponentSpec, arguments: Mapping[str, Any], prefix: str,
                dag_execution: mlmd.Execution) -> tuple[io.IOStore, bool]:
        """Run the tasks of a DAG in dependency order; a task whose upstream failed is NOT_RUN.
        Returns the DAG's IOStore and whether every task succeeded."""
        io_store = io.IOStore()
        for name, value in arguments.items():
            io_store.put_parent_input(name, value)
        dag = component.dag
        outcome: dict[str, str] = {}
        order = graph_utils.topological_sort_tasks(dag.tasks)
        while order:
            name = order.pop()
            task_spec = dag.tasks[name]
            blocked = [upstream for upstream in task_spec.dependent_tasks if outcome[upstream] in (FAILED, NOT_RUN)]
            if not blocked and self.on_start is not None:
                self.on_start(prefix + name)
            if blocked:
                report = TaskReport(prefix + name, NOT_RUN, error=f"upstream task {prefix + blocked[0]!r} did not succeed")
            elif self.pipeline.components[task_spec.component_ref.name].WhichOneof("implementation") == "dag":
                report = self.run_nested(name, task_spec, io_store, prefix, dag_execution.id)
            elif self._executor(task_spec).WhichOneof("spec") == "importer":
                report = self.run_importer(name, task_spec, io_store, prefix, dag_execution.id)
            else:
                report = self.run_task(name, task_spec, io_store, prefix, dag_execution.id)
            outcome[name] = report.state
            self._report(report)
        return io_store, all(state in (COMPLETE, CACHED) for state in outcome.values())

    def _executor(self, task_spec) -> ExecutorSpec:
        return self.pipeline.executors[self.pipeline.components[task_spec.component_ref.name].executor_label]

    def run_importer(self, name: str, task_spec, io_store: io.IOStore, prefix: str, parent_dag_id: int) -> TaskReport:
        """dsl.importer, as KFP's importer launcher records it: a ``system.ImporterExecution`` whose
        OUTPUT event ``artifact`` points at the artifact of that URI and type, which is reused when
        one exists (``reimport=False``) so downstream cache keys stay the same, else created.
        Importers are never cached and run nothing."""
        began = time.monotonic()
        component = self.pipeline.components[task_spec.component_ref.name]
        importer = self._executor(task_spec).importer
        arguments = dag_orchestrator.make_task_arguments(task_spec.inputs, io_store)
        executor_input = executor_input_utils.construct_executor_input(component, arguments, "",
                                                                       block_input_artifact=False)
        uri = importer_handler.get_importer_uri(importer, executor_input)
        metadata = placeholder_utils.recursively_resolve_json_dict_placeholders(
            json_format.MessageToDict(importer.metadata),
            executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
            pipeline_resource_name=self.run.name, task_resource_name=name, pipeline_root=str(self.pipeline_root),
            pipeline_job_id=self.run.name, pipeline_task_id=name)
        store = self.cache.store
        type_id = self.types.artifact_type(importer.type_schema.schema_title or "system.Artifact")
        artifact = None
        if not importer.reimport:
            existing = [a for a in store.get_artifacts_by_uri(uri)
                        if a.type_id == type_id and a.state == mlmd.Artifact.LIVE]
            artifact = max(existing, key=lambda a: a.id) if existing else None
        if artifact is None:
            artifact = mlmd.Artifact(type_id=type_id, uri=uri, state=mlmd.Artifact.LIVE)
            artifact.custom_properties[records.DISPLAY_NAME].string_value = "artifact"
            for key, value in metadata.items():
                if not isinstance(value, (bool, int, float, str, dict)):
                    continue  # lists: no MLMD value type holds them
                artifact.custom_properties[key].CopyFrom(records.metadata_value(name, key, value))
        execution = mlmd.Execution(type_id=self.types.execution_type(records.IMPORTER_EXECUTION_TYPE),
                                   last_known_state=mlmd.Execution.COMPLETE)
        properties = execution.custom_properties
        properties[records.DISPLAY_NAME].string_value = task_spec.task_info.name or name
        properties[records.TASK_NAME].string_value = name
        properties[records.PARENT_DAG_ID].int_value = parent_dag_id
        properties[records.INPUTS].CopyFrom(records.struct_value(
            {k: v for k, v in arguments.items() if not isinstance(v, dsl.Artifact)}))
        event = mlmd.Event(type=mlmd.Event.OUTPUT)
        event.path.steps.add(key="artifact")
        execution_id, [artifact.id], _ = store.put_execution(
            execution, [(artifact, event)], [self.run.pipeline_context, self.run.run_context],
            force_reuse_context=True)
        io_store.put_task_output(name, "artifact", _dsl_artifact(artifact, importer.type_schema))
        return TaskReport(prefix + name, COMPLETE, execution_id, duration=time.monotonic() - began,
                          output_artifact_ids={"artifact": [artifact.id]})

    def run_nested(self, name: str, task_spec, parent_io: io.IOStore, prefix: str, parent_dag_id: int) -> TaskReport:
        """A pipeline used as a component: its own DAG execution, its tasks, its outputs."""
        began = time.monotonic()
        component = self.pipeline.components[task_spec.component_ref.name]
        arguments = dag_orchestrator.join_user_inputs_and_defaults(
            dag_orchestrator.make_task_arguments(task_spec.inputs, parent_io), component.input_definitions)
        execution = self.start_dag(name, task_spec.task_info.name or name, arguments, parent_dag_id)
        try:
            inner_io, succeeded = self.run_dag(component, arguments, f"{prefix}{name}/", execution)
            if not succeeded:
                self.finish_dag(execution, mlmd.Execution.FAILED)
                return TaskReport(prefix + name, FAILED, execution.id, duration=time.monotonic() - began,
                                  error="a task of this nested pipeline did not succeed")
            outputs = dag_orchestrator.get_dag_outputs(component.dag.outputs, inner_io)
        except BaseException:
            self.finish_dag(execution, mlmd.Execution.FAILED)
            raise
        for output, value in outputs.items():
            parent_io.put_task_output(name, output, value)
        parameters = {k: v for k, v in outputs.items() if not isinstance(v, dsl.Artifact)}
        self.finish_dag(execution, mlmd.Execution.COMPLETE, parameters)
        return TaskReport(prefix + name, COMPLETE, execution.id, duration=time.monotonic() - began,
                          output_parameters=parameters)

    def _cache_task(self, name: str, task_spec, component, container, executor_input, parent_dag_id: int) -> Task:
        output_artifacts = {}
        for output, spec in component.output_definitions.artifacts.items():
            # KFP's driver: the output RuntimeArtifact without URI or name: type and metadata only.
            artifact = pipeline_spec_pb2.RuntimeArtifact(type=spec.artifact_type)
            if spec.HasField("metadata"):
                artifact.metadata.CopyFrom(spec.metadata)
            output_artifacts[output] = artifact
        input_artifacts = {
            input_name: [int(artifact.name) for artifact in artifacts.artifacts]
            for input_name, artifacts in executor_input.inputs.artifacts.items()
        }
        key = CacheKey.build(
            image=container.image,
            command=list(container.command),
            args=list(container.args),
            input_artifacts=input_artifacts,
            input_parameters={k: json_format.MessageToDict(v) for k, v in executor_input.inputs.parameter_values.items()},
            output_artifacts=output_artifacts,
            output_parameters={k: pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(v.parameter_type)
                               for k, v in component.output_definitions.parameters.items()},
        )
        options = task_spec.caching_options
        return Task(name, key, display_name=task_spec.task_info.name or name, enable_cache=options.enable_cache,
                    cache_key=options.cache_key, component_name=task_spec.component_ref.name,
                    parent_dag_id=parent_dag_id)

    def run_task(self, name: str, task_spec, io_store: io.IOStore, prefix: str, parent_dag_id: int) -> TaskReport:
        """One container task: a cache hit, or its command run as a subprocess and its outputs published."""
        began = time.monotonic()
        component = self.pipeline.components[task_spec.component_ref.name]
        container = self.pipeline.executors[component.executor_label].container
        arguments = dag_orchestrator.make_task_arguments(task_spec.inputs, io_store)
        path = prefix + name

        def executor_input_at(task_root: str) -> pipeline_spec_pb2.ExecutorInput:
            return executor_input_utils.construct_executor_input(component, arguments, task_root,
                                                                 block_input_artifact=False)

        task = self._cache_task(name, task_spec, component, container, executor_input_at(""), parent_dag_id)
        hit = self.cache.lookup(self.run, task)
        if hit is not None:
            done = self.cache.reuse(self.run, task, hit)
            return self._finished(path, done, component, io_store, began, task_dir=None)
        started = self.cache.start(self.run, task)
        task_dir = self.pipeline_root / self.run.name / path / str(started.id)
        try:
            task_dir.mkdir(parents=True, exist_ok=True)
            executor_input = executor_input_at(str(task_dir))
            command = placeholder_utils.replace_placeholders(
                full_command=[*container.command, *container.args],
                executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
                pipeline_resource_name=self.run.name,
                task_resource_name=name,
                pipeline_root=str(self.pipeline_root),
                unique_pipeline_id=self.run.name,
            )
            returncode = self._run_subprocess(command, task_dir)
            if returncode != 0:
                self.cache.fail(started)
                return self._failed(path, started, began, task_dir,
                                    f"exit code {returncode}\n" + _tail(task_dir / "stderr.log"))
            produced = executor_output_utils.get_outputs_for_task(executor_input, component)
            done = self.cache.publish(started, self._outputs(component, executor_input, produced))
        except MlmdCacheError as error:  # outputs that do not match the component's declaration
            self.cache.fail(started)
            return self._failed(path, started, began, task_dir, str(error))
        except ValueError as error:  # an unreadable output parameter file (kfp.local's own error)
            self.cache.fail(started)
            return self._failed(path, started, began, task_dir, f"{error}: {error.__cause__ or ''}".rstrip(": "))
        except BaseException:  # Ctrl-C, or a bug: never leave the execution RUNNING
            self.cache.fail(started)
            raise
        return self._finished(path, done, component, io_store, began, task_dir=str(task_dir))

    def _run_subprocess(self, command: list[str], task_dir: Path) -> int:
        with open(task_dir / "stdout.log", "wb") as stdout, open(task_dir / "stderr.log", "wb") as stderr:
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                           env=self.env, cwd=task_dir, start_new_session=True)
            except OSError as error:
                stderr.write(f"cannot start {command[0]!r}: {error.strerror}\n".encode())
                return 127
            try:
                return process.wait()
            except BaseException:
                _stop(process)
                raise

    @staticmethod
    def _outputs(component, executor_input, produced: Mapping[str, Any]) -> Outputs:
        artifacts: dict[str, str] = {}
        metadata: dict[str, dict[str, Any]] = {}
        for output in component.output_definitions.artifacts:
            artifact = produced.get(output)
            if isinstance(artifact, dsl.Artifact):
                artifacts[output] = artifact.uri
                metadata[output] = {k: v for k, v in (artifact.metadata or {}).items()
                                    if isinstance(v, (bool, int, float, str, dict))}
            else:  # a container component writes its outputs without an executor output file
                artifacts[output] = executor_input.outputs.artifacts[output].artifacts[0].uri
            schema_title = component.output_definitions.artifacts[output].artifact_type.schema_title
            if schema_title in _METADATA_ARTIFACTS and not os.path.exists(artifacts[output]):
                Path(artifacts[output]).parent.mkdir(parents=True, exist_ok=True)
                Path(artifacts[output]).touch()
        parameters = {k: v for k, v in produced.items() if k in component.output_definitions.parameters}
        return Outputs(artifacts=artifacts, parameters=parameters, metadata=metadata)

    @staticmethod
    def _finished(path: str, done: TaskExecution, component, io_store: io.IOStore, began: float,
                  task_dir: Optional[str]) -> TaskReport:
        parameters = executor_output_utils.cast_protobuf_numbers(dict(done.output_parameters),
                                                                 component.output_definitions.parameters)
        for output, value in parameters.items():
            io_store.put_task_output(done.task.name, output, value)
        for output, artifacts in done.output_artifacts.items():
            spec = component.output_definitions.artifacts[output]
            io_store.put_task_output(done.task.name, output, _dsl_artifact(artifacts[0], spec.artifact_type))
        return TaskReport(path, done.state, done.id, done.cached_execution_id, done.fingerprint,
                          time.monotonic() - began, task_dir=task_dir, output_artifact_ids=done.output_artifact_ids,
                          output_parameters=parameters)

    @staticmethod
    def _failed(path: str, started: TaskExecution, began: float, task_dir: Path, error: str) -> TaskReport:
        return TaskReport(path, FAILED, started.id, None, started.fingerprint,
                          time.monotonic() - began, error=error.strip(), task_dir=str(task_dir))


def _dsl_artifact(artifact: mlmd.Artifact, artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> dsl.Artifact:
    """The dsl.Artifact a downstream task receives; its name is the MLMD ID, as in KFP's executor input."""
    metadata = {key: records.read_property(artifact, key)
                for key in artifact.custom_properties if key != records.DISPLAY_NAME}
    runtime = pipeline_spec_pb2.RuntimeArtifact(name=str(artifact.id), uri=artifact.uri, type=artifact_type)
    runtime.metadata.update(metadata)
    return executor_output_utils.runtime_artifact_to_dsl_artifact(runtime)


def _stop(process: subprocess.Popen) -> None:
    """Stop a task's process group: SIGTERM, then SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _check_commands(pipeline: CompiledPipeline, path: str) -> None:
    """Every task's program must exist on this host (the image is recorded, not pulled)."""
    for name, task, component in iter_tasks(pipeline):
        if component.WhichOneof("implementation") == "dag":
            continue
        if pipeline.executors[component.executor_label].WhichOneof("spec") != "container":
            continue
        container = pipeline.executors[component.executor_label].container
        program = (list(container.command) or list(container.args) or [""])[0]
        if not program or "{{" in program:
            continue
        if shutil.which(program, path=path) is None:
            raise UnsupportedPipelineError(
                f"pipeline {pipeline.name!r}, task {name!r}: command {program!r} does not exist on this host "
                f"(image {container.image!r} is not pulled: run-pipeline runs commands on the host)")


def run_pipeline(
    cache: ExecutionCache,
    pipeline: CompiledPipeline,
    parameters: Optional[Mapping[str, Any]] = None,
    *,
    run_name: Optional[str] = None,
    pipeline_root: Optional[os.PathLike] = None,
    enable_caching: Optional[bool] = None,
    on_task: Optional[Callable[[TaskReport], None]] = None,
    on_start: Optional[Callable[[str], None]] = None,
) -> RunReport:
    """Run ``pipeline`` (see :func:`mlmd_cache.pipeline_spec.load_pipeline`) with ``parameters``
    (already typed, e.g. from :meth:`CompiledPipeline.parse_parameters`; defaults fill the rest).

    ``run_name`` (default: the pipeline's name and the time) must be new in the store: a run is
    not resumed, and an existing name is an :class:`InvalidArgumentError` before anything is written.
    ``enable_caching=False`` is KFP's run-level switch (every task misses and re-executes); ``None``
    lets each task's ``cachingOptions`` decide. ``on_start`` is called with a task's name as it
    begins (a nested pipeline's tasks are ``parent/child``), ``on_task`` with its report as it ends.
    Task outputs go under ``pipeline_root/<run>/<task>/<execution id>/`` (default: beside the store,
    see :func:`default_pipeline_root`), with the task's ``stdout.log`` and ``stderr.log``.
    A failing task does not raise: its report is FAILED and its descendants NOT_RUN. On Ctrl-C the
    running task's process group is stopped, its execution and the run's DAG execution marked
    FAILED, and ``KeyboardInterrupt`` propagates.
    """
    given = dict(parameters or {})
    unknown = set(given) - set(pipeline.spec.root.input_definitions.parameters)
    if unknown:
        pipeline.parse_parameters({name: "" for name in unknown})  # raises the one error message
    arguments = dag_orchestrator.join_user_inputs_and_defaults(given, pipeline.spec.root.input_definitions)
    run_name = run_name or executor_input_utils.get_local_pipeline_resource_name(pipeline.name)
    root = Path(pipeline_root) if pipeline_root is not None else default_pipeline_root(None)
    root = root.resolve()
    with tempfile.TemporaryDirectory(prefix="mlmd-cache-shims-") as shims:
        _write_shims(Path(shims))
        env = dict(os.environ)
        env["PATH"] = shims + os.pathsep + env.get("PATH", os.defpath)
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        _check_commands(pipeline, env["PATH"])
        run = cache.pipeline_run(pipeline.name, run_name, enable_caching=enable_caching, pipeline_root=str(root),
                                 exist_ok=False)
        runner = _Runner(cache, pipeline, run, root, on_task, on_start, env)
        dag_execution = runner.start_dag("", run_name, arguments, None)
        try:
            io_store, succeeded = runner.run_dag(pipeline.spec.root, arguments, "", dag_execution)
            outputs = (dag_orchestrator.get_dag_output_parameters(pipeline.spec.root.dag.outputs, io_store)
                       if succeeded else {})
        except BaseException:
            runner.finish_dag(dag_execution, mlmd.Execution.FAILED)
            raise
        runner.finish_dag(dag_execution, mlmd.Execution.COMPLETE if succeeded else mlmd.Execution.FAILED, outputs)
    return RunReport(run_name, pipeline.name, dag_execution.id, runner.reports)
