#!/usr/bin/env python
"""Benchmark `run-pipeline`'s runner: parallel speed-up, per-task overhead (executed and cached), against kfp.local.

Pipelines, compiled here with the KFP SDK: ``--tasks`` (default 40) trivial lightweight tasks
(``echo(salt, i) -> str``, it returns ``f"{salt}-{i}"``), as

* a **fan-out**: ``--tasks`` independent tasks in the root DAG;
* a **ParallelFor**: ``dsl.ParallelFor(items=[0, ..., tasks - 1])`` over one such task.

Every measurement has a fresh temporary directory under ``--out`` (the pipeline root, and the
SQLite store unless ``--db`` names one) and a new random ``salt``, so its first run misses the cache
everywhere; the directory is removed afterwards (``--keep`` keeps it). In each of ``--repeat``
rounds it measures, in this process, the wall time of:

(a) the task processes alone: the fan-out's ``--tasks`` executor processes
    (``python -m kfp.dsl.executor_main --component_module_path ... --executor_input ...``, with the
    executor input and placeholders resolved by kfp.local's helpers, as both runners resolve them)
    started directly, one after the other; and two at a time (the ideal parallel speed-up here);
(b) the runner's own task command run directly, one after the other: the compiled ``sh -c``
    command (its ``pip install`` preamble, answered by the runner's pip shim, then the executor),
    with the ``PATH`` the runner gives tasks in ``--task-env`` (``mlmd_cache.runner.shims.Shims``:
    ``.environment()`` of the set's environment for ``venv``, ``.host()`` for ``host``; not timed
    for ``docker``, whose command is ``docker run``);
(c) ``run_pipeline(cache, pipeline, {"salt": ...}, parallelism=1, task_env=...)`` and
    ``parallelism=2`` on each pipeline, each followed by a cached re-run on the same store (every
    task CACHED, checked) at the same parallelism. With ``--task-env venv`` (the default, as the
    runner's) the tasks' environment is built (or found) in ``--env-dir`` before the rounds;

and in the first ``--kfp-repeat`` rounds (default 1: its 40 tasks take about a minute):

(d) kfp.local: ``kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False))``, then the
    fan-out's pipeline function called (kfp 2.13 runs no ParallelFor locally); its output, which it
    prints, goes to a file;
(e) kfp.local's task command run directly (``python3`` replaced by this interpreter, as kfp.local
    does; its preamble is a real ``pip install``) on ``--command-samples`` of the tasks.

Derived (medians over the rounds):

* executed overhead per task = (wall of the run at parallelism 1 - wall of (a) one at a time) /
  tasks, for the runner and for kfp.local alike: everything a runner adds around the task's own
  process (the command's shell and pip preamble, cache lookup, MLMD records, scheduling);
* cached cost per task = wall of the cached re-run / tasks;
* speed-up = wall at parallelism 1 / wall at parallelism 2.

Targets: on the fan-out, ``--parallelism 2`` at least 1.7x faster than 1; a cached task at most
10 ms (every cached re-run measured); the runner's executed overhead per task at most 0.5x
kfp.local's. The script prints a markdown table (for the README) and the targets, or one JSON
object with ``--json``, and exits with status 1 when a target fails. A runner whose
``run_pipeline`` has no ``parallelism`` keyword, or that refuses ParallelFor, gets "n/a" there.

``--profile`` adds one run of each pipeline at parallelism 1, executed then cached, under cProfile
(every thread the runner starts gets its own profiler; the stats are merged), writes
``profile-<pipeline>-<executed|cached>.prof`` to ``--out`` and prints the top functions to standard
error.

``--modes`` runs ``scripts/bench_task_envs.py`` instead (the options after it are that script's):
executed-task overhead per ``--task-env`` mode (``host``, ``venv`` warm, ``docker``), a new
environment of kfp 2.17.3 and its dependencies from a warm package cache, against kfp.local 2.17.3
``SubprocessRunner(use_venv=True)`` and ``DockerRunner`` in a throwaway venv.

Usage::

    python scripts/bench_runner.py                    # 40 tasks, 3 rounds, SQLite: about 4 minutes here
    python scripts/bench_runner.py --modes --tasks 12 --repeat 5   # per mode, and kfp.local 2.17.3
    python scripts/bench_runner.py --tasks 20 --repeat 1 --json
    python scripts/bench_runner.py --db mysql://user:pw@127.0.0.1:3306/mlmd   # one shared store
    python scripts/bench_runner.py --store-dir /dev/shm/bench   # the SQLite files in memory: no disk commits

The numbers are only as quiet as the machine: the header prints the load average before and after,
and the task processes' own two-at-a-time speed-up (a) is the ceiling of what ``--parallelism 2``
can reach on it.
"""
# (no `from __future__ import annotations`: KFP reads the component's annotations as types)

import argparse
import contextlib
import cProfile
import inspect
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

warnings.filterwarnings("ignore", category=FutureWarning)  # kfp's notices

import kfp.local  # noqa: E402
from kfp import compiler, dsl  # noqa: E402
from kfp.local import config as kfp_local_config  # noqa: E402
from kfp.local import executor_input_utils, placeholder_utils  # noqa: E402

try:  # kfp 2.13
    from kfp.local.dag_orchestrator import make_task_arguments  # noqa: E402
except ImportError:  # kfp 2.14 on: kfp.local.orchestrator
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils  # noqa: E402

    make_task_arguments = OrchestratorUtils.make_task_arguments
from kfp.local import io as kfp_io  # noqa: E402

from mlmd_cache import ExecutionCache, connect  # noqa: E402
from mlmd_cache.pipeline.spec import UnsupportedPipelineError, load_pipeline  # noqa: E402
from mlmd_cache.runner import run_pipeline  # noqa: E402

try:
    from mlmd_cache.runner.shims import Shims  # the PATH the runner gives tasks (--task-env venv and host)
    from mlmd_cache.environments import EnvironmentCache, requirement_set
except ImportError:  # an older runner
    Shims = None

IMAGE = "python:3.11"
TARGET_SPEEDUP = 1.7
TARGET_CACHED_S = 0.010
TARGET_OVERHEAD_RATIO = 0.5
HAS_PARALLELISM = "parallelism" in inspect.signature(run_pipeline).parameters
HAS_TASK_ENV = "task_env" in inspect.signature(run_pipeline).parameters
# run_pipeline's task_env and env_dir (--task-env, --env-dir), set by main() when the runner has them
TASK_OPTIONS: dict[str, Any] = {}
PARALLELISMS = (1, 2)


@dsl.component(base_image=IMAGE)
def echo(salt: str, i: int) -> str:
    return f"{salt}-{i}"


def fan_out_pipeline(tasks: int):
    @dsl.pipeline(name="bench-runner-fan-out")
    def fan_out(salt: str = "none"):
        for i in range(tasks):
            echo(salt=salt, i=i)

    return fan_out


def parallel_for_pipeline(tasks: int):
    @dsl.pipeline(name="bench-runner-parallel-for")
    def parallel_for(salt: str = "none"):
        with dsl.ParallelFor(items=list(range(tasks))) as item:
            echo(salt=salt, i=item)

    return parallel_for


def chain_pipeline(tasks: int):
    """``tasks`` tasks in a row, each given the one before's output (scripts/bench_startup.py's
    cached re-run: every cache key waits for the lookup before it)."""
    @dsl.pipeline(name="bench-runner-chain")
    def chain(salt: str = "none"):
        previous = echo(salt=salt, i=0)
        for i in range(1, tasks):
            previous = echo(salt=previous.output, i=i)

    return chain


PIPELINES = {"fan-out": fan_out_pipeline, "ParallelFor": parallel_for_pipeline}


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch(out: Path, label: str, keep: bool):
    """A fresh directory for one measurement, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=out))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def expected_outputs(salt: str, tasks: int) -> list[str]:
    return sorted(f"{salt}-{i}" for i in range(tasks))


# -- the runner -----------------------------------------------------------------------------------

def run_and_check(cache: ExecutionCache, pipeline, salt: str, root: Path, parallelism: int, state: str,
                  tasks: int) -> float:
    """Wall time of one ``run_pipeline``; every container task must end in ``state`` with its output."""
    options = {"parallelism": parallelism} if HAS_PARALLELISM else {}
    options.update(TASK_OPTIONS)
    began = time.perf_counter()
    report = run_pipeline(cache, pipeline, {"salt": salt}, run_name=f"bench-{uuid.uuid4().hex[:12]}",
                          pipeline_root=root, **options)
    wall = time.perf_counter() - began
    containers = [t for t in report.tasks.values() if getattr(t, "kind", "container") == "container"]
    wrong = [t for t in containers if t.state != state]
    if wrong:
        raise SystemExit(f"{pipeline.name}: task {wrong[0].name} is {wrong[0].state}, expected {state} "
                         f"({wrong[0].error or 'no error'})")
    outputs = sorted(t.output_parameters.get("Output") for t in containers)
    if outputs != expected_outputs(salt, tasks):
        raise SystemExit(f"{pipeline.name}: {len(containers)} tasks with outputs {outputs[:3]}..., expected "
                         f"{tasks} tasks {expected_outputs(salt, tasks)[:3]}...")
    return wall


def store_url(db: Optional[str], directory: Path, store_dir: Optional[Path]) -> str:
    """``db``, else a new SQLite file in the measurement's directory (or in ``store_dir``)."""
    if db:
        return db
    if store_dir is None:
        return f"sqlite:///{directory / 'mlmd.sqlite'}"
    return f"sqlite:///{store_dir / (directory.name + '.sqlite')}"


def remove_store(db: Optional[str], directory: Path, store_dir: Optional[Path], keep: bool) -> None:
    if not db and store_dir is not None and not keep:
        for suffix in ("", "-journal", "-wal", "-shm"):
            (store_dir / (directory.name + ".sqlite" + suffix)).unlink(missing_ok=True)


def measure_runner(path: Path, parallelism: int, tasks: int, db: Optional[str], out: Path, keep: bool,
                   label: str, store_dir: Optional[Path] = None) -> tuple[float, float]:
    """(executed, cached) wall times: a run on a fresh store (or with a new salt on ``db``), then its re-run."""
    with scratch(out, label, keep) as directory:
        cache = ExecutionCache(connect(store_url(db, directory, store_dir)))
        pipeline = load_pipeline(str(path))
        salt = uuid.uuid4().hex[:12]
        root = directory / "pipeline-root"
        executed = run_and_check(cache, pipeline, salt, root, parallelism, "COMPLETE", tasks)
        cached = run_and_check(cache, pipeline, salt, root, parallelism, "CACHED", tasks)
        del cache, pipeline
        remove_store(db, directory, store_dir, keep)
    return executed, cached


# -- the task processes alone ---------------------------------------------------------------------

def task_commands(path: Path, salt: str, root: Path) -> list[tuple[str, list[str], Path]]:
    """Each root task of a compiled pipeline: (name, its full command with every placeholder resolved
    as kfp.local resolves it, its task directory)."""
    pipeline = load_pipeline(str(path))
    run = f"bench-direct-{uuid.uuid4().hex[:8]}"
    parents = kfp_io.IOStore()
    parents.put_parent_input("salt", salt)
    commands = []
    for name, task_spec in pipeline.spec.root.dag.tasks.items():
        component = pipeline.components[task_spec.component_ref.name]
        container = pipeline.executors[component.executor_label].container
        arguments = make_task_arguments(task_spec.inputs, parents)
        task_root = root / name
        task_root.mkdir(parents=True)
        executor_input = executor_input_utils.construct_executor_input(component, arguments, str(task_root),
                                                                       block_input_artifact=False)
        command = placeholder_utils.replace_placeholders(
            full_command=[*container.command, *container.args],
            executor_input_dict=executor_input_utils.executor_input_to_dict(executor_input, component),
            pipeline_resource_name=run, task_resource_name=name, pipeline_root=str(root), unique_pipeline_id=run)
        commands.append((name, command, task_root))
    return commands


def bare_command(command: list[str], task_root: Path) -> list[str]:
    """The executor process alone: the lightweight component's ``sh -c`` wrapper (pip preamble, the
    program written to a file) left out, the program written here instead."""
    at = command.index("--executor_input")
    program = task_root / "ephemeral_component.py"
    program.write_text(command[at - 1])
    return [sys.executable, "-m", "kfp.dsl.executor_main", "--component_module_path", str(program), *command[at:]]


@contextlib.contextmanager
def runner_task_environment(command: list[str], base: dict[str, str]):
    """The environment the runner gives a task with ``command`` in ``--task-env`` venv (the
    environment of the command's requirement set, built when the cache has none) or host."""
    shims = Shims()
    try:
        if TASK_OPTIONS.get("task_env", "host") == "venv":
            with EnvironmentCache(TASK_OPTIONS.get("env_dir")) as environments:
                yield shims.environment(base, environments.ensure(requirement_set(command)))
        else:
            yield shims.host(base)
    finally:
        shims.close()


def run_commands(commands: Sequence[tuple[list[str], Path]], env: dict[str, str], at_once: int) -> float:
    """Wall time of running the commands, ``at_once`` at a time, each in its directory with its output
    to files (as the runner does); every one must succeed and write its executor output."""
    def one(item: tuple[list[str], Path]) -> int:
        argv, cwd = item
        with open(cwd / "stdout.log", "wb") as stdout, open(cwd / "stderr.log", "wb") as stderr:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                                    cwd=cwd).wait()

    began = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        codes = list(pool.map(one, commands))
    wall = time.perf_counter() - began
    for code, (argv, cwd) in zip(codes, commands):
        if code != 0 or not (cwd / "executor_output.json").exists():
            raise SystemExit(f"task command in {cwd} failed (exit {code}): "
                             + (cwd / "stderr.log").read_text(errors="replace")[-2000:])
    return wall


def measure_direct(path: Path, variant: str, at_once: int, out: Path, keep: bool, limit: Optional[int] = None
                   ) -> tuple[float, int]:
    """(wall time, number of tasks) of the fan-out's task commands run directly; ``variant`` is
    ``bare`` (the executor alone), ``runner`` (the compiled command in the runner's task environment)
    or ``kfp`` (the compiled command as kfp.local runs it)."""
    with scratch(out, f"direct-{variant}-{at_once}", keep) as directory:
        commands = task_commands(path, uuid.uuid4().hex[:12], directory)[:limit]
        env = dict(os.environ)
        with contextlib.ExitStack() as stack:
            if variant == "bare":
                env["_KFP_RUNTIME"] = "true"  # as the compiled command sets it
                argvs = [(bare_command(command, cwd), cwd) for _, command, cwd in commands]
            elif variant == "runner":
                env = stack.enter_context(runner_task_environment(commands[0][1], env))
                argvs = [(command, cwd) for _, command, cwd in commands]
            else:  # kfp.local's SubprocessTaskHandler: 'python3' replaced by its interpreter
                argvs = [([part.replace("python3", sys.executable) for part in command], cwd)
                         for _, command, cwd in commands]
            return run_commands(argvs, env, at_once), len(argvs)


# -- kfp.local ------------------------------------------------------------------------------------

def measure_kfp_local(pipeline_func, tasks: int, out: Path, keep: bool) -> float:
    """Wall time of kfp.local running the fan-out's pipeline function, outputs checked."""
    with scratch(out, "kfp-local", keep) as directory:
        salt = uuid.uuid4().hex[:12]
        root = directory / "local_outputs"
        kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        try:
            with open(directory / "kfp-local.log", "w") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                began = time.perf_counter()
                pipeline_func(salt=salt)
                wall = time.perf_counter() - began
        finally:
            kfp_local_config.LocalExecutionConfig.instance = None
        outputs = sorted(json.loads(p.read_text()).get("parameterValues", {}).get("Output")
                         for p in root.glob("*/*/executor_output.json"))
        if outputs != expected_outputs(salt, tasks):
            raise SystemExit(f"kfp.local: outputs {outputs[:3]}..., expected {expected_outputs(salt, tasks)[:3]}...")
    return wall


# -- profile --------------------------------------------------------------------------------------

@contextlib.contextmanager
def profiled_threads(profiles: list):
    """Every thread started in the block runs under its own cProfile.Profile (appended to ``profiles``)."""
    original = threading.Thread.run

    def run(self, *args, **kwargs):
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()
        try:
            return original(self, *args, **kwargs)
        finally:
            profile.disable()

    threading.Thread.run = run
    try:
        yield
    finally:
        threading.Thread.run = original


def profile_pipeline(kind: str, path: Path, tasks: int, db: Optional[str], out: Path, keep: bool, top: int,
                     store_dir: Optional[Path] = None) -> dict[str, Any]:
    """One run of a pipeline at parallelism 1, executed then cached, under cProfile; stats to ``out``."""
    found = {}
    with scratch(out, "profile", keep) as directory:
        cache = ExecutionCache(connect(store_url(db, directory, store_dir)))
        pipeline = load_pipeline(str(path))
        salt = uuid.uuid4().hex[:12]
        for phase, state in (("executed", "COMPLETE"), ("cached", "CACHED")):
            profiles: list = []
            main = cProfile.Profile()
            profiles.append(main)
            with profiled_threads(profiles):
                main.enable()
                wall = run_and_check(cache, pipeline, salt, directory / "pipeline-root", 1, state, tasks)
                main.disable()
            stats = pstats.Stats(main)
            for profile in profiles[1:]:
                with contextlib.suppress(TypeError):  # a profile that recorded nothing
                    stats.add(profile)
            target = out / f"profile-{kind}-{phase}.prof"
            stats.dump_stats(str(target))
            found[phase] = {"wall_s": wall, "threads": len(profiles), "stats": str(target)}
            for order in ("tottime", "cumulative"):
                text = io.StringIO()
                pstats.Stats(str(target), stream=text).strip_dirs().sort_stats(order).print_stats(top)
                status(f"\n== profile: {kind} of {tasks}, {phase}, parallelism 1: {wall:.2f} s wall, "
                       f"{len(profiles)} threads profiled, by {order}\n"
                       + text.getvalue()[text.getvalue().find("   ncalls"):].rstrip())
        del cache, pipeline
        remove_store(db, directory, store_dir, keep)
    return found


# -- reporting ------------------------------------------------------------------------------------

def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds:,.2f} s"


def verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def median(samples: Sequence[float]) -> Optional[float]:
    return statistics.median(samples) if samples else None


def derive(samples: dict[str, list[float]], tasks: int, sampled: dict[str, int]) -> dict[str, Any]:
    m = {name: median(values) for name, values in samples.items()}
    per = {name: (value / sampled.get(name, tasks) if value is not None else None) for name, value in m.items()}
    bare = m.get("direct bare 1")
    result: dict[str, Any] = {"median_s": m, "per_task_s": per}

    def overhead(name: str) -> Optional[float]:
        return (m[name] - bare) / tasks if m.get(name) is not None and bare is not None else None

    def ratio(top: Optional[float], bottom: Optional[float]) -> Optional[float]:
        return top / bottom if top is not None and bottom else None

    result["executed_overhead_per_task_s"] = {
        name: overhead(name) for name in ("fan-out p1", "ParallelFor p1", "kfp.local fan-out")}
    # the part of it that is the compiled command's wrapper (shell, pip preamble), each runner's way
    result["command_preamble_per_task_s"] = {
        name: per[name] - per["direct bare 1"] for name in ("direct runner 1", "direct kfp 1")
        if per.get(name) is not None and per.get("direct bare 1") is not None}
    result["speedup_p2"] = {kind: ratio(m.get(f"{kind} p1"), m.get(f"{kind} p2")) for kind in PIPELINES}
    result["speedup_p2"]["task processes alone"] = ratio(bare, m.get("direct bare 2"))
    cached = {name: per[name] for name in per if name.endswith("cached") and per[name] is not None}
    ours = result["executed_overhead_per_task_s"]["fan-out p1"]
    theirs = result["executed_overhead_per_task_s"]["kfp.local fan-out"]
    speedup = result["speedup_p2"]["fan-out"]
    worst_cached = max(cached.values()) if cached else None
    result["targets"] = [
        {"target": f"fan-out: --parallelism 2 >= {TARGET_SPEEDUP}x faster than 1", "value": speedup,
         "ok": None if speedup is None else speedup >= TARGET_SPEEDUP},
        {"target": f"a cached task <= {TARGET_CACHED_S * 1e3:g} ms (worst cached re-run)", "value": worst_cached,
         "ok": None if worst_cached is None else worst_cached <= TARGET_CACHED_S},
        {"target": f"executed overhead per task <= {TARGET_OVERHEAD_RATIO}x kfp.local's", "value": ratio(ours, theirs),
         "ok": None if ratio(ours, theirs) is None else ratio(ours, theirs) <= TARGET_OVERHEAD_RATIO},
    ]
    return result


ROWS = (  # (sample name, pipeline, what ran)
    ("direct bare 1", "fan-out", "task processes alone, one at a time"),
    ("direct bare 2", "fan-out", "task processes alone, two at a time"),
    ("direct runner 1", "fan-out", "the runner's task command alone (shim pip preamble), one at a time"),
    ("fan-out p1", "fan-out", "mlmd-cache `--parallelism 1`"),
    ("fan-out p2", "fan-out", "mlmd-cache `--parallelism 2`"),
    ("fan-out p1 cached", "fan-out", "mlmd-cache cached re-run, `--parallelism 1`"),
    ("fan-out p2 cached", "fan-out", "mlmd-cache cached re-run, `--parallelism 2`"),
    ("kfp.local fan-out", "fan-out", "kfp.local `SubprocessRunner(use_venv=False)`"),
    ("direct kfp 1", "fan-out", "kfp.local's task command alone (real pip preamble), one at a time"),
    ("ParallelFor p1", "ParallelFor", "mlmd-cache `--parallelism 1`"),
    ("ParallelFor p2", "ParallelFor", "mlmd-cache `--parallelism 2`"),
    ("ParallelFor p1 cached", "ParallelFor", "mlmd-cache cached re-run, `--parallelism 1`"),
    ("ParallelFor p2 cached", "ParallelFor", "mlmd-cache cached re-run, `--parallelism 2`"),
)


def print_report(result: dict[str, Any], samples: dict[str, list[float]], tasks: int, sampled: dict[str, int],
                 header: str) -> None:
    m, per = result["median_s"], result["per_task_s"]
    overheads = {**result["executed_overhead_per_task_s"], **result["command_preamble_per_task_s"]}
    print(header)
    print()
    print(f"| pipeline ({tasks} tasks) | what ran | wall | per task | executed overhead per task | samples |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, kind, label in ROWS:
        if name not in samples:
            continue
        n = sampled.get(name, tasks)
        wall = duration(m[name]) if n == tasks else f"{duration(m[name])} ({n} tasks)"
        extra = ""
        if name.endswith(" p2") or name == "direct bare 2":
            speedup = result["speedup_p2"]["task processes alone" if name == "direct bare 2" else kind]
            extra = f" (speed-up {speedup:.2f}x)" if speedup else ""
        print(f"| {kind} | {label}{extra} | {wall} | {duration(per[name])} | {duration(overheads.get(name))} | "
              f"{len(samples[name])} |")
    print()
    print("| target | measured | |")
    print("| --- | ---: | --- |")
    for target in result["targets"]:
        value = target["value"]
        if value is None:
            shown = "n/a"
        elif "ms" in target["target"]:
            shown = duration(value)
        else:
            shown = f"{value:.2f}x"
        print(f"| {target['target']} | {shown} | {verdict(target['ok'])} |")
    sys.stdout.flush()


# -- main -----------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40, help="tasks of the fan-out and ParallelFor iterations "
                                                              "(default: 40)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of measurements; medians over them (default: 3)")
    parser.add_argument("--kfp-repeat", type=int, default=1,
                        help="rounds that also measure kfp.local, whose run takes about 1.2 s a task (default: 1; "
                             "0 leaves it out)")
    parser.add_argument("--command-samples", type=int, default=8,
                        help="tasks of which kfp.local's own command (with its real pip install) is timed "
                             "directly (default: 8)")
    parser.add_argument("--db", metavar="URL", help="one store for every measurement (a new salt makes each "
                                                    "first run miss); default: a new SQLite file each time")
    parser.add_argument("--store-dir", type=Path,
                        help="where the new SQLite files go instead of each measurement's directory under --out "
                             "(e.g. /dev/shm: the runner's cost without the disk's commit latency)")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "runner",
                        help="where the measurements' temporary directories go (default: .bench/runner/)")
    parser.add_argument("--keep", action="store_true", help="keep the measurements' directories")
    parser.add_argument("--json", action="store_true", help="one JSON object on standard output instead of tables")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each pipeline at parallelism 1, executed and cached (cProfile; "
                             "profile-*.prof in --out, top functions on standard error)")
    parser.add_argument("--profile-top", type=int, default=25, help="functions shown per profile (default: 25)")
    parser.add_argument("--task-env", choices=("venv", "host", "docker"), default="venv",
                        help="run_pipeline's task_env for the runs above (default: venv, the runner's default)")
    parser.add_argument("--env-dir", type=Path,
                        help="run_pipeline's env_dir with --task-env venv (default: the runner's, "
                             "$MLMD_CACHE_ENV_DIR or ~/.cache/mlmd-cache/envs)")
    parser.add_argument("--modes", action="store_true",
                        help="instead: executed-task overhead per --task-env mode (host, venv warm, a new "
                             "environment, docker) against kfp.local 2.17.3 use_venv=True and DockerRunner: "
                             "scripts/bench_task_envs.py, whose options follow (--modes --help lists them)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--modes" in argv:
        sys.modules.setdefault("bench_runner", sys.modules[__name__])  # its helpers: this module, not a copy
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_task_envs
        return bench_task_envs.main([arg for arg in argv if arg != "--modes"])
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1 or args.kfp_repeat < 0 or args.command_samples < 0:
        parser.error("--tasks and --repeat must be positive, --kfp-repeat and --command-samples not negative")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store_dir: Optional[Path] = args.store_dir.resolve() if args.store_dir else None
    if store_dir is not None and args.db:
        parser.error("--store-dir is for the new SQLite files; --db names one store")
    if store_dir is not None:
        store_dir.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    load_before = os.getloadavg()[0]  # other work on the machine skews every number (and p2 most)
    samples: dict[str, list[float]] = {}
    sampled: dict[str, int] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="compiled-", dir=out) as compiled:
        functions, paths = {}, {}
        for kind, make in PIPELINES.items():
            functions[kind] = make(args.tasks)
            paths[kind] = Path(compiled) / f"{kind}.yaml"
            compiler.Compiler().compile(functions[kind], str(paths[kind]))
        kinds = []
        for kind in PIPELINES:
            try:
                load_pipeline(str(paths[kind]))
                kinds.append(kind)
            except UnsupportedPipelineError as error:
                notes.append(f"{kind}: refused by this runner ({error})")
        parallelisms = PARALLELISMS if HAS_PARALLELISM else (1,)
        if not HAS_PARALLELISM:
            notes.append("run_pipeline has no parallelism keyword: tasks run one at a time, p2 is n/a")
        direct_runner = Shims is not None and args.task_env != "docker"
        if Shims is None:
            notes.append("mlmd_cache.runner.shims.Shims is missing: the runner's command is not timed")
        elif args.task_env == "docker":
            notes.append("--task-env docker: the runner's task command is `docker run`, not timed alone "
                         "(see --modes for docker's overhead)")
        if HAS_TASK_ENV:
            TASK_OPTIONS.update(task_env=args.task_env, env_dir=args.env_dir)
            if args.task_env == "venv":  # built before the rounds: the runs measure a warm environment
                status("the tasks' environment (--task-env venv): built unless the cache has it")
                first = task_commands(paths["fan-out"], "warm-up", Path(tempfile.mkdtemp(dir=out)))[0][1]
                with EnvironmentCache(args.env_dir) as environments:
                    notes.append(f"--task-env venv: environment {environments.ensure(requirement_set(first)).path}")
        elif args.task_env != "host":
            notes.append("run_pipeline has no task_env keyword: tasks run as this runner runs them")
        for note in notes:
            status(f"note: {note}")

        def record(name: str, value: float, tasks: Optional[int] = None) -> None:
            samples.setdefault(name, []).append(value)
            if tasks is not None and tasks != args.tasks:
                sampled[name] = tasks

        for round_ in range(args.repeat):
            status(f"round {round_ + 1}/{args.repeat} ({time.perf_counter() - began:.0f} s)")
            for at_once in (1, 2):
                status(f"  task processes alone, {at_once} at a time")
                record(f"direct bare {at_once}", *measure_direct(paths["fan-out"], "bare", at_once, out, args.keep))
            if direct_runner:
                status("  the runner's task command alone")
                record("direct runner 1", *measure_direct(paths["fan-out"], "runner", 1, out, args.keep))
            for kind in kinds:
                for parallelism in parallelisms:
                    status(f"  {kind}, parallelism {parallelism}, executed then cached")
                    executed, cached = measure_runner(paths[kind], parallelism, args.tasks, args.db, out, args.keep,
                                                      f"{kind}-p{parallelism}", store_dir)
                    record(f"{kind} p{parallelism}", executed)
                    record(f"{kind} p{parallelism} cached", cached)
            if round_ < args.kfp_repeat:
                status("  kfp.local on the fan-out")
                record("kfp.local fan-out", measure_kfp_local(functions["fan-out"], args.tasks, out, args.keep))
                if args.command_samples:
                    status(f"  kfp.local's task command alone, {min(args.command_samples, args.tasks)} tasks")
                    record("direct kfp 1", *measure_direct(paths["fan-out"], "kfp", 1, out, args.keep,
                                                           args.command_samples))
        profile = {kind: profile_pipeline(kind, paths[kind], args.tasks, args.db, out, args.keep, args.profile_top,
                                          store_dir)
                   for kind in (kinds if args.profile else ())} or None

    result = derive(samples, args.tasks, sampled)
    seconds = time.perf_counter() - began
    load = {"before": load_before, "after": os.getloadavg()[0]}
    ok = all(target["ok"] is not False for target in result["targets"])
    if args.json:
        print(json.dumps({"tasks": args.tasks, "repeat": args.repeat, "kfp_repeat": args.kfp_repeat,
                          "db": args.db or f"sqlite (a new file per measurement, in {store_dir or out})", "cpus": os.cpu_count(),
                          "load_average_1min": load, "seconds": seconds, "notes": notes, "samples_s": samples,
                          "sampled_tasks": sampled, **result, "profile": profile, "ok": ok}, indent=2))
    else:
        store = args.db or ("SQLite, a new file per measurement" + (f" in {store_dir}" if store_dir else ""))
        print_report(result, samples, args.tasks, sampled,
                     f"\n{args.tasks} trivial lightweight tasks; store: {store}; {os.cpu_count()} CPUs (load average "
                     f"{load['before']:.1f} before, {load['after']:.1f} after); medians of {args.repeat} rounds "
                     f"(kfp.local: {args.kfp_repeat}); {seconds:.0f} s in all")
        for note in notes:
            print(f"\nnote: {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
