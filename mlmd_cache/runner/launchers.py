"""Where a task's command runs (``run-pipeline --task-env``): never in the environment of
mlmd-cache itself, which a task can neither install into nor change.

- ``venv`` (the default): in the environment built for its requirement set
  (:mod:`mlmd_cache.environments`: what its command asks pip for, and the Python), cached and shared
  by every task and run that asks for the same set;
- ``docker``: in its container image, as KFP runs it (:mod:`.docker`);
- ``host``: with mlmd-cache's own interpreter first on ``PATH``; a ``pip install`` it already
  satisfies passes, any other fails the task in one line.

A launcher checks the whole pipeline before the run writes anything (:meth:`Launcher.check`), then
turns each task's resolved command into what runs (:meth:`Launcher.launch`, on the worker thread
that runs the task, so that building an environment holds no slot of the scheduler's loop).
The cache key is the container spec as compiled whatever the mode: a result of one mode is a valid
cache source for the others, as KFP would reuse it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..defaults import DEFAULT_TASK_ENV, TASK_ENV_MODES
from ..environments import EnvironmentCache, requirement_set
from ..errors import TaskEnvironmentError
from ..pipeline.spec import CompiledPipeline, UnsupportedPipelineError, iter_tasks
from .shims import Shims
from .watchdog import Watchdog

__all__ = ["Launcher", "Launch", "TaskLaunch", "HostLauncher", "VenvLauncher", "TASK_ENV_MODES",
           "DEFAULT_TASK_ENV", "TaskEnvironmentError", "check_commands"]

# What the shims give a task in venv and host modes: never looked up on the host.
_SHIMMED = frozenset({"python", "python3", "pip", "pip3"})


@dataclass
class Launch:
    """What a task's process runs, and with which environment. ``stop`` is called (from any
    thread) when the task is stopped, besides its process group being killed; ``cleanup`` after
    the process ended, whatever happened (both for a container: ``docker rm -f``)."""

    command: list[str]
    env: dict[str, str]
    stop: Optional[Callable[[], None]] = None
    cleanup: Optional[Callable[[], None]] = None


@dataclass
class TaskLaunch:
    """A task as the launcher sees it: its resolved command and environment, its container spec
    (image, resources, ``env``), its directory, the pipeline root, its input artifacts' URIs, and
    who it is; ``resolve`` resolves the placeholders of any words of its spec. ``command`` is
    the container's command then its args, resolved; the first ``entrypoint`` words are the
    command's (what replaces an image's ENTRYPOINT), the rest its args."""

    command: list[str]
    entrypoint: int
    env: dict[str, str]
    container: Any
    task_dir: Path
    pipeline_root: Path
    run_name: str
    task_path: str
    execution_id: int
    resolve: Callable[[list[str]], list[str]] = list  # placeholders of the container spec (an image from a parameter)
    input_uris: tuple[str, ...] = ()  # the URIs of the task's input artifacts


class Launcher:
    """A ``--task-env`` mode; see the module docstring."""

    mode = ""

    def check(self, pipeline: CompiledPipeline) -> None:
        """Refuse, before anything is written, a pipeline whose tasks cannot run in this mode."""

    def launch(self, task: TaskLaunch, cancelled: threading.Event) -> Launch:
        """The command and environment of the task's process (raises :class:`TaskEnvironmentError`)."""
        raise NotImplementedError

    def close(self) -> None:
        """The run has ended."""

    def describe(self) -> str:
        """The mode as the run's summary names it."""
        return self.mode


def check_commands(pipeline: CompiledPipeline, path: str, mode: str) -> None:
    """Every task's program must exist on this host (for modes that run commands on the host)."""
    for name, task, component in iter_tasks(pipeline):
        if component.WhichOneof("implementation") == "dag":
            continue
        if pipeline.executors[component.executor_label].WhichOneof("spec") != "container":
            continue
        container = pipeline.executors[component.executor_label].container
        if not container.command and container.args:  # a v1 component that gives only its args
            raise UnsupportedPipelineError(
                f"pipeline {pipeline.name!r}, task {name!r}: its container has args but no command, so "
                f"the entry point of image {container.image!r} runs them, which --task-env {mode} cannot "
                "(it runs commands on the host); --task-env docker runs it in its image")
        program = (list(container.command) or [""])[0]
        if not program or "{{" in program or os.path.basename(program) in _SHIMMED:
            continue
        if shutil.which(program, path=path) is None:
            raise UnsupportedPipelineError(
                f"pipeline {pipeline.name!r}, task {name!r}: command {program!r} does not exist on this host "
                f"(--task-env {mode} runs commands on the host; --task-env docker runs them in image "
                f"{container.image!r})")


class _OnThisHost(Launcher):
    """A mode whose tasks run programs of this host's ``PATH`` (python and pip are the shims')."""

    def check(self, pipeline: CompiledPipeline) -> None:
        check_commands(pipeline, os.environ.get("PATH", os.defpath), self.mode)


class HostLauncher(_OnThisHost):
    """``--task-env host``: mlmd-cache's own interpreter, which a task may use but never install into."""

    mode = "host"

    def __init__(self) -> None:
        self._shims = Shims()

    def launch(self, task: TaskLaunch, cancelled: threading.Event) -> Launch:
        return Launch(task.command, self._shims.host(task.env))

    def close(self) -> None:
        self._shims.close()


class VenvLauncher(_OnThisHost):
    """``--task-env venv``: each task in the cached environment of its requirement set."""

    mode = "venv"

    def __init__(self, env_dir: Optional[os.PathLike] = None, watchdog: Optional[Watchdog] = None) -> None:
        self._watchdog = watchdog
        self.environments = EnvironmentCache(env_dir, on_process=self._follow)
        self._shims = Shims()

    def _follow(self, process: subprocess.Popen, started: bool) -> None:
        if self._watchdog is not None:  # a build does not outlive the runner either
            (self._watchdog.register if started else self._watchdog.unregister)(process.pid)

    def check(self, pipeline: CompiledPipeline) -> None:
        self.environments.check_root()
        super().check(pipeline)

    def launch(self, task: TaskLaunch, cancelled: threading.Event) -> Launch:
        environment = self.environments.ensure(requirement_set(task.command), cancelled)
        return Launch(task.command, self._shims.environment(task.env, environment))

    def close(self) -> None:
        self.environments.close()
        self._shims.close()

    def describe(self) -> str:
        return f"venv ({self.environments.root})"
