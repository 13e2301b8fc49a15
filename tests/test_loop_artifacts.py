"""`dsl.ParallelFor` over a list of artifacts (the IR's `artifact_iterator`, issue 25), compiled with the
real KFP SDK and run on a real MLMD store: each iteration gets its one artifact as the loop's item,
its tasks are keyed by that artifact's ID (one changed artifact re-runs only its iteration), and the
loop and its iterations are recorded as a parameter loop's are. `mlmd-cache plan` lists the
iterations once the list's length is known."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

from pathlib import Path
from typing import List

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect
from mlmd_cache.store import records
from tests.pipelines import (IMAGE, RunRecords, cache_key, compile_to, copy_ds, count_chars, input_ids, make_ds,
                             make_list, output_ids, prop, run, states)
from tests.test_plan import labels, plan_then_run

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

LOOP = "for-loop-1"  # the loop over the artifacts, in the root DAG
ITEM = "pipelinechannel--make-datasets-Output-loop-item"
LIST = "pipelinechannel--make-datasets-Output"


@dsl.component(base_image=IMAGE)
def concat(ds: Input[List[Dataset]]) -> str:
    # kfp's executor hands a component None for an empty list of artifacts
    return ",".join(open(d.path).read() for d in ds or [])


@dsl.pipeline(name="make-datasets")
def make_datasets(xs: List[int]) -> List[Dataset]:
    """One dataset per item, as a List[Dataset] output (KFP's pipeline_with_parallelfor_list_artifacts)."""
    with dsl.ParallelFor(xs) as x:
        made = make_ds(x=x)
    return dsl.Collected(made.outputs["out"])


def loop_over_datasets(parallelism: int = 0):
    @dsl.pipeline(name=f"loop-over-datasets-{parallelism}")
    def pipeline(xs: List[int] = [1, 2, 3]):
        made = make_datasets(xs=xs)
        with dsl.ParallelFor(made.output, parallelism=parallelism) as data:
            copied = copy_ds(src=data)
            count_chars(data=copied.outputs["out"])
        concat(ds=dsl.Collected(copied.outputs["out"]))
    return pipeline


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"


@pytest.fixture
def path(tmp_path: Path) -> str:
    return compile_to(tmp_path / "p.yaml", loop_over_datasets())


def made_ids(report, count: int) -> list:
    """The artifact of each iteration of the producing loop, in order."""
    return [report.tasks[f"make-datasets/for-loop-1/{i}/make-ds"].output_artifact_ids["out"][0] for i in range(count)]


def test_each_iteration_gets_its_artifact_and_its_tasks_are_keyed_by_its_id(db, path, tmp_path):
    report = run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r1")
    assert report.succeeded, states(report)
    made = made_ids(report, 3)
    assert len(set(made)) == 3
    store = connect(db, read_only=True)
    for index, artifact_id in enumerate(made):
        copied = report.tasks[f"{LOOP}/{index}/copy-ds"]
        assert copied.state == "COMPLETE"
        assert input_ids(store, copied.execution_id) == {"src": [artifact_id]}
        assert cache_key(store, copied.execution_id)["inputArtifactNames"] == {"src": {"artifactNames": [str(artifact_id)]}}
        [copy_artifact] = store.get_artifacts_by_id(copied.output_artifact_ids["out"])
        assert Path(copy_artifact.uri.removeprefix("file://")).read_text() == f"copy of {index + 1}"
    collected = [report.tasks[f"{LOOP}/{i}/copy-ds"].output_artifact_ids["out"][0] for i in range(3)]
    assert input_ids(store, report.tasks["concat"].execution_id) == {"ds": collected}


def test_the_loop_and_its_iterations_are_recorded_as_a_parameter_loops_are(db, path, tmp_path):
    report = run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r1")
    made = made_ids(report, 3)
    found = RunRecords(db, "r1")
    loop = found[report.tasks[LOOP].execution_id]
    assert found.type_of(loop) == records.DAG_EXECUTION_TYPE and loop.last_known_state == mlmd.Execution.COMPLETE
    assert prop(loop, "iteration_count") == 3 and prop(loop, "parent_dag_id") == found.root().id
    assert input_ids(found.store, loop.id) == {LIST: made}  # the whole list
    iterations = sorted(found.children(loop.id), key=lambda e: prop(e, "iteration_index"))
    assert [prop(e, "iteration_index") for e in iterations] == [0, 1, 2]
    for iteration, artifact_id in zip(iterations, made):
        assert found.type_of(iteration) == records.DAG_EXECUTION_TYPE
        assert iteration.last_known_state == mlmd.Execution.COMPLETE
        assert prop(iteration, "iteration_count") is None and prop(iteration, "total_dag_tasks") == 2
        assert input_ids(found.store, iteration.id) == {ITEM: [artifact_id]}  # its one artifact, not the list
        assert {prop(e, "task_name") for e in found.children(iteration.id)} == {"copy-ds", "count-chars"}
    # the loop's Collected output: an OUTPUT event per iteration's artifact
    assert output_ids(found.store, loop.id) == {
        "pipelinechannel--copy-ds-out": [report.tasks[f"{LOOP}/{i}/copy-ds"].output_artifact_ids["out"][0]
                                         for i in range(3)]}


def test_a_rerun_is_cached_and_one_changed_artifact_reruns_only_its_iteration(db, path, tmp_path):
    first = run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r1")
    second = run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r2")
    containers = {name: task.state for name, task in second.tasks.items() if task.kind == "container"}
    assert set(containers.values()) == {"CACHED"} and len(containers) == 3 + 3 * 2 + 1, containers
    # the second item changes: its producer runs again and makes a new artifact, the others are reused
    planned, third = plan_then_run(db, path, tmp_path, params={"xs": [1, 5, 3]}, run_name="r3")
    found = {name: task.state for name, task in third.tasks.items() if task.kind == "container"}
    assert found == {
        "make-datasets/for-loop-1/0/make-ds": "CACHED", "make-datasets/for-loop-1/1/make-ds": "COMPLETE",
        "make-datasets/for-loop-1/2/make-ds": "CACHED",
        f"{LOOP}/0/copy-ds": "CACHED", f"{LOOP}/0/count-chars": "CACHED",
        f"{LOOP}/1/copy-ds": "COMPLETE", f"{LOOP}/1/count-chars": "COMPLETE",
        f"{LOOP}/2/copy-ds": "CACHED", f"{LOOP}/2/count-chars": "CACHED",
        "concat": "COMPLETE"}
    assert made_ids(third, 3)[0] == made_ids(first, 3)[0] and made_ids(third, 3)[1] not in made_ids(first, 3)
    store = connect(db, read_only=True)
    assert input_ids(store, third.tasks[f"{LOOP}/1/copy-ds"].execution_id) == {"src": [made_ids(third, 3)[1]]}
    # the plan said so beforehand, iteration by iteration
    decided = {name: label.split(" (")[0] for name, label in labels(planned).items()}
    assert decided[f"{LOOP}/0/copy-ds"] == decided[f"{LOOP}/2/count-chars"] == "hit"
    assert decided[f"{LOOP}/1/copy-ds"] == decided[f"{LOOP}/1/count-chars"] == decided["concat"] == "run"
    assert "will be a new artifact of task 'make-datasets/for-loop-1/1/make-ds'" in planned.tasks[f"{LOOP}/1/copy-ds"].reason


def test_an_empty_list_runs_no_iteration_and_completes(db, path, tmp_path):
    report = run(db, path, tmp_path, params={"xs": []}, run_name="r1")
    assert report.succeeded, states(report)
    assert report.tasks[LOOP].state == "COMPLETE" and report.tasks["concat"].state == "COMPLETE"
    assert not [name for name in report.tasks if name.startswith(LOOP + "/")]
    found = RunRecords(db, "r1")
    loop = found[report.tasks[LOOP].execution_id]
    assert prop(loop, "iteration_count") == 0 and found.children(loop.id) == []
    assert input_ids(found.store, loop.id) == {}
    assert report.tasks["concat"].output_parameters == {"Output": ""}


def test_the_parallelism_limit_holds(db, tmp_path):
    """At parallelism 1 an iteration's DAG is written only once the one before it has ended: its ID
    comes after every execution of the earlier iteration (without a limit, all are written at once)."""
    path = compile_to(tmp_path / "p.yaml", loop_over_datasets(parallelism=1))
    report = run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r1", parallelism=4)
    assert report.succeeded, states(report)
    iterations = [report.tasks[f"{LOOP}/{i}"].execution_id for i in range(3)]
    for earlier, later in zip(iterations, iterations[1:]):
        inner = [report.tasks[f"{LOOP}/{iterations.index(earlier)}/{task}"].execution_id
                 for task in ("copy-ds", "count-chars")]
        assert later > max(inner) > earlier


def test_a_plan_over_a_list_of_unknown_length_leaves_the_loop_unknown(db, tmp_path):
    """The list's length depends on a task that runs: the plan cannot list the iterations."""
    @dsl.pipeline(name="loop-over-unknown-datasets")
    def pipeline(n: int = 2):
        made = make_datasets(xs=make_list(n=n).output)
        with dsl.ParallelFor(made.output) as data:
            copy_ds(src=data)

    path = compile_to(tmp_path / "p.yaml", pipeline)
    run(db, path, tmp_path, params={"n": 2}, run_name="r1")
    planned, report = plan_then_run(db, path, tmp_path, params={"n": 3}, run_name="r2")
    assert planned.tasks[LOOP].status == "unknown"
    assert not [name for name in planned.tasks if name.startswith(LOOP + "/")]
    assert [report.tasks[f"{LOOP}/{i}/copy-ds"].state for i in range(3)] == ["CACHED", "CACHED", "COMPLETE"]
