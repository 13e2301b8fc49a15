"""Container tasks: the cache key KFP's driver builds, the executor input, the command line with
its placeholders resolved, the task's process, and the outputs it produced.

Argument, placeholder and executor-output handling use the KFP SDK's own local-execution helpers
(``kfp.local.executor_input_utils``, ``placeholder_utils``, ``executor_output_utils``), imported when
a task is about to execute: importing any of them runs ``kfp/__init__.py``, the whole SDK with its
client and the Kubernetes client (about half a second), which a run whose tasks are all cached
never needs. Its cache keys and its cached outputs need none of the SDK.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
import re
import signal
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

from google.protobuf import json_format, struct_pb2
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..cache.execution_cache import Outputs, Task, TaskExecution
from ..key.cache_key import CacheKey
from ..pipeline.spec import pipeline_spec_pb2
from .inputs import ResolvedInputs
from .launchers import Launch, Launcher, TaskEnvironmentError, TaskLaunch
from .paths import safe_name
from .values import ParameterType, integer_outputs, to_protobuf
from .watchdog import Watchdog, with_death_signal

__all__ = ["cache_task", "executor_input", "command_line", "task_env", "TaskProcess", "produced_outputs",
           "scope_outputs", "runtime_artifact", "stderr_tail", "disk_full", "executor_input_dict"]

_STDERR_TAIL_LINES = 20
# What a task's stderr says when a write failed for want of space (Python, coreutils, libc).
_NO_SPACE = ("No space left on device", "[Errno 28]", "ENOSPC", "Disk quota exceeded", "[Errno 122]")
_PROBE_BYTES = 64 * 1024
_EXECUTOR_OUTPUT_FILE = "executor_output.json"
# Artifacts whose content is their metadata (``metrics.log_metric(...)``): a task often never writes
# their file. The runner then leaves an empty file at the URI, so that the execution stays a valid
# cache source (ExecutionCache refuses sources whose local output files are gone).
_METADATA_ARTIFACTS = frozenset({"system.Metrics", "system.ClassificationMetrics",
                                 "system.SlicedClassificationMetrics"})


def cache_task(name: str, task_spec: pipeline_spec_pb2.PipelineTaskSpec, component: pipeline_spec_pb2.ComponentSpec,
               container: Any, inputs: ResolvedInputs, parent_dag_id: int,
               max_staleness: Optional[datetime.timedelta] = None) -> Task:
    """The task as the cache sees it, with the key KFP's driver builds: the container spec as
    compiled, input artifacts by MLMD ID (every ID of a list, in order), input parameter values
    and the output spec."""
    output_artifacts = {}
    for output, spec in component.output_definitions.artifacts.items():
        # KFP's driver: the output RuntimeArtifact without URI or name: type and metadata only.
        artifact = pipeline_spec_pb2.RuntimeArtifact(type=spec.artifact_type)
        if spec.HasField("metadata"):
            artifact.metadata.CopyFrom(spec.metadata)
        output_artifacts[output] = artifact
    parameters = executor_input(component, inputs, "").inputs.parameter_values
    key = CacheKey.build(
        image=container.image,
        command=list(container.command),
        args=list(container.args),
        input_artifacts=inputs.artifact_ids(),
        input_parameters={k: json_format.MessageToDict(v) for k, v in parameters.items()},
        output_artifacts=output_artifacts,
        output_parameters={k: ParameterType.Name(v.parameter_type)
                           for k, v in component.output_definitions.parameters.items()},
    )
    options = task_spec.caching_options
    return Task(name, key, display_name=task_spec.task_info.name or name, enable_cache=options.enable_cache,
                cache_key=options.cache_key, component_name=task_spec.component_ref.name,
                parent_dag_id=parent_dag_id, max_staleness=max_staleness)


def executor_input(component: pipeline_spec_pb2.ComponentSpec, inputs: ResolvedInputs,
                   task_root: str) -> pipeline_spec_pb2.ExecutorInput:
    """The ExecutorInput of a task whose outputs go under ``task_root``. An optional input that
    is not set (and has no default) is left out, as KFP's driver leaves it out."""
    message = pipeline_spec_pb2.ExecutorInput()
    for name, value in inputs.parameters.items():
        message.inputs.parameter_values[name].CopyFrom(to_protobuf(value))
    for name, artifacts in inputs.artifacts.items():
        message.inputs.artifacts[name].artifacts.extend(artifacts)
    for name in component.output_definitions.parameters:
        message.outputs.parameters[name].output_file = os.path.join(task_root, safe_name(name))
    for name, spec in component.output_definitions.artifacts.items():
        message.outputs.artifacts[name].artifacts.add(name=name, type=spec.artifact_type, metadata=struct_pb2.Struct(),
                                                      uri=os.path.join(task_root, safe_name(name)))
    message.outputs.output_file = os.path.join(task_root, _EXECUTOR_OUTPUT_FILE)
    return message


def executor_input_dict(message: pipeline_spec_pb2.ExecutorInput, component: pipeline_spec_pb2.ComponentSpec
                        ) -> dict[str, Any]:
    """The executor input as the task reads it (``{{$}}``): KFP's launcher writes it with Go's
    protojson, where a whole number is ``9``, not ``9.0``, at any depth (a list of ints collected from
    a loop stays a list of ints), and integer inputs are ints (``executor_input_to_dict``)."""
    # Here, not at the top: kfp.local imports the whole KFP SDK (see the module's docstring).
    from kfp.local import executor_input_utils

    document = executor_input_utils.executor_input_to_dict(message, component)
    values = document.get("inputs", {}).get("parameterValues")
    if values:
        document["inputs"]["parameterValues"] = {name: _whole_numbers_as_ints(value) for name, value in values.items()}
    return document


def _whole_numbers_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:  # Go's 'f' format range
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers_as_ints(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers_as_ints(item) for key, item in value.items()}
    return value


def command_line(arguments: list[str], message: pipeline_spec_pb2.ExecutorInput,
                 component: pipeline_spec_pb2.ComponentSpec, *, job_name: str, task_name: str, pipeline_root: str,
                 job_id: str) -> list[str]:
    """``arguments`` (the command and args, or an env value) with every placeholder resolved.

    The placeholders that only Vertex AI resolves (``{{$.pipeline_google_cloud_project_id}}``,
    ``{{$.pipeline_google_cloud_location}}``, ``{{$.pipeline_persistent_resource_id}}``: component
    defaults of google-cloud-pipeline-components) reach the task as written, in a parameter value or
    in the command, as KFP's open-source backend passes them on (its launcher,
    backend/src/v2/component/launcher_v2.go, replaces only the task's input and output placeholders);
    kfp.local's resolver would fail on them. Every other placeholder in a value (an f-string of
    pipeline channels, ``f"{markers}/{item}"``) is resolved, as KFP's driver does."""
    from kfp.local import placeholder_utils  # here: the whole KFP SDK, for a task that executes (see above)

    marker = "{{" + uuid.uuid4().hex  # no "{{$": kfp.local leaves it alone; plain ASCII: JSON keeps it as it is
    document = executor_input_dict(message, component)
    values = document.get("inputs", {}).get("parameterValues")
    if values:
        document["inputs"]["parameterValues"] = _vertex_only_marked(values, marker)
    arguments = _vertex_only_marked(arguments, marker)
    resolved = placeholder_utils.replace_placeholders(
        full_command=arguments,
        executor_input_dict=document,
        pipeline_resource_name=job_name, task_resource_name=task_name, pipeline_root=pipeline_root,
        unique_pipeline_id=job_id)
    return [item.replace(marker + "$", "{{$") for item in resolved]


# The placeholders that only Vertex AI resolves: KFP's open-source driver and launcher pass them on as written.
_VERTEX_ONLY = re.compile(r"\{\{\$\.(?:pipeline_google_cloud_project_id|pipeline_google_cloud_location|"
                          r"pipeline_persistent_resource_id)\}\}")


def _vertex_only_marked(value: Any, marker: str) -> Any:
    """``value`` with each Vertex-only placeholder's ``{{`` replaced by ``marker`` (in every string of it)."""
    if isinstance(value, str):
        return _VERTEX_ONLY.sub(lambda match: marker + match.group()[2:], value)
    if isinstance(value, list):
        return [_vertex_only_marked(item, marker) for item in value]
    if isinstance(value, dict):
        return {key: _vertex_only_marked(item, marker) for key, item in value.items()}
    return value


def task_env(base: Mapping[str, str], container: Any, resolve: Any) -> dict[str, str]:
    """The task's environment: the run's, plus the container's ``env`` (``set_env_variable``),
    whose values may hold placeholders (``resolve`` turns a list of strings into resolved ones)."""
    env = dict(base)
    for variable in container.env:
        resolved = resolve([variable.value]) if "{{" in variable.value else [variable.value]
        env[variable.name] = resolved[0] if resolved else ""
    return env


class TaskProcess:
    """One attempt at a task's command, run by a worker thread: its own process group, stdin
    closed, stdout/stderr to files in the task's directory. :meth:`stop` may come from any thread.
    It does not outlive the runner (:mod:`.watchdog`): :meth:`run` must be called by the thread
    that waits for it, and the group is registered with ``watchdog`` while it runs. Where it runs
    is the ``launcher``'s (:mod:`.launchers`): it may first build the task's environment, which
    :meth:`stop` stops too; a task whose environment cannot be had fails with
    :attr:`setup_error`, one line."""

    def __init__(self, task: TaskLaunch, launcher: Launcher, attempt: int,
                 timeout: Optional[float] = None, watchdog: Optional[Watchdog] = None) -> None:
        self.task, self.launcher, self.attempt = task, launcher, attempt
        self.task_dir = task.task_dir
        self.timeout = timeout  # kubernetes.set_timeout: the process is stopped after this many seconds
        self.watchdog = watchdog
        self.timed_out = False
        self.setup_error = ""
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._launch: Optional[Launch] = None
        self._stopped = threading.Event()

    @property
    def stderr_path(self) -> Path:
        return self.task_dir / ("stderr.log" if self.attempt == 1 else f"stderr.{self.attempt}.log")

    @property
    def stdout_path(self) -> Path:
        return self.task_dir / ("stdout.log" if self.attempt == 1 else f"stdout.{self.attempt}.log")

    def run(self) -> int:
        """The exit code (127 when the program cannot start, -SIGTERM when stopped, 1 when its
        environment cannot be had). The process gets a private ``TMPDIR``, removed when it ends:
        KFP's lightweight components write their program into ``mktemp -d`` and never remove it,
        which in a pod is thrown away with the pod."""
        with tempfile.TemporaryDirectory(prefix="tmp-", dir=self.task_dir) as scratch:
            task = dataclasses.replace(self.task, env={**self.task.env, "TMPDIR": scratch})
            try:
                launch = self.launcher.launch(task, self._stopped)
            except TaskEnvironmentError as error:
                self.setup_error = str(error)
                self.stderr_path.write_text(f"mlmd-cache: {error}\n")
                return -signal.SIGTERM if self._stopped.is_set() else 1
            try:
                return self._run(launch)
            finally:
                if launch.cleanup is not None:
                    launch.cleanup()

    def _run(self, launch: Launch) -> int:
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            with self._lock:
                if self._stopped.is_set():
                    return -signal.SIGTERM
                self._launch = launch
                command, preexec = with_death_signal(launch.command)
                try:
                    self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stdout,
                                                     stderr=stderr, env=dict(launch.env), cwd=self.task_dir,
                                                     start_new_session=True, preexec_fn=preexec)
                except OSError as error:
                    stderr.write(f"cannot start {launch.command[0]!r}: {error.strerror}\n".encode())
                    return 127
            if self.watchdog is not None:
                self.watchdog.register(self._process.pid)  # its own session: the group ID is its PID
            try:
                return self._process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                self.stop()
                return self._process.wait()
            finally:
                if self.watchdog is not None:
                    self.watchdog.unregister(self._process.pid)

    def stop(self) -> None:
        """Stop the task: its environment's build, the launcher's own way (a container), and its
        process group: SIGTERM, then SIGKILL after 5 s."""
        with self._lock:
            self._stopped.set()
            process, launch = self._process, self._launch
        if launch is not None and launch.stop is not None:
            launch.stop()
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=5.0)
                return
            except subprocess.TimeoutExpired:
                continue


def produced_outputs(component: pipeline_spec_pb2.ComponentSpec, message: pipeline_spec_pb2.ExecutorInput) -> Outputs:
    """What a task that exited 0 produced (its executor output file, or its output files)."""
    from kfp import dsl  # here: the whole KFP SDK, for a task that executed (see the module's docstring)
    from kfp.local import executor_output_utils

    produced = executor_output_utils.get_outputs_for_task(message, component)
    artifacts: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for output in component.output_definitions.artifacts:
        artifact = produced.get(output)
        if isinstance(artifact, dsl.Artifact):
            artifacts[output] = artifact.uri
            metadata[output] = {k: v for k, v in (artifact.metadata or {}).items()
                                if isinstance(v, (bool, int, float, str, dict))}
        else:  # a container component writes its outputs without an executor output file
            artifacts[output] = message.outputs.artifacts[output].artifacts[0].uri
        schema_title = component.output_definitions.artifacts[output].artifact_type.schema_title
        if schema_title in _METADATA_ARTIFACTS and not os.path.exists(artifacts[output]):
            Path(artifacts[output]).parent.mkdir(parents=True, exist_ok=True)
            Path(artifacts[output]).touch()
    parameters = {k: v for k, v in produced.items() if k in component.output_definitions.parameters}
    return Outputs(artifacts=artifacts, parameters=parameters, metadata=metadata)


def runtime_artifact(artifact: mlmd.Artifact, artifact_type: pipeline_spec_pb2.ArtifactTypeSchema
                     ) -> pipeline_spec_pb2.RuntimeArtifact:
    """The RuntimeArtifact a downstream task receives; its name is the MLMD ID, as in KFP's executor input."""
    runtime = pipeline_spec_pb2.RuntimeArtifact(name=str(artifact.id), uri=artifact.uri, type=artifact_type)
    # Our own records (mlmd_cache_digest, ...) are not the task's metadata: a task sees what KFP gives it.
    runtime.metadata.update(records.task_metadata(artifact))
    return runtime


def scope_outputs(done: TaskExecution, component: pipeline_spec_pb2.ComponentSpec) -> dict[str, Any]:
    """A finished (or cached) task's outputs as its DAG's scope holds them."""
    outputs: dict[str, Any] = integer_outputs(dict(done.output_parameters), component.output_definitions.parameters)
    for output, artifacts in done.output_artifacts.items():
        spec = component.output_definitions.artifacts[output]
        outputs[output] = [runtime_artifact(artifact, spec.artifact_type) for artifact in artifacts]
    return outputs


def stderr_tail(path: Path, lines: int = _STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def disk_full(task_dir: Path, stderr_text: str) -> Optional[str]:
    """Why a failed task failed, when it is a full disk under its directory: its stderr names
    ENOSPC, or a small write there fails with it now. A task on a full disk usually cannot write
    its stderr either, so it exits 1 with nothing to show; None when the disk has room."""
    said = any(words in stderr_text for words in _NO_SPACE)
    if not said:
        probe = None
        try:
            descriptor, probe = tempfile.mkstemp(prefix=".space-", dir=task_dir)
            with os.fdopen(descriptor, "wb") as file:
                file.write(bytes(_PROBE_BYTES))
                file.flush()
                os.fsync(file.fileno())  # delayed allocation: the space is only taken here on some filesystems
        except OSError as error:
            said = error.errno in (errno.ENOSPC, errno.EDQUOT)
        finally:
            if probe is not None:
                with contextlib.suppress(OSError):
                    os.unlink(probe)
    if not said:
        return None
    return (f"the disk holding {task_dir} is full (no space left on device): the task could not write its "
            "outputs or its log; free some space and run it again")
