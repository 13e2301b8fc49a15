"""A run's names checked against what the store can hold (:mod:`mlmd_cache.store.limits`) before
the run writes anything: every name and text of the pipeline that becomes an MLMD name or property."""
from __future__ import annotations

from typing import Iterable, Optional

from ..store import limits
from .compiled import CompiledPipeline, iter_tasks

__all__ = ["check_pipeline"]


def check_pipeline(pipeline: CompiledPipeline, run_name: str, backend: Optional[str] = None,
                   artifact_uris: Iterable[object] = ()) -> None:
    """Every name and text of a run of ``pipeline`` that becomes an MLMD name or property, checked
    before the run writes anything: the pipeline and run names, each task's path (KFP's
    ``task_name``) and display name, each image, the artifact types' names, and the URIs of the
    pipeline's input artifacts."""
    limits.check_name("pipeline name", pipeline.name, backend)
    limits.check_name("run name", run_name, backend)
    for path, task, component in iter_tasks(pipeline):
        limits.check_text("task name", path, backend)
        limits.check_text(f"task {path!r}: display name", task.task_info.name, backend)
        if component.WhichOneof("implementation") == "executor_label":
            spec = pipeline.executors.get(component.executor_label)
            if spec is not None and spec.WhichOneof("spec") == "container":
                limits.check_text(f"task {path!r}: image", spec.container.image, backend)
    for name, component in [("pipeline", pipeline.spec.root), *pipeline.components.items()]:
        for definitions in (component.input_definitions, component.output_definitions):
            for output, artifact in definitions.artifacts.items():
                limits.check_text(f"component {name!r}: artifact name", output, backend)  # its artifacts' display name
                if artifact.artifact_type.schema_title:
                    limits.check_name(f"component {name!r}: artifact type", artifact.artifact_type.schema_title, backend)
    for uri in artifact_uris:
        limits.check_text("input artifact URI", uri, backend)
