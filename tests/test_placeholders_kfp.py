"""KFP's values of the placeholders that KFP's open-source backend does not resolve, each pipeline
compiled with the installed kfp at test time and run with the CLI (issue 25):

* ``{{$.pipeline_google_cloud_project_id}}``, ``{{$.pipeline_google_cloud_location}}`` and
  ``{{$.pipeline_persistent_resource_id}}`` (component defaults of google-cloud-pipeline-components'
  custom training jobs): KFP's driver takes a default as written and its launcher replaces only the
  task's input and output placeholders, so the task gets them as written; Vertex AI alone fills them.
* ``{{$.inputs.artifacts['NAME']}}`` (a list of input artifacts as a whole, ``artifacts_simple``):
  KFP's launcher replaces only ``.uri`` and ``.path`` (of the first artifact), so the task would get
  the placeholder's text; run-pipeline refuses it before anything runs, naming the task and input."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

from pathlib import Path
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from mlmd_cache import connect
from mlmd_cache.runner import COMPLETE
from tests.pipelines import HOST_IMAGE, cli, compile_to, run

VERTEX_ONLY = ["{{$.pipeline_google_cloud_project_id}}", "{{$.pipeline_google_cloud_location}}",
               "{{$.pipeline_persistent_resource_id}}"]


@dsl.container_component
def vertex_job(out: dsl.OutputPath(str), project: str = VERTEX_ONLY[0], location: str = VERTEX_ONLY[1],
               persistent_resource_id: str = VERTEX_ONLY[2]):
    return dsl.ContainerSpec(
        image=HOST_IMAGE, command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf "%s\\n" "$@" > "$0"'],
        args=[out, project, location, persistent_resource_id, "in the command: " + VERTEX_ONLY[1]])


@dsl.pipeline(name="vertex-placeholders")
def vertex_placeholders():
    vertex_job()


def test_vertex_only_placeholders_reach_the_task_as_written(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = compile_to(tmp_path / "p.yaml", vertex_placeholders)
    task = run(db, path, tmp_path).tasks["vertex-job"]
    assert task.state == COMPLETE, task.error
    assert task.output_parameters["out"].splitlines() == [*VERTEX_ONLY, "in the command: " + VERTEX_ONLY[1]]


@dsl.component(base_image="python:3.11")
def make(n: int, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(str(n))


@dsl.container_component
def whole_list(in_datasets: Input[List[Dataset]], out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=HOST_IMAGE, command=["sh", "-c", 'printf %s "$1" > "$0"'],
                             args=[out, in_datasets])


@dsl.pipeline(name="artifact-list-whole")
def artifact_list_whole():
    with dsl.ParallelFor([1, 2]) as n:
        made = make(n=n)
    whole_list(in_datasets=dsl.Collected(made.outputs["out"]))


def test_a_list_of_input_artifacts_as_a_whole_is_refused_at_load(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'store.db'}"
    path = compile_to(tmp_path / "p.yaml", artifact_list_whole)
    assert "{{$.inputs.artifacts['in_datasets']}}" in Path(path).read_text().replace("''", "'")
    code, out, err = cli("run-pipeline", path, "--db", db, "--pipeline-root", str(tmp_path / "root"))
    assert code == 2, out + err
    assert err.startswith("Error: pipeline 'artifact-list-whole', task 'whole-list': "
                          "{{$.inputs.artifacts['in_datasets']}}, input 'in_datasets' as a whole"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not connect(db).get_contexts()  # refused before anything was written
