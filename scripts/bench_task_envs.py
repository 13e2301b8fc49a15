#!/usr/bin/env python
"""Benchmark `run-pipeline --task-env`: executed-task overhead per mode, a new environment, against kfp.local 2.17.3.

Also ``python scripts/bench_runner.py --modes [OPTIONS]``. In one run, in this process (the peer in
a child process of its own venv), it measures:

* **per executed task overhead** of ``run_pipeline(..., parallelism=1, task_env=MODE)`` for
  ``host``, ``venv`` (its environment already built: warm) and ``docker`` (when Docker answers and
  the tasks' image is on this machine: ``--image``, else ``python:3.11``, ``$MLMD_PYTHON_IMAGE`` or
  the ``mlmd-cache-standin/python`` image that ``scripts/build_local_images.sh python`` builds;
  else n/a with the reason): a fan-out of ``--tasks`` trivial
  lightweight tasks (``echo(salt, i) -> str``, ``--docker-tasks`` for docker) on a fresh SQLite
  store with a new salt, as ``scripts/bench_runner.py`` defines overhead:
  (wall of the run - wall of the bare task processes) / tasks, where the bare task processes are
  ``python -m kfp.dsl.executor_main ...`` of each task (this interpreter, kfp 2.13), started one
  after the other; the same bare figure (per task) is subtracted for every mode and for the peer;
* **a new environment from a warm package cache**: ``EnvironmentCache(fresh dir).ensure()`` of the
  set ``pip install kfp==2.17.3`` *with* its dependencies (not ``--no-deps``: ~30 packages), after
  one warm-up build of the same set in another fresh directory, so that uv's cache holds every
  wheel. The fresh directories are made beside the default environment cache
  (``~/.cache/mlmd-cache/bench-envs-*``, removed afterwards), on the file system where uv's cache
  is, as a user's environments are;
* **the peer**: kfp 2.17.3 installed with pip (``pip install kfp==2.17.3 docker``) into a throwaway
  venv (``python3.11 -m venv`` in a temporary directory), running the same fan-out, defined and run
  in that venv by a child script: ``kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=True))``
  (a new venv per task, pip upgraded in it, setuptools and wheel and the task's ``kfp==2.17.3``
  installed: seconds per task, so ``--peer-tasks`` is small, default 4), and
  ``kfp.local.DockerRunner(network_mode="host")`` (the daemon here has no bridge network, and the
  component's preamble needs PyPI; our docker mode also runs with ``--network host``) with the
  tasks' ``base_image`` the local python image, when Docker answers, the image exists and the
  ``docker`` package installed in the peer venv; else n/a with the reason. Same overhead
  definition: (wall of its run - tasks x the bare task process) / tasks;
* for the record (profile of where the time goes): the bare task processes under the warm
  environment's Python; the compiled task command (``sh -c`` + pip preamble + executor) run directly
  with the ``PATH`` each mode gives tasks (``Shims().host`` / ``Shims().environment``); the first
  build of the pipeline's own set (``kfp==2.13.0 --no-deps``).

Targets (ratios from this one run): warm ``venv`` overhead <= 1.3x ``host``'s; a new environment of
kfp 2.17.3 and its dependencies from a warm package cache <= 3 s; warm ``venv`` overhead <= 0.2x
kfp.local ``use_venv=True``'s per task. Prints a markdown table for the README and the targets, or
one JSON object with ``--json``; exits 1 when a target fails (n/a fails nothing). Medians over
``--repeat`` rounds (the peer: ``--peer-repeat``, default 1). No randomness but the salts and
directory names (``random.seed(--seed)`` anyway).

Usage::

    python scripts/bench_task_envs.py                       # 12 tasks, 3 rounds, peer 4 tasks once
    python scripts/bench_runner.py --modes --tasks 8 --repeat 2 --json
    python scripts/bench_task_envs.py --no-peer --no-docker # ours only
"""
# (no `from __future__ import annotations`: KFP reads the component's annotations as types)

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SCRIPTS))

warnings.filterwarnings("ignore", category=FutureWarning)  # kfp's notices

import bench_runner as base  # noqa: E402  (its task commands, bare processes, checks)
from kfp import compiler, dsl  # noqa: E402

from mlmd_cache import ExecutionCache, connect  # noqa: E402
from mlmd_cache.environments import (EnvironmentCache, RequirementSet, default_cache_dir,  # noqa: E402
                                     python_identity, requirement_set)
from mlmd_cache.pipeline.spec import load_pipeline  # noqa: E402
from mlmd_cache.runner import run_pipeline  # noqa: E402
from mlmd_cache.runner.shims import Shims  # noqa: E402

PEER_KFP = "2.17.3"
NEW_SET = f"kfp=={PEER_KFP}"
TARGET_VENV_HOST = 1.3
TARGET_NEW_SET_S = 3.0
TARGET_VENV_PEER = 0.2
DEFAULT_IMAGE = "python:3.11"
IMAGE_VARIABLE = "MLMD_PYTHON_IMAGE"  # scripts/build_local_images.sh's export for the python image
STANDIN_REPO = "mlmd-cache-standin/python"  # ... and the repository it tags it in


def echo(salt: str, i: int) -> str:
    return f"{salt}-{i}"


def fan_out(image: str, tasks: int, name: str = "bench-task-envs"):
    component = dsl.component(base_image=image)(echo)

    @dsl.pipeline(name=name)
    def pipeline(salt: str = "none"):
        for i in range(tasks):
            component(salt=salt, i=i)

    return pipeline


status = base.status


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


# -- docker ---------------------------------------------------------------------------------------

def docker_answers() -> Optional[str]:
    """None when a Docker daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "no `docker` on PATH"
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker version` did not answer within 30 s"
    if done.returncode != 0 or not done.stdout.strip():
        return f"no Docker daemon answers ({(done.stderr or done.stdout).strip().splitlines()[-1:]})"
    return None


def has_image(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60).returncode == 0


def choose_image(requested: Optional[str]) -> tuple[str, Optional[str]]:
    """The tasks' base image, and why docker runs are n/a (None when they can run)."""
    why = docker_answers()
    candidates = [requested] if requested else [DEFAULT_IMAGE] + ([os.environ[IMAGE_VARIABLE]]
                                                                  if os.environ.get(IMAGE_VARIABLE) else [])
    if why is not None:
        return candidates[0], why
    if not requested:  # what scripts/build_local_images.sh built, untagged as python:3.11 (tests tag it)
        done = subprocess.run(["docker", "images", STANDIN_REPO, "--format", "{{.Repository}}:{{.Tag}}"],
                              capture_output=True, text=True, timeout=60)
        candidates += [line for line in done.stdout.split() if line and not line.endswith(":<none>")]
    for image in candidates:
        if has_image(image):
            return image, None
    return candidates[0], (f"image {' or '.join(candidates)} is not on this machine and no registry is reachable "
                           "(`bash scripts/build_local_images.sh python`, then `docker tag` it as python:3.11)")


# -- ours -----------------------------------------------------------------------------------------

def measure_run(path: Path, mode: str, env_dir: Path, tasks: int, out: Path, keep: bool) -> float:
    """Wall of one run_pipeline at parallelism 1 with ``task_env=mode``, fresh store, new salt; every
    task COMPLETE with its output."""
    with base.scratch(out, f"run-{mode}", keep) as directory:
        cache = ExecutionCache(connect(f"sqlite:///{directory / 'mlmd.sqlite'}"))
        pipeline = load_pipeline(str(path))
        salt = uuid.UUID(int=random.getrandbits(128)).hex[:12]
        began = time.perf_counter()
        report = run_pipeline(cache, pipeline, {"salt": salt}, run_name=f"bench-{mode}-{salt}",
                              pipeline_root=directory / "pipeline-root", parallelism=1, task_env=mode,
                              env_dir=env_dir)
        wall = time.perf_counter() - began
        tasks_run = [t for t in report.tasks.values() if getattr(t, "kind", "container") == "container"]
        wrong = [t for t in tasks_run if t.state != "COMPLETE"]
        if wrong:
            raise RuntimeError(f"--task-env {mode}: task {wrong[0].name} is {wrong[0].state} "
                               f"({wrong[0].error or 'no error'})")
        outputs = sorted(t.output_parameters.get("Output") for t in tasks_run)
        if outputs != base.expected_outputs(salt, tasks):
            raise RuntimeError(f"--task-env {mode}: outputs {outputs[:3]}..., expected {tasks} tasks")
        del cache, pipeline
    return wall


def measure_direct(path: Path, variant: str, out: Path, keep: bool, environment=None) -> tuple[float, int]:
    """(wall, tasks) of the pipeline's task commands run directly, one at a time: ``bare`` (executor
    processes, this interpreter), ``bare-venv`` (the same under the warm environment's Python and
    PATH), ``command-host`` / ``command-venv`` (the compiled ``sh -c`` command with the PATH the
    runner gives tasks in that mode: shell, pip shim, executor)."""
    with base.scratch(out, f"direct-{variant}", keep) as directory:
        commands = base.task_commands(path, uuid.UUID(int=random.getrandbits(128)).hex[:12], directory)
        shims = Shims()
        try:
            env = dict(os.environ)
            if variant in ("bare", "bare-venv"):
                env["_KFP_RUNTIME"] = "true"  # as the compiled command sets it
                argvs = [(base.bare_command(command, cwd), cwd) for _, command, cwd in commands]
                if variant == "bare-venv":
                    env = shims.environment(env, environment)
                    argvs = [([str(environment.python), *argv[1:]], cwd) for argv, cwd in argvs]
            else:
                env = shims.host(env) if variant == "command-host" else shims.environment(env, environment)
                argvs = [(command, cwd) for _, command, cwd in commands]
            return base.run_commands(argvs, env, 1), len(argvs)
        finally:
            shims.close()


@contextlib.contextmanager
def fresh_env_dirs(keep: bool):
    """A factory of fresh environment directories beside the default cache (same file system as uv's)."""
    parent = default_cache_dir().parent
    parent.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []

    def make(label: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"bench-envs-{label}-", dir=parent))
        made.append(path)
        return path

    try:
        yield make
    finally:
        if not keep:
            for path in made:
                shutil.rmtree(path, ignore_errors=True)


def build_seconds(requirements: RequirementSet, root: Path) -> float:
    began = time.perf_counter()
    with EnvironmentCache(root) as environments:
        environments.ensure(requirements)
    return time.perf_counter() - began


# -- the peer -------------------------------------------------------------------------------------

PEER_CHILD = textwrap.dedent('''
    """The fan-out run by kfp.local (this venv's kfp): prints {"wall": seconds} or {"error": ...}."""
    import contextlib, json, pathlib, sys, time, warnings
    warnings.filterwarnings("ignore")
    runner_kind, tasks, image, root, salt, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    try:
        import kfp, kfp.local
        from kfp import dsl

        def echo(salt: str, i: int) -> str:
            return f"{salt}-{i}"

        component = dsl.component(base_image=image)(echo)

        @dsl.pipeline(name="bench-task-envs-peer")
        def fan_out(salt: str = "none"):
            for i in range(tasks):
                component(salt=salt, i=i)

        if runner_kind == "subprocess":
            runner = kfp.local.SubprocessRunner(use_venv=True)
        else:
            runner = kfp.local.DockerRunner(network_mode="host")
        kfp.local.init(runner=runner, pipeline_root=root)
        with open(log, "w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            began = time.perf_counter()
            fan_out(salt=salt)
            wall = time.perf_counter() - began
        outputs = sorted(json.loads(p.read_text()).get("parameterValues", {}).get("Output")
                         for p in pathlib.Path(root).rglob("executor_output.json"))
        expected = sorted(f"{salt}-{i}" for i in range(tasks))
        if outputs != expected:
            print(json.dumps({"error": f"outputs {outputs[:3]}..., expected {expected[:3]}..."}))
        else:
            print(json.dumps({"wall": wall, "kfp": kfp.__version__}))
    except BaseException as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"[:300]}))
''')


class Peer:
    """kfp 2.17.3 (and docker-py) installed with pip into a throwaway venv."""

    def __init__(self, out: Path, keep: bool) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="peer-", dir=out))
        self.keep = keep
        self.python = self.directory / "venv" / "bin" / "python"
        self.install_seconds: Optional[float] = None
        self.docker_package: Optional[str] = None  # why not, when the docker package is missing

    def install(self, python: str) -> None:
        began = time.perf_counter()
        subprocess.run([python, "-m", "venv", str(self.directory / "venv")], check=True, capture_output=True)
        done = subprocess.run([str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               f"kfp=={PEER_KFP}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip install kfp=={PEER_KFP}: {_last_line(done)}")
        self.install_seconds = time.perf_counter() - began
        done = subprocess.run([str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "docker"], capture_output=True, text=True)
        if done.returncode != 0:
            self.docker_package = f"pip install docker failed in the peer venv: {_last_line(done)}"
        (self.directory / "child.py").write_text(PEER_CHILD)

    def run(self, runner_kind: str, tasks: int, image: str, keep: bool) -> float:
        with base.scratch(self.directory, f"run-{runner_kind}", keep) as directory:
            salt = uuid.UUID(int=random.getrandbits(128)).hex[:12]
            log = directory / "kfp-local.log"
            done = subprocess.run([str(self.python), str(self.directory / "child.py"), runner_kind, str(tasks),
                                   image, str(directory / "local_outputs"), salt, str(log)],
                                  capture_output=True, text=True, cwd=directory,
                                  env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
            lines = done.stdout.strip().splitlines()
            try:
                answer = json.loads(lines[-1]) if lines else {"error": _last_line(done)}
            except ValueError:
                answer = {"error": lines[-1]}
            if "error" in answer:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
                raise RuntimeError(f"{answer['error']} {' | '.join(tail)}"[:600])
            return float(answer["wall"])

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in (done.stderr or done.stdout or "").strip().splitlines()
             if not line.startswith("WARNING: Location")]
    return lines[-1].strip() if lines else f"exit code {done.returncode}"


# -- reporting ------------------------------------------------------------------------------------

def derive(samples: dict[str, list[float]], counts: dict[str, int], na: dict[str, str]) -> dict[str, Any]:
    m = {name: median(values) for name, values in samples.items()}
    per = {name: m[name] / counts[name] for name in m if name in counts}
    bare = per.get("bare")
    overhead = {name: per[name] - bare for name in per
                if bare is not None and name not in ("bare",) and not name.startswith("build")}

    def ratio(top: Optional[float], bottom: Optional[float]) -> Optional[float]:
        return top / bottom if top is not None and bottom else None

    venv, host, peer = overhead.get("venv"), overhead.get("host"), overhead.get("kfp.local use_venv")
    new_set = m.get("build new set")
    targets = [
        {"target": f"warm venv overhead <= {TARGET_VENV_HOST}x host's", "value": ratio(venv, host), "unit": "x",
         "limit": TARGET_VENV_HOST},
        {"target": f"new environment ({NEW_SET} with its dependencies, warm package cache) <= {TARGET_NEW_SET_S:g} s",
         "value": new_set, "unit": "s", "limit": TARGET_NEW_SET_S},
        {"target": f"warm venv overhead <= {TARGET_VENV_PEER}x kfp.local {PEER_KFP} use_venv=True's",
         "value": ratio(venv, peer), "unit": "x", "limit": TARGET_VENV_PEER},
    ]
    for target in targets:
        target["ok"] = None if target["value"] is None else target["value"] <= target["limit"]
        if target["value"] is None:
            target["why"] = na.get("kfp.local use_venv") if "kfp.local" in target["target"] else "not measured"
    return {"median_s": m, "per_task_s": per, "executed_overhead_per_task_s": overhead,
            "ratios": {"venv/host": ratio(venv, host), "venv/kfp.local use_venv": ratio(venv, peer),
                       "docker/host": ratio(overhead.get("docker"), host),
                       "kfp.local DockerRunner/docker": ratio(overhead.get("kfp.local DockerRunner"),
                                                              overhead.get("docker"))},
            "targets": targets}


ROWS = (  # (sample, mode column, what ran)
    ("bare", "—", "task processes alone (`python -m kfp.dsl.executor_main`, host Python), one at a time"),
    ("bare-venv", "—", "the same under the warm environment's Python"),
    ("command-host", "host", "the compiled task command alone (`sh -c`, pip shim, executor), host PATH"),
    ("command-venv", "venv", "the compiled task command alone, the warm environment's PATH"),
    ("host", "host", "mlmd-cache `run-pipeline --task-env host --parallelism 1`"),
    ("venv", "venv", "mlmd-cache `--task-env venv`, environment warm"),
    ("docker", "docker", "mlmd-cache `--task-env docker` (container per task, its pip preamble)"),
    ("kfp.local use_venv", "kfp.local", f"kfp {PEER_KFP} `SubprocessRunner(use_venv=True)`"),
    ("kfp.local DockerRunner", "kfp.local", f"kfp {PEER_KFP} `DockerRunner(network_mode=\"host\")`"),
)


def duration(seconds: Optional[float]) -> str:
    return base.duration(seconds)


def print_report(result: dict[str, Any], samples: dict[str, list[float]], counts: dict[str, int],
                 na: dict[str, str], extra: dict[str, Any], header: str) -> None:
    """The tables, on standard output."""
    m, per, overhead = result["median_s"], result["per_task_s"], result["executed_overhead_per_task_s"]
    print(header)
    print()
    print("| mode | what ran | tasks | wall | per task | executed overhead per task | samples |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, mode, label in ROWS:
        if name in samples:
            print(f"| {mode} | {label} | {counts[name]} | {duration(m[name])} | {duration(per[name])} | "
                  f"{duration(overhead.get(name)) if name != 'bare' else '—'} | {len(samples[name])} |")
        elif name in na:
            print(f"| {mode} | {label} | — | n/a | n/a | n/a ({na[name]}) | 0 |")
    for name, label in (("build new set", f"venv: a new environment of `{NEW_SET}` with its dependencies "
                                          f"({extra.get('new_set_packages', '?')} packages), uv's cache warm"),
                        ("build first", f"venv: first build of the pipeline's own set "
                                        f"(`{extra.get('pipeline_set', '?')}`)"),
                        ("build new set warm-up", f"venv: the warm-up build of `{NEW_SET}` (uv's cache as found)")):
        if name in samples:
            print(f"| venv | {label} | — | {duration(m[name])} | — | — | {len(samples[name])} |")
    print()
    print("| target | measured | |")
    print("| --- | ---: | --- |")
    for target in result["targets"]:
        value = target["value"]
        shown = "n/a" if value is None else f"{value:.2f} s" if target["unit"] == "s" else f"{value:.3f}x"
        verdict = base.verdict(target["ok"])
        if target["ok"] is None and target.get("why"):
            verdict += f" ({target['why']})"
        print(f"| {target['target']} | {shown} | {verdict} |")
    sys.stdout.flush()


# -- main -----------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--tasks", type=int, default=12, help="tasks of the host and venv runs (default: 12)")
    parser.add_argument("--docker-tasks", type=int, default=4, help="tasks of the docker run (default: 4)")
    parser.add_argument("--peer-tasks", type=int, default=4,
                        help=f"tasks of the kfp.local {PEER_KFP} runs: seconds each (default: 4)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians over them (default: 3)")
    parser.add_argument("--peer-repeat", type=int, default=1, help="rounds that also run the peer (default: 1)")
    parser.add_argument("--image", help=f"the tasks' base_image (default: {DEFAULT_IMAGE}, else ${IMAGE_VARIABLE})")
    parser.add_argument("--peer-python", default=shutil.which("python3.11") or "python3",
                        help="the Python of the peer's venv (default: python3.11 on PATH)")
    parser.add_argument("--no-docker", action="store_true", help="leave docker out (both ours and the peer's)")
    parser.add_argument("--no-peer", action="store_true", help="leave kfp.local out")
    parser.add_argument("--no-new-set", action="store_true", help=f"leave the new {NEW_SET} environment out")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "task-envs",
                        help="where the measurements' temporary directories go (default: .bench/task-envs/)")
    parser.add_argument("--keep", action="store_true", help="keep the measurements' directories")
    parser.add_argument("--seed", type=int, default=21, help="random seed of the salts (default: 21)")
    parser.add_argument("--json", action="store_true", help="one JSON object on standard output instead of tables")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file (with --json too)")
    args = parser.parse_args(argv)
    if min(args.tasks, args.docker_tasks, args.peer_tasks, args.repeat) < 1 or args.peer_repeat < 0:
        parser.error("task counts and --repeat must be positive, --peer-repeat not negative")
    random.seed(args.seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill: the fresh directories are still removed
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    samples: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    na: dict[str, str] = {}
    notes: list[str] = []
    extra: dict[str, Any] = {}

    def record(name: str, value: float, tasks: Optional[int] = None) -> None:
        samples.setdefault(name, []).append(value)
        if tasks is not None:
            counts[name] = tasks

    image, docker_why = choose_image(args.image)
    if args.no_docker:
        docker_why = "left out (--no-docker)"
    extra["image"] = image
    with contextlib.ExitStack() as stack:
        compiled = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compiled-", dir=out)))
        make_dir = stack.enter_context(fresh_env_dirs(args.keep))
        paths = {}
        for label, tasks in (("main", args.tasks), ("docker", args.docker_tasks)):
            paths[label] = compiled / f"{label}.yaml"
            compiler.Compiler().compile(fan_out(image, tasks), str(paths[label]))
        container = next(iter(load_pipeline(str(paths["main"])).executors.values())).container
        pipeline_set = requirement_set([*container.command, *container.args])
        extra["pipeline_set"] = ", ".join(pipeline_set.requirements[:1] + tuple(
            arg for args in pipeline_set.installs for arg in args if arg == "--no-deps")) or "(empty)"

        # the warm environment of the pipeline's own set, for every venv run
        env_dir = make_dir("warm")
        status(f"the pipeline's environment ({pipeline_set.describe()}) in {env_dir}")
        record("build first", build_seconds(pipeline_set, env_dir))
        environments = stack.enter_context(EnvironmentCache(env_dir))
        environment = environments.ensure(pipeline_set)

        new_set = RequirementSet(python_identity(), ((NEW_SET,),))
        if not args.no_new_set:
            status(f"warm-up build of {NEW_SET} with its dependencies (fills uv's cache)")
            warm_up = make_dir("new-warm-up")
            record("build new set warm-up", build_seconds(new_set, warm_up))
            site = EnvironmentCache(warm_up).ensure(new_set).site_packages()
            extra["new_set_packages"] = sum(1 for site_dir in site for _ in Path(site_dir).glob("*.dist-info")) - 1

        peer: Optional[Peer] = None
        peer_docker_why = docker_why
        if args.no_peer:
            na["kfp.local use_venv"] = na["kfp.local DockerRunner"] = "left out (--no-peer)"
        elif args.peer_repeat:
            status(f"the peer: python -m venv, pip install kfp=={PEER_KFP} docker")
            peer = Peer(out, args.keep)
            stack.callback(peer.close)
            try:
                peer.install(args.peer_python)
                extra["peer_install_s"] = peer.install_seconds
                peer_docker_why = peer_docker_why or peer.docker_package
            except (RuntimeError, subprocess.CalledProcessError, OSError) as error:
                na["kfp.local use_venv"] = na["kfp.local DockerRunner"] = f"the peer's venv: {error}"
                peer = None

        for round_ in range(args.repeat):
            status(f"round {round_ + 1}/{args.repeat} ({time.perf_counter() - began:.0f} s)")
            for variant in ("bare", "bare-venv", "command-host", "command-venv"):
                status(f"  direct: {variant}")
                record(variant, *measure_direct(paths["main"], variant, out, args.keep, environment))
            for mode in ("host", "venv"):
                status(f"  run_pipeline --task-env {mode}, {args.tasks} tasks")
                record(mode, measure_run(paths["main"], mode, env_dir, args.tasks, out, args.keep), args.tasks)
            if docker_why is None:
                status(f"  run_pipeline --task-env docker, {args.docker_tasks} tasks")
                try:
                    record("docker", measure_run(paths["docker"], "docker", env_dir, args.docker_tasks, out,
                                                 args.keep), args.docker_tasks)
                except Exception as error:  # noqa: BLE001  (the mode is being written: say why, go on)
                    docker_why = f"failed: {str(error)[:300]}"
            if not args.no_new_set:
                status(f"  a new environment of {NEW_SET} with its dependencies (uv's cache warm)")
                record("build new set", build_seconds(new_set, make_dir("new")))
            if peer is not None and round_ < args.peer_repeat:
                for kind, name, why in (("subprocess", "kfp.local use_venv", None),
                                        ("docker", "kfp.local DockerRunner", peer_docker_why)):
                    if why is not None or name in na:
                        na.setdefault(name, why)
                        continue
                    status(f"  the peer: {name}, {args.peer_tasks} tasks")
                    try:
                        record(name, peer.run(kind, args.peer_tasks, image, args.keep), args.peer_tasks)
                    except RuntimeError as error:
                        na[name] = f"failed: {error}"
        if docker_why is not None:
            na["docker"] = docker_why
    for name in ("bare", "bare-venv", "command-host", "command-venv"):
        counts[name] = args.tasks

    result = derive(samples, counts, na)
    seconds = time.perf_counter() - began
    load = {"before": load_before, "after": os.getloadavg()[0]}
    ok = all(target["ok"] is not False for target in result["targets"])
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_report(result, samples, counts, na, extra,
                     f"\nTrivial lightweight tasks, parallelism 1, image {image}; {os.cpu_count()} CPUs (load average "
                     f"{load['before']:.1f} before, {load['after']:.1f} after); medians of {args.repeat} rounds "
                     f"(kfp.local {PEER_KFP}: {args.peer_repeat}); the bare task process per task is subtracted "
                     f"from every row; {seconds:.0f} s in all")
        for note in notes:
            print(f"\nnote: {note}")
    if args.markdown:
        args.markdown.write_text(table.getvalue().lstrip("\n"))
    if args.json:
        print(json.dumps({"tasks": args.tasks, "docker_tasks": args.docker_tasks, "peer_tasks": args.peer_tasks,
                          "repeat": args.repeat, "peer_repeat": args.peer_repeat, "seed": args.seed,
                          "cpus": os.cpu_count(), "load_average_1min": load, "seconds": seconds, **extra,
                          "not_measured": na, "notes": notes, "samples_s": samples, "tasks_of": counts, **result,
                          "ok": ok}, indent=2))
    else:
        print(table.getvalue(), end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
