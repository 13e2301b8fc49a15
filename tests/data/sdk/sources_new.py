"""Test pipelines that use what kfp 2.17 added to the IR beyond kfp-pipeline-spec 0.6.0 (kfp 2.13).

``scripts/compile_sdk_pipelines.py`` compiles them with kfp 2.17 and later only, into
``tests/data/sdk/kfp-<version>/new/<name>.yaml``: real IR for ``tests/test_sdk_versions.py``'s
checks that a field the installed kfp-pipeline-spec does not know is ignored when harmless
(``ttl``: ``dsl.PipelineConfig``'s resource TTLs) and refused by name when it changes what runs
(``workspace``, ``task_config``).
"""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)
from kfp import dsl

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def echo(word: str) -> str:
    return word


@dsl.pipeline(name="sdk-ttl", pipeline_config=dsl.PipelineConfig(
    ttl_seconds_after_finished=60, ttl_seconds_after_success=60, ttl_seconds_after_failure=600))
def ttl(word: str = "kept") -> str:
    return echo(word=word).output


@dsl.component(base_image=IMAGE)
def write_to(workspace: str) -> str:
    with open(f"{workspace}/note", "w") as f:
        f.write("shared")
    return workspace


@dsl.pipeline(name="sdk-workspace",
              pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(size="1Gi")))
def workspace() -> str:
    return write_to(workspace=dsl.WORKSPACE_PATH_PLACEHOLDER).output


@dsl.component(base_image=IMAGE, task_config_passthroughs=[dsl.TaskConfigField.RESOURCES])
def sized(config: dsl.TaskConfig) -> str:
    return str(config.resources)


@dsl.pipeline(name="sdk-task-config")
def task_config() -> str:
    return sized().set_cpu_limit("1").output


PIPELINES = {"ttl": ttl, "workspace": workspace, "task_config": task_config}
