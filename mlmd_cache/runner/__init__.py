"""Run a compiled KFP v2 pipeline locally, with KFP's control flow, caching and MLMD records.

Every construct kfp 2.13 to 2.17 compiles runs: nested pipelines, ``dsl.importer``, ``dsl.If``/
``Elif``/``Else``, ``dsl.ParallelFor`` (nested, with ``parallelism``), ``dsl.Collected``,
``dsl.OneOf``, ``dsl.ExitHandler`` with ``dsl.PipelineTaskFinalStatus``,
``ignore_upstream_failure()``, ``set_retry`` and pipeline-level input artifacts. Every ready task
runs at once up to ``parallelism``, in the environment its ``task_env`` mode gives it
(:mod:`.launchers`: a cached venv of its requirements, its image, or this host), never in the
environment mlmd-cache runs in. Each container task goes
through :class:`~mlmd_cache.cache.ExecutionCache` with the cache key KFP's driver builds: a hit
never starts the process and hands the source's very artifacts to downstream tasks.

Where each part lives:

- :mod:`.scheduler`: the event loop: readiness, parallelism, failures, retries, Ctrl-C;
- :mod:`.inputs` and :mod:`.scope`: resolving a task's inputs in its DAG;
- :mod:`mlmd_cache.pipeline.expressions`: CEL conditions and parameter selectors;
- :mod:`.dags`: DAG, loop and iteration executions, DAG outputs, ``dsl.OneOf``, ``dsl.Collected``;
- :mod:`.containers`: a container task's cache key, executor input, command, process and outputs;
- :mod:`.importers`: ``dsl.importer`` and pipeline input artifacts;
- :mod:`.values`: parameter values and run-time placeholders;
- :mod:`.launchers` (``--task-env``), :mod:`.shims` (the task's ``PATH``) and :mod:`.docker`: where
  a task's command runs: its cached environment, its image, or this host's Python;
- :mod:`.reports`: what a run reports; :mod:`.interrupts`: Ctrl-C acted on at a safe point;
- :mod:`.display`: what ``run-pipeline`` shows of a run as it goes (a live table on a terminal);
- :mod:`.planning` and :mod:`.plan`: ``mlmd-cache plan``, the scheduler run without running anything.

May import: :mod:`mlmd_cache.pipeline`, :mod:`mlmd_cache.cache`, :mod:`mlmd_cache.store`,
:mod:`mlmd_cache.key`, :mod:`mlmd_cache.environments` and the base modules; not the server, the CLI
or :mod:`lineage`.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..key import json_values
from ..store import limits, records
from ..cache.execution_cache import ExecutionCache
from ..store.connection import check_integrity, connection_config, default_store_path, default_store_url
from ..errors import InvalidArgumentError
from ..cache.leases import DEFAULT_LEASE_SECONDS, check_lease
from ..pipeline.limits import check_pipeline
from ..pipeline.spec import CompiledPipeline, PipelineSpecError, iter_tasks
from .importers import pipeline_input_artifacts, write_input_artifacts
from .interrupts import deferred_stop_signals
from .reports import CACHED, COMPLETE, FAILED, NOT_RUN, SKIPPED, Metrics, RunInterrupted, RunReport, TaskReport
from .scheduler import Scheduler
from .docker import DockerLauncher
from .launchers import DEFAULT_TASK_ENV, TASK_ENV_MODES, HostLauncher, Launcher, VenvLauncher
from .watchdog import Watchdog
from .values import RunPlaceholders, coerce, from_protobuf

__all__ = ["run_pipeline", "check_task_names", "make_launcher", "default_run_name", "TASK_ENV_MODES",
           "DEFAULT_TASK_ENV", "RunReport", "TaskReport", "Metrics", "RunInterrupted", "default_pipeline_root", "COMPLETE", "CACHED", "FAILED", "NOT_RUN", "SKIPPED"]

_METRICS_TYPE = "system.Metrics"


def default_pipeline_root(db_url: Optional[str]) -> Path:
    """Beside the store: ``<directory of the SQLite file>/pipeline-root``; for a server store, beside
    the embedded default store."""
    config = connection_config(default_store_url() if db_url is None else db_url)
    if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite") \
            and config.sqlite.filename_uri != ":memory:":
        return Path(config.sqlite.filename_uri).parent / "pipeline-root"
    return default_store_path().parent / "pipeline-root"


def default_run_name(pipeline_name: str) -> str:
    """A run's name when none is given: ``<pipeline>-<local time, %Y-%m-%d-%H-%M-%S-%f>``, as kfp.local
    names a local run (``executor_input_utils.get_local_pipeline_resource_name``), without importing
    the KFP SDK: a run whose tasks are all cached never needs it."""
    return f"{pipeline_name}-{datetime.datetime.now().strftime('%Y-%m-%d-%H-%M-%S-%f')}"


def make_launcher(mode: str, *, env_dir: Optional[os.PathLike] = None, watchdog: Optional[Watchdog] = None
                  ) -> Launcher:
    """The launcher of ``--task-env MODE`` (see :mod:`.launchers`)."""
    if mode == "venv":
        return VenvLauncher(env_dir, watchdog)
    if mode == "host":
        return HostLauncher()
    if mode == "docker":
        return DockerLauncher(watchdog=watchdog)
    raise InvalidArgumentError(f"task environment must be one of {', '.join(TASK_ENV_MODES)}, not {mode!r}")


def check_task_names(pipeline: CompiledPipeline, names: Mapping[str, Any], what: str) -> None:
    """Every name must be a task of the pipeline, by path (``outer/inner``) or by its own name."""
    paths = [path for path, _, _ in iter_tasks(pipeline)]
    known = set(paths) | {path.rsplit("/", 1)[-1] for path in paths}
    for name in names:
        if name not in known:
            raise InvalidArgumentError(f"{what}: pipeline {pipeline.name!r} has no task {name!r} "
                                       f"(its tasks: {', '.join(sorted(paths))})")


def run_arguments(cache: ExecutionCache, pipeline: CompiledPipeline, parameters: Optional[Mapping[str, Any]],
                  artifacts: Optional[Mapping[str, Union[int, str]]], run_name: str, *, find_only: bool = False
                  ) -> tuple[dict[str, Any], dict[str, mlmd.Artifact]]:
    """The root DAG's parameters (given ones coerced into their declared types, defaults filled in)
    and input artifacts (see :func:`~.importers.pipeline_input_artifacts`), every value checked
    before anything is written. A run and its plan (:mod:`mlmd_cache.runner.plan`, ``find_only``) share it."""
    root_spec = pipeline.spec.root
    given = dict(parameters or {})
    unknown = set(given) - set(root_spec.input_definitions.parameters)
    if unknown:
        pipeline.parse_parameters({name: "" for name in unknown})  # raises the one error message
    for name, value in given.items():  # before anything is written: what KFP and MLMD can hold
        json_values.check(value, f"parameter {name!r}", error=PipelineSpecError)
    arguments = {name: coerce(value, root_spec.input_definitions.parameters[name].parameter_type)
                 for name, value in given.items()}
    for name, spec in root_spec.input_definitions.parameters.items():
        if name not in arguments and spec.HasField("default_value"):
            arguments[name] = coerce(from_protobuf(spec.default_value), spec.parameter_type)
    check_pipeline(pipeline, run_name, limits.store_backend(cache.store),
                   [uri for uri in (artifacts or {}).values() if isinstance(uri, str)])
    input_artifacts = pipeline_input_artifacts(cache, root_spec, dict(artifacts or {}), pipeline.name,
                                               find_only=find_only)
    return arguments, input_artifacts


def run_pipeline(
    cache: ExecutionCache,
    pipeline: CompiledPipeline,
    parameters: Optional[Mapping[str, Any]] = None,
    *,
    artifacts: Optional[Mapping[str, Union[int, str]]] = None,
    run_name: Optional[str] = None,
    pipeline_root: Optional[os.PathLike] = None,
    enable_caching: Optional[bool] = None,
    parallelism: Optional[int] = None,
    on_task: Optional[Callable[[TaskReport], None]] = None,
    on_start: Optional[Callable[[str], None]] = None,
    max_staleness: Optional[datetime.timedelta] = None,
    task_staleness: Optional[Mapping[str, datetime.timedelta]] = None,
    digest: bool = False,
    key_by_content: bool = False,
    dedup: bool = True,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    max_wait_seconds: Optional[float] = None,
    on_wait: Optional[Callable[[str, int], None]] = None,
    on_queued: Optional[Callable[[list[str]], None]] = None,
    task_env: str = DEFAULT_TASK_ENV,
    env_dir: Optional[os.PathLike] = None,
) -> RunReport:
    """Run ``pipeline`` (see :func:`mlmd_cache.pipeline.spec.load_pipeline`) with ``parameters``
    (already typed, e.g. from :meth:`CompiledPipeline.parse_parameters`; defaults fill the rest).

    ``artifacts`` are the pipeline's input artifacts: an MLMD artifact ID, or a URI imported as
    ``dsl.importer`` imports it. ``run_name`` (default: the pipeline's name and the time) must be
    new in the store: a run is not resumed, and an existing name is an
    :class:`InvalidArgumentError` before anything is written. ``enable_caching=False`` is KFP's
    run-level switch (every task misses and re-executes); ``None`` lets each task's
    ``cachingOptions`` decide. At most ``parallelism`` task processes run at once (default: the
    machine's cores), and a loop's own ``parallelism`` holds too. ``on_start`` is called with a
    task's path as its process starts or its cache lookup begins, ``on_task`` with each report as
    it ends (see :class:`TaskReport` for paths), ``on_queued`` with the paths of a DAG's tasks
    (not its nested DAGs) as the DAG opens: each will start, or end NOT_RUN or SKIPPED; a DAG not
    opened (skipped, not run) reports its tasks without queueing them. Task outputs go under
    ``pipeline_root/<run>/<task path>/<execution id>/`` (default: beside the store, see
    :func:`default_pipeline_root`), with the task's ``stdout.log`` and ``stderr.log``.

    ``max_staleness``: a cache source that started longer ago is not reused (KFP v1's
    ``max_cache_staleness``); ``task_staleness`` sets it per task, by task name or path
    (``outer/inner``), over the run's.

    ``digest=True`` records each output's SHA-256 and size and refuses cache sources whose outputs'
    bytes changed since; ``key_by_content=True`` (implies ``digest``) keys input artifacts by digest
    instead of MLMD ID, so a re-run producer that writes the same bytes leaves its consumers cached
    (see :mod:`mlmd_cache.cache.digests`).

    ``dedup`` (on by default): a task that misses reserves its cache key before its process
    starts, so that runs racing on one store do its work once (see :mod:`mlmd_cache.cache.dedup`): a
    task whose key another run holds waits, holding no slot, and is then CACHED from the holder's
    execution (``on_wait`` is called with its path and the holder's execution ID); if the holder
    fails, or its runner is killed and its lease of ``lease_seconds`` runs out, one waiter takes
    over. After ``max_wait_seconds`` (default: no limit) a waiting task runs anyway.

    ``task_env`` is where each task runs (:mod:`.launchers`): ``"venv"`` (the default: in the
    cached environment of what its command asks pip for, under ``env_dir``, default
    :func:`~mlmd_cache.environments.default_cache_dir`), ``"docker"`` (in its image) or ``"host"``
    (with this interpreter, never installing). No mode lets a task install into, or change, the
    environment mlmd-cache runs in. The cache key is the same in every mode.

    A failing task does not raise: its report is FAILED, its descendants NOT_RUN, independent
    tasks still run. Ctrl-C (SIGINT, and SIGTERM when its handler raises ``KeyboardInterrupt``) is
    acted on between two steps of the run, never amid a store write (:mod:`.interrupts`): every
    running task's process group is stopped, their executions and every open DAG execution are
    marked FAILED, the running tasks are reported FAILED and those not started NOT_RUN (through
    ``on_task``), and :class:`RunInterrupted` (a ``KeyboardInterrupt``) is raised with the report.
    """
    check_lease(lease_seconds, max_wait_seconds)
    if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int)
                                    or parallelism < 1):
        raise InvalidArgumentError(f"parallelism must be a whole number of at least 1, not {parallelism!r}")
    root_spec = pipeline.spec.root
    run_name = run_name or default_run_name(pipeline.name)
    task_staleness = dict(task_staleness or {})
    check_task_names(pipeline, task_staleness, "task staleness")
    root = (Path(pipeline_root) if pipeline_root is not None else default_pipeline_root(None)).resolve()
    watchdog = Watchdog()
    launcher = make_launcher(task_env, env_dir=env_dir, watchdog=watchdog)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(launcher))
        check_integrity(cache.store)  # a corrupt store gets nothing of the run written
        launcher.check(pipeline)  # before anything is written (an image pulled, a command found)
        arguments, input_artifacts = run_arguments(cache, pipeline, parameters, artifacts, run_name)
        stop = stack.enter_context(deferred_stop_signals())
        run = cache.pipeline_run(pipeline.name, run_name, enable_caching=enable_caching, pipeline_root=str(root),
                                 exist_ok=False, max_staleness=max_staleness, digest=digest,
                                 key_by_content=key_by_content)
        created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        placeholders = RunPlaceholders.for_run(pipeline.name, run_name, str(root), created)
        scheduler = Scheduler(cache, pipeline, run, root, dict(os.environ), launcher, parallelism or os.cpu_count() or 1,
                              placeholders, on_task, on_start, task_staleness, dedup=dedup,
                              lease_seconds=lease_seconds, max_wait_seconds=max_wait_seconds, on_wait=on_wait,
                              on_queued=on_queued, stop=stop, watchdog=watchdog)
        root_artifacts = write_input_artifacts(cache, input_artifacts, root_spec)
        try:
            execution, _, _ = scheduler.run_root(arguments, root_artifacts)
            stop.check()  # a signal that came as the run ended: it stops the caller still
        except KeyboardInterrupt:
            raise RunInterrupted(_report(cache, run_name, pipeline, scheduler, None, launcher)) from None
    return _report(cache, run_name, pipeline, scheduler, execution.id, launcher)


def _report(cache: ExecutionCache, run_name: str, pipeline: CompiledPipeline, scheduler: Scheduler,
            execution_id: Optional[int], launcher: Launcher) -> RunReport:
    """The run's report; ``execution_id`` None: interrupted (the root DAG's ID is then read back
    from the scheduler's records, if it got that far)."""
    artifacts = {name: [{"id": int(artifact.name), "uri": artifact.uri} for artifact in artifact_list]
                 for name, artifact_list in scheduler.output_artifacts.items()}
    root_id = execution_id if execution_id is not None else scheduler.root_execution_id
    return RunReport(run_name, pipeline.name, root_id, scheduler.reports, output_parameters=scheduler.output_parameters,
                     output_artifacts=artifacts, metrics=_metrics(cache, scheduler.reports),
                     store=getattr(cache.store, "shown", ""), interrupted=execution_id is None,
                     task_env=launcher.mode, task_env_detail=launcher.describe(),
                     pipeline_root=str(scheduler.pipeline_root))


def _metrics(cache: ExecutionCache, reports: Mapping[str, TaskReport]) -> list[Metrics]:
    """The ``system.Metrics`` outputs of the run's tasks (CACHED ones too: the artifacts they reuse),
    with their logged values (custom properties, but the display name and mlmd-cache's own)."""
    outputs = [(task.name, output, artifact_id) for task in reports.values() if task.kind in ("container", "importer")
               for output, ids in task.output_artifact_ids.items() for artifact_id in ids]
    if not outputs:
        return []
    artifacts = {a.id: a for a in cache.store.get_artifacts_by_id(sorted({i for _, _, i in outputs}))}
    type_ids = sorted({artifact.type_id for artifact in artifacts.values()})
    types = {t.id: t.name for t in cache.store.get_artifact_types_by_id(type_ids)}
    found = []
    for task, output, artifact_id in outputs:
        artifact = artifacts.get(artifact_id)
        if artifact is None or types.get(artifact.type_id) != _METRICS_TYPE:
            continue
        found.append(Metrics(task, output, artifact_id, records.task_metadata(artifact)))
    return found

