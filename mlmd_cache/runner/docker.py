"""``--task-env docker``: each task in its container image, as KFP runs it in a pod.

Why each choice below:

- the command as compiled: the container's ``command`` replaces the image's ENTRYPOINT (Kubernetes
  semantics, which KFP's are; kfp.local's ``DockerRunner`` passes it as CMD instead), its ``args``
  follow; with no command the image's own entry point runs with the args;
- the environment is the container's ``env`` (``set_env_variable``), never the host's, plus
  ``TMPDIR`` (a directory in the task's folder, removed when it ends: KFP's component preamble
  writes its program there) and ``PIP_CACHE_DIR``;
- the pipeline root is bind-mounted at its own path, so that every URI in the executor input is
  valid inside the container as outside; input artifacts outside it (an importer's URI, a cache
  source of a run with another pipeline root) are mounted read-only at their own paths;
- ``--user`` of the invoking user, so that what a task writes into the pipeline root is theirs,
  not root's (``HOME=/tmp`` then, where ``pip install`` falls back to a user install);
- ``--network host``: a pod reaches the package index (the preamble of a lightweight component
  runs ``pip install kfp==X``), and the daemon may have no bridge network (scripts/docker.sh);
- a persistent pip cache shared by every container (``~/.cache/mlmd-cache/pip``), so that the
  preamble of the hundredth task downloads nothing;
- ``set_cpu_limit``/``set_memory_limit`` become ``--cpus``/``--memory``; requests are scheduling
  hints for Kubernetes and have no Docker counterpart worth having; an accelerator needs a GPU
  runtime in Docker, else the run is refused before anything is written;
- every container is named ``mlmd-cache-<run>-<execution id>-<random>`` and labelled
  (``mlmd-cache.run``, ``mlmd-cache.task``, ``mlmd-cache.execution``), and removed with
  ``docker rm -f`` when the task ends, is stopped (timeout, Ctrl-C, a lost lease) or the runner
  dies (:mod:`.watchdog`): a killed ``docker run`` client leaves its container running.

The cache key stays the container spec as compiled: a result computed in another mode is a hit here.
"""
from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

from ..defaults import user_cache_dir
from ..errors import TaskEnvironmentError
from ..pipeline.spec import CompiledPipeline, UnsupportedPipelineError, iter_tasks
from .launchers import Launch, Launcher, TaskLaunch
from .watchdog import Watchdog

__all__ = ["DockerLauncher", "default_pip_cache_dir", "PIP_CACHE_VARIABLE", "LABEL_RUN", "LABEL_TASK",
           "LABEL_EXECUTION", "cpus", "memory_bytes"]

PIP_CACHE_VARIABLE = "MLMD_CACHE_PIP_DIR"
LABEL_RUN, LABEL_TASK, LABEL_EXECUTION = "mlmd-cache.run", "mlmd-cache.task", "mlmd-cache.execution"

_QUICK_SECONDS = 60.0  # docker version/info/inspect/rm: a daemon that takes longer is not answering
_PULL_SECONDS = 1800.0
# After a stop, a `docker run` client killed amid its create request may leave the container to be
# created just after the first `docker rm -f`: a second one this much later removes it.
_SECOND_REMOVE_SECONDS = 0.5
# Kubernetes quantities of memory (what kfp's compiler accepts: a number and an optional suffix).
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki|k|m)?$")
_MEMORY_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 10**-3}
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")


def default_pip_cache_dir() -> Path:
    """``$MLMD_CACHE_PIP_DIR``, else ``$XDG_CACHE_HOME/mlmd-cache/pip`` (``~/.cache/mlmd-cache/pip``)."""
    return user_cache_dir(PIP_CACHE_VARIABLE, "pip")


def cpus(quantity: str) -> float:
    """A Kubernetes CPU quantity (``"2"``, ``"0.5"``, ``"500m"``) in CPUs (ValueError if it is none)."""
    match = _CPU.match(quantity.strip())
    if match is None:
        raise ValueError(f"CPU limit {quantity!r} is not a number of CPUs (such as 2, 0.5 or 500m)")
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``"1G"``, ``"512Mi"``, ``"1000000"``) in bytes (ValueError if it is none)."""
    match = _MEMORY.match(quantity.strip())
    if match is None:
        raise ValueError(f"memory limit {quantity!r} is not an amount of memory (such as 512Mi or 2G)")
    return int(float(match.group(1)) * _MEMORY_FACTORS[match.group(2)])


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    return lines[-1].strip() if lines else f"exit code {done.returncode}"


def _mount(source: str, target: str, read_only: bool = False) -> str:
    """A ``--mount`` value: CSV, so a path with a comma or a quote is quoted, not split."""
    fields = ["type=bind", f"source={source}", f"target={target}"] + (["readonly"] if read_only else [])
    line = io.StringIO()
    csv.writer(line, lineterminator="").writerow(fields)
    return line.getvalue()


def _container_name(task: TaskLaunch) -> str:
    run = re.sub(r"[^a-zA-Z0-9_.-]+", "-", task.run_name).strip("-._")[:64] or "run"
    return f"mlmd-cache-{run}-{task.execution_id}-{secrets.token_hex(4)}"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _input_paths(task: TaskLaunch) -> list[str]:
    """Local files and folders of the task's input artifacts outside the pipeline root, which the
    container must see at the same paths (an importer's file, a cache source of another root)."""
    root = str(task.pipeline_root)
    paths: list[str] = []
    for uri in task.input_uris:
        path = os.path.normpath(uri) if uri.startswith("/") else ""
        if path and path != "/" and not _within(path, root) and os.path.exists(path) and path not in paths:
            paths.append(path)
    return paths


class DockerLauncher(Launcher):
    """``--task-env docker``: see the module docstring. ``docker`` is the CLI (default: ``docker`` on
    ``PATH``), ``pip_cache`` the host folder of the containers' pip cache (default:
    :func:`default_pip_cache_dir`; ``False``: none)."""

    mode = "docker"

    def __init__(self, watchdog: Optional[Watchdog] = None, *, docker: Optional[str] = None,
                 pip_cache: Any = None) -> None:
        self._watchdog = watchdog
        self._docker = docker or shutil.which("docker") or "docker"
        self._pip_cache: Optional[Path] = None if pip_cache is False else Path(pip_cache or default_pip_cache_dir())
        self._lock = threading.Lock()
        self._images: set[str] = set()  # known to be on this machine
        self._gpu_runtime: Optional[bool] = None
        self._version = ""

    # ------------------------------------------------------------ the Docker CLI

    def _docker_run(self, *args: str, timeout: float = _QUICK_SECONDS) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self._docker, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 1, "", f"docker {args[0]} did not answer within {timeout:g} s")
        except OSError as error:
            return subprocess.CompletedProcess(args, 127, "", f"cannot run {self._docker!r}: {error.strerror}")

    def _check_daemon(self) -> None:
        if shutil.which(self._docker) is None:
            raise UnsupportedPipelineError("--task-env docker: docker is not installed (no `docker` on PATH)")
        done = self._docker_run("version", "--format", "{{.Server.Version}}")
        if done.returncode != 0 or not done.stdout.strip():
            raise UnsupportedPipelineError(f"--task-env docker: no Docker daemon answers ({_last_line(done)})")
        self._version = done.stdout.strip()

    def _has_gpu_runtime(self) -> bool:
        if self._gpu_runtime is None:
            done = self._docker_run("info", "--format", "{{json .Runtimes}}")
            self._gpu_runtime = done.returncode == 0 and "nvidia" in done.stdout.lower()
        return self._gpu_runtime

    def _ensure_image(self, image: str) -> Optional[str]:
        """None once ``image`` is on this machine (pulled if it was not), else why it cannot be had."""
        with self._lock:
            if image in self._images:
                return None
        if self._docker_run("image", "inspect", "--format", "{{.Id}}", image).returncode != 0:
            pulled = self._docker_run("pull", "--quiet", image, timeout=_PULL_SECONDS)
            if pulled.returncode != 0:
                return f"it is not on this machine and cannot be pulled: {_last_line(pulled)}"
        with self._lock:
            self._images.add(image)
        return None

    # ------------------------------------------------------------ the Launcher

    def check(self, pipeline: CompiledPipeline) -> None:
        """Docker answers; every image the run may use is here or pulled; limits are valid;
        accelerators only with a GPU runtime. Reads nothing of the store, writes nothing."""
        self._check_daemon()
        images: dict[str, str] = {}  # image -> the first task that uses it
        for name, _, component in iter_tasks(pipeline):
            if component.WhichOneof("implementation") == "dag":
                continue
            executor = pipeline.executors[component.executor_label]
            if executor.WhichOneof("spec") != "container":
                continue
            container = executor.container
            try:
                _limits(container, None)
            except ValueError as error:
                raise UnsupportedPipelineError(f"pipeline {pipeline.name!r}, task {name!r}: {error}") from None
            if _accelerators(container) and not self._has_gpu_runtime():
                raise UnsupportedPipelineError(
                    f"pipeline {pipeline.name!r}, task {name!r} asks for accelerators ({_accelerator_text(container)}) "
                    "and Docker has no GPU runtime (`docker info` lists no nvidia runtime)")
            if not container.image.strip():
                raise UnsupportedPipelineError(
                    f"pipeline {pipeline.name!r}, task {name!r}: its container names no image")
            if "{{" not in container.image:
                images.setdefault(container.image, name)
        # One call for all: the common case, every image already here, costs one docker process.
        if images and self._docker_run("image", "inspect", "--format", "{{.Id}}", *images).returncode == 0:
            with self._lock:
                self._images.update(images)
            return
        for image, task in images.items():
            why = self._ensure_image(image)
            if why is not None:
                raise UnsupportedPipelineError(f"pipeline {pipeline.name!r}, task {task!r}: image {image!r}: {why}")

    def launch(self, task: TaskLaunch, cancelled: threading.Event) -> Launch:
        container = task.container
        image = self._resolved(task, container.image, "image")
        if not image:
            raise TaskEnvironmentError("--task-env docker: the task has no image")
        if "{{" in container.image:  # known only now: check() could not see it
            why = self._ensure_image(image)
            if why is not None:
                raise TaskEnvironmentError(f"image {image!r}: {why}")
        try:
            limits = _limits(container, lambda value, what: self._resolved(task, value, what))
        except ValueError as error:
            raise TaskEnvironmentError(str(error)) from None
        name = _container_name(task)
        uid, gid = os.getuid(), os.getgid()
        root = str(task.pipeline_root)
        command = [self._docker, "run", "--rm", "--name", name,
                   "--label", f"{LABEL_RUN}={task.run_name}", "--label", f"{LABEL_TASK}={task.task_path}",
                   "--label", f"{LABEL_EXECUTION}={task.execution_id}",
                   "--network", "host", "--user", f"{uid}:{gid}", "--workdir", str(task.task_dir),
                   "--mount", _mount(root, root)]
        for path in _input_paths(task):
            command += ["--mount", _mount(path, path, read_only=True)]
        env: dict[str, str] = {}
        if uid != 0:  # an unknown user's HOME would be /, where nothing may be written
            env["HOME"] = "/tmp"
        pip_cache = self._pip_cache_dir()
        if pip_cache is not None:
            command += ["--mount", _mount(pip_cache, pip_cache)]
            env["PIP_CACHE_DIR"] = pip_cache
        for variable in container.env:
            env[variable.name] = task.env.get(variable.name, variable.value)
        if "TMPDIR" in task.env:
            env["TMPDIR"] = task.env["TMPDIR"]
        for variable, value in env.items():
            command += ["--env", f"{variable}={value}"]
        command += limits
        words = list(task.command)
        if task.entrypoint > 0:
            command += ["--entrypoint", words[0], image, *words[1:]]
        else:
            command += [image, *words]
        if self._watchdog is not None:  # before the container can exist: kill -9 of the runner removes it
            self._watchdog.register_container(name)
        stopped = threading.Event()

        def stop() -> None:
            stopped.set()
            self._remove(name)

        def cleanup() -> None:
            self._remove(name)
            if stopped.is_set():
                time.sleep(_SECOND_REMOVE_SECONDS)
                self._remove(name)
            if self._watchdog is not None:
                self._watchdog.unregister_container(name)

        return Launch(command, dict(os.environ), stop=stop, cleanup=cleanup)

    def describe(self) -> str:
        return f"docker (Docker {self._version})" if self._version else "docker"

    # ------------------------------------------------------------ helpers

    def _remove(self, name: str) -> None:
        self._docker_run("rm", "--force", name)

    def _pip_cache_dir(self) -> Optional[str]:
        if self._pip_cache is None:
            return None
        try:
            self._pip_cache.mkdir(parents=True, exist_ok=True)
        except OSError:  # no cache then: every container downloads what it installs
            return None
        return str(self._pip_cache.resolve())

    def _resolved(self, task: TaskLaunch, value: str, what: str) -> str:
        """``value`` of the container spec with its placeholders resolved (a pipeline parameter
        that sets the image or a limit)."""
        if "{{" not in value:
            return value
        try:
            resolved = task.resolve([value])
        except (ValueError, KeyError, IndexError, TypeError) as error:  # kfp.local's placeholder errors
            raise TaskEnvironmentError(
                f"--task-env docker: cannot resolve the task's {what} {value!r}: {error}") from None
        return resolved[0] if resolved else ""


def _limits(container: Any, resolve: Any) -> list[str]:
    """``--cpus``/``--memory``/``--gpus`` of the container's resources (ValueError when one is not
    valid). A value set by a parameter is resolved by ``resolve(value, what)``, or skipped when
    ``resolve`` is None (in :meth:`DockerLauncher.check`, before the run)."""
    resources = container.resources
    flags: list[str] = []
    cpu = _limit(resources.resource_cpu_limit, f"{resources.cpu_limit:.6f}".rstrip("0").rstrip("."),
                 "CPU limit", resolve)
    if cpu is not None:
        count = cpus(cpu)
        if count > 0:
            # Docker refuses more CPUs than the machine has; Kubernetes would leave the pod pending.
            # A limit above what the machine has limits nothing.
            count = min(count, float(os.cpu_count() or 1))
            flags += ["--cpus", f"{count:g}"]
    memory = _limit(resources.resource_memory_limit, str(round(resources.memory_limit * 10**9)), "memory limit",
                    resolve)
    if memory is not None:
        size = memory_bytes(memory)
        if size > 0:
            flags += ["--memory", str(size)]
    count = _accelerators(container)
    if count:
        if resolve is not None:
            count = resolve(count, "accelerator count") if "{{" in count else count
            flags += ["--gpus", count]
    return flags


def _limit(text: str, number: str, what: str, resolve: Any) -> Optional[str]:
    """The limit: the ``resource_*`` string field (where a parameter may set it), else the number
    older SDKs write alone (``number``, formatted: CPUs, or bytes of the GB they write)."""
    if text:
        if "{{" in text:
            return resolve(text, what) if resolve is not None else None
        return text
    return number if number not in ("", "0") else None


def _accelerators(container: Any) -> str:
    """How many accelerators the container asks for ('' when none), as compiled (maybe a placeholder)."""
    accelerator = container.resources.accelerator
    count = accelerator.resource_count or (str(accelerator.count) if accelerator.count else "")
    return "" if count in ("", "0") else count


def _accelerator_text(container: Any) -> str:
    accelerator = container.resources.accelerator
    kind = accelerator.resource_type or accelerator.type or "accelerator"
    return f"{_accelerators(container)} x {kind}"
