"""``--task-env docker``: each task in its container image, as KFP runs it."""
from __future__ import annotations

import threading
from typing import Optional

from ..pipeline_spec import CompiledPipeline, UnsupportedPipelineError
from .launchers import Launch, Launcher, TaskLaunch
from .watchdog import Watchdog

__all__ = ["DockerLauncher"]


class DockerLauncher(Launcher):
    """Placeholder until the docker mode lands."""

    mode = "docker"

    def __init__(self, watchdog: Optional[Watchdog] = None) -> None:
        self._watchdog = watchdog

    def check(self, pipeline: CompiledPipeline) -> None:
        raise UnsupportedPipelineError("--task-env docker is not available yet")

    def launch(self, task: TaskLaunch, cancelled: threading.Event) -> Launch:
        raise NotImplementedError
