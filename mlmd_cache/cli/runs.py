"""``mlmd-cache run-pipeline`` and ``mlmd-cache plan``: a compiled pipeline run locally with caching
(:mod:`mlmd_cache.runner`), or what such a run would do, told without running anything."""
from __future__ import annotations

import json
import sys
from typing import Any, Optional

import click

from .._entry import exit_without_teardown, leave_a_hung_up_terminal, stop_signals_raise
from ..defaults import default_store_url
from ..errors import InvalidArgumentError, NoStoreError
from ..terminal import echo, printable, show_mlmd_log
from .options import db_option, env_dir_option, open_store, reports_errors, task_env_option
from .output import machine_output, output_options


@click.command("run-pipeline")
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@db_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter, parsed by its declared type (repeatable).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=ID|URI",
              help="A pipeline input artifact: an MLMD artifact ID, or a URI imported as dsl.importer does (repeatable).")
@click.option("--disable-cache", is_flag=True, help="Run-level enable_caching=False: every task executes.")
@click.option("--parallelism", type=click.IntRange(min=1), metavar="N",
              help="At most N task processes at once (default: the machine's cores).")
@click.option("--run-name", metavar="NAME", help="The run (system.PipelineRun context). Default: PIPELINE-timestamp.")
@click.option("--pipeline-root", metavar="DIR",
              help="Where task outputs go (the summary says). Default: pipeline-root/ beside a SQLite "
                   "store; for another store, ~/.local/share/mlmd-cache/pipeline-root.")
@click.option("--max-cache-staleness", "max_staleness", metavar="DURATION",
              help="Do not reuse cache sources that started longer ago: 12h, 7d, or ISO 8601 PT12H, P7D.")
@click.option("--task-staleness", "task_staleness", multiple=True, metavar="TASK=DURATION",
              help="The same for one task (by name or outer/inner path), over --max-cache-staleness (repeatable).")
@click.option("--digest", is_flag=True,
              help="Record each output's SHA-256 and size; a cache source whose outputs' bytes changed is not reused.")
@click.option("--key-by-content", is_flag=True,
              help="Key input artifacts by digest instead of MLMD ID (implies --digest): a re-run producer that "
                   "writes the same bytes keeps its consumers cached. Fingerprints then differ from KFP's.")
@click.option("--no-dedup", is_flag=True,
              help="Do not reserve cache keys: runs racing on one store may each execute the same task.")
@click.option("--lease", metavar="DURATION", default="30s", show_default=True,
              help="How long a reserved key stays held without its runner's heartbeat (e.g. 10s, PT1M; at "
                   "least 2s: five heartbeats).")
@click.option("--max-wait", metavar="DURATION",
              help="How long a task waits for the run that holds its key before it runs anyway. Default: no limit.")
@task_env_option
@env_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress lines go to stderr).")
@reports_errors
def run_pipeline(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
                 disable_cache: bool, parallelism: Optional[int], run_name: Optional[str],
                 pipeline_root: Optional[str], max_staleness: Optional[str], task_staleness: tuple[str, ...],
                 digest: bool, key_by_content: bool, no_dedup: bool, lease: str, max_wait: Optional[str],
                 task_env: str, env_dir: Optional[str], as_json: bool) -> None:
    """Run a compiled KFP v2 pipeline locally with KFP's step caching, recording it in MLMD.

    Every ready task runs at once (up to --parallelism) as a local process: by default in a cached
    environment of its own, built once by uv from what its command asks pip for (--task-env venv),
    or in its container image (--task-env docker), or with this Python, which it may not install
    into (--task-env host). No task ever changes the environment mlmd-cache runs in.
    Conditions, loops, exit handlers, OneOf, Collected and retries run as on KFP. A task whose
    cache key has a valid earlier execution is not run: its outputs are reused; a task whose key
    another run is executing waits for it and reuses its outputs. One line per task as it ends, on
    a terminal below it a live table of the running tasks; then a summary: the store, the
    pipeline's outputs and the metrics logged. Exit code 1 when a task fails (its descendants are
    NOT_RUN), 2 for an unusable pipeline or parameter, 130 on Ctrl-C, SIGTERM or SIGHUP (the running
    tasks are stopped and FAILED, the rest NOT_RUN).
    """
    from ..store.schema import integrity_checked_early  # (sqlite3 only)

    exit_without_teardown()  # once the run is told, the console script ends the process at once (_entry)

    # The SQLite store's quick check (before the run's first write) runs beside the imports and the
    # pipeline's reading from here on (mlmd_cache.store.schema); the runner waits for it.
    with integrity_checked_early(default_store_url() if db_url is None else db_url):
        _run_pipeline(pipeline_file, db_url, params, artifacts, disable_cache, parallelism, run_name, pipeline_root,
                      max_staleness, task_staleness, digest, key_by_content, no_dedup, lease, max_wait, task_env,
                      env_dir, as_json)


def _run_pipeline(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
                  disable_cache: bool, parallelism: Optional[int], run_name: Optional[str],
                  pipeline_root: Optional[str], max_staleness: Optional[str], task_staleness: tuple[str, ...],
                  digest: bool, key_by_content: bool, no_dedup: bool, lease: str, max_wait: Optional[str],
                  task_env: str, env_dir: Optional[str], as_json: bool) -> None:
    import signal

    from ..cache.execution_cache import ExecutionCache
    from ..durations import parse_duration
    from ..cache.leases import check_lease
    from ..pipeline.parsed_pipelines import load_pipeline  # parsed once, kept by the file's content
    from ..pipeline.spec import parse_artifact_references, parse_assignments, parse_task_durations
    from ..runner import RunInterrupted, check_task_names, default_pipeline_root, run_pipeline as run
    from ..runner.display import RunDisplay

    def interrupt(signum: int, frame: Any) -> None:  # SIGTERM and SIGHUP stop a run as Ctrl-C does
        if signum == signal.SIGHUP:  # a closed terminal: what the run tells as it stops must not fail on it
            leave_a_hung_up_terminal()
        raise KeyboardInterrupt

    # Only when main() is called without the console script's handling (mlmd_cache._entry), which
    # does this already, and also inside imports, where an extension's set-up may lose an exception.
    previous = {} if stop_signals_raise() else {
        signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(signum) is not signal.SIG_IGN}  # nohup's SIGHUP stays ignored
    try:
        pipeline = load_pipeline(pipeline_file)
        arguments = pipeline.parse_parameters(parse_assignments(params))
        input_artifacts = parse_artifact_references(artifacts)
        staleness = parse_duration(max_staleness, "--max-cache-staleness") if max_staleness is not None else None
        per_task = parse_task_durations(task_staleness, "--task-staleness")
        lease_seconds = parse_duration(lease, "--lease").total_seconds()
        max_wait_seconds = parse_duration(max_wait, "--max-wait").total_seconds() if max_wait is not None else None
        check_lease(lease_seconds, max_wait_seconds)  # before the store is opened (or made)
        check_task_names(pipeline, per_task, "--task-staleness")  # before the store is opened (or made)
        root = pipeline_root or default_pipeline_root(db_url)
        ids = {name: value for name, value in input_artifacts.items() if isinstance(value, int)}
        try:  # an artifact ID names an artifact of an existing store: none is created for it
            cache = ExecutionCache(open_store(db_url, create=not ids))
        except NoStoreError as error:
            name = next(iter(ids))
            raise InvalidArgumentError(f"--artifact {name}={ids[name]}: no such artifact, {error}") from None
        display = RunDisplay(lines_to_stderr=as_json)
        try:
            with display:
                report = run(cache, pipeline, arguments, artifacts=input_artifacts, run_name=run_name,
                             pipeline_root=root, enable_caching=False if disable_cache else None,
                             parallelism=parallelism, max_staleness=staleness, task_staleness=per_task,
                             digest=digest, key_by_content=key_by_content, dedup=not no_dedup,
                             lease_seconds=lease_seconds, max_wait_seconds=max_wait_seconds,
                             on_queued=display.queued, on_start=display.started, on_wait=display.waiting,
                             on_task=display.finished, task_env=task_env, env_dir=env_dir)
        except RunInterrupted as interrupted:
            report = interrupted.report
    except KeyboardInterrupt:  # before the run began: nothing of it was written
        echo("run-pipeline: interrupted", err=True)
        sys.exit(130)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        display.summary(report)
    if report.interrupted:
        echo("run-pipeline: interrupted; running tasks marked FAILED", err=True)
        sys.exit(130)
    if not report.succeeded:
        show_mlmd_log()  # MLMD's C++ log of the run (e.g. a database that restarted): only when it failed
        sys.exit(1)


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@db_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter, parsed by its declared type (repeatable).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=ID|URI",
              help="A pipeline input artifact: an MLMD artifact ID, or a URI (repeatable).")
@click.option("--disable-cache", is_flag=True, help="Plan a run with enable_caching=False (every task runs).")
@click.option("--run-name", metavar="NAME", help="The run's name (checked to be new), as run-pipeline takes it.")
@click.option("--pipeline-root", metavar="DIR",
              help="As run-pipeline's (matters only to tasks given {{$.pipeline_root}}).")
@click.option("--max-cache-staleness", "max_staleness", metavar="DURATION",
              help="As run-pipeline's: sources that started longer ago are not reused.")
@click.option("--task-staleness", "task_staleness", multiple=True, metavar="TASK=DURATION",
              help="As run-pipeline's: the same for one task (repeatable).")
@click.option("--digest", is_flag=True, help="As run-pipeline's: sources whose outputs' bytes changed are not reused.")
@click.option("--key-by-content", is_flag=True, help="As run-pipeline's: input artifacts keyed by digest.")
@task_env_option
@output_options
@reports_errors
def plan(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
         disable_cache: bool, run_name: Optional[str], pipeline_root: Optional[str], max_staleness: Optional[str],
         task_staleness: tuple[str, ...], digest: bool, key_by_content: bool, task_env: str, output_format: str) -> None:
    """Tell what run-pipeline would do with each task, without running or writing anything.

    Each task is a hit (the execution it would reuse), run (with why: no cache source for its key,
    caching disabled, an input artifact that an upstream task makes anew), skipped (a false
    condition), or unknown (it depends on an output the run learns only as it goes). The rows of
    --csv, --tsv and --nl: the tasks, in the order a run would end them."""
    from ..cache.execution_cache import ExecutionCache
    from ..durations import parse_duration
    from ..pipeline.parsed_pipelines import load_pipeline  # parsed once, kept by the file's content
    from ..pipeline.spec import parse_artifact_references, parse_assignments, parse_task_durations
    from ..runner.plan import plan_pipeline
    from ..runner import check_task_names, default_pipeline_root

    pipeline = load_pipeline(pipeline_file)
    arguments = pipeline.parse_parameters(parse_assignments(params))
    input_artifacts = parse_artifact_references(artifacts)
    staleness = parse_duration(max_staleness, "--max-cache-staleness") if max_staleness is not None else None
    per_task = parse_task_durations(task_staleness, "--task-staleness")
    check_task_names(pipeline, per_task, "--task-staleness")  # before the store is opened
    cache = ExecutionCache(open_store(db_url, read_only=True))
    result = plan_pipeline(cache, pipeline, arguments, artifacts=input_artifacts, run_name=run_name,
                           pipeline_root=pipeline_root or default_pipeline_root(db_url),
                           enable_caching=False if disable_cache else None, max_staleness=staleness,
                           task_staleness=per_task, digest=digest, key_by_content=key_by_content,
                           task_env=task_env)
    if machine_output(output_format, ("task", "status", "label", "reason", "source_execution_id", "kind", "upstream",
                                      "fingerprint"),
                      lambda: [{"task": name, **task.to_dict()} for name, task in result.tasks.items()],
                      result.to_dict, sort_keys=False):  # tasks in the order a run would end them
        return
    width = max([24] + [len(printable(name)) + 1 for name in result.tasks])
    for task in result.tasks.values():
        echo(f"{printable(task.name):<{width}} {task.label:<28} {task.reason}".rstrip())
    counts = result.counts()
    summary = ", ".join(f"{counts[status]} {status}" for status in ("hit", "run", "skipped", "unknown", "fails")
                        if status in counts) or "no tasks"
    echo(f"plan for pipeline {result.pipeline}: {summary} (nothing was run or written)")
