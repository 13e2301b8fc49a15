"""`run-pipeline` runs KFP's control flow (dsl.If/Elif/Else, ParallelFor, Collected, ExitHandler,
OneOf, set_retry, pipeline input artifacts, placeholders) with tasks in parallel, and records it in
MLMD as KFP's v2 backend does (/work/shared/reference/kfp-control-flow.md). Every pipeline is compiled
here with the real KFP SDK; every record is read back from MLMD itself. Each scenario runs on SQLite
and over `mlmd-cache serve` on MariaDB (the `db` fixture).

Where the runner's contract leaves a detail open, the tests follow KFP's semantics and say so."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator, List

import pytest
from kfp import dsl
from kfp.dsl import Dataset, Input
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect
from mlmd_cache.store import records
from tests.pipelines import (HOST_IMAGE, RunRecords, add, cache_key, cli, cli_json, compile_to, concat, copy_ds,
                             count_chars, echo_value, flaky, flaky_item, input_ids, invert, total, join_ints, make_ds, make_list,
                             marker_exists, max_concurrency, maybe_fail, optional_input, output_ids, produce, prop,
                             read_stamps, repeat, report_status, run, say, sleepy, slow_limits, square, stamp, states,
                             text_states, consume)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

COMPLETE, CACHED, FAILED, NOT_RUN, SKIPPED = "COMPLETE", "CACHED", "FAILED", "NOT_RUN", "SKIPPED"


@pytest.fixture(params=["sqlite", "serve-mysql"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, and `mlmd-cache serve` over MariaDB via grpc:// (as a KFP cluster's launchers see MLMD)."""
    with backends.fresh_store(request.param, tmp_path / "store") as url:  # SQLite: a file in a new folder
        yield url


def root_args(db: str, tmp_path: Path) -> list:
    return ["--db", db, "--pipeline-root", str(tmp_path / "root")]


# == 1. dsl.If / Elif / Else ========================================================================

@dsl.pipeline(name="branches")
def branches(s: str = "a"):
    coin = echo_value(x=s)
    with dsl.If(coin.output == "a"):
        say(message="A")
    with dsl.Elif(coin.output == "b"):
        say(message="B")
    with dsl.Else():
        say(message="C")


BRANCHES = "condition-branches-1"
BRANCH = {"a": f"{BRANCHES}/condition-2", "b": f"{BRANCHES}/condition-3", "c": f"{BRANCHES}/condition-4"}
BRANCH_TASK = {"a": f"{BRANCH['a']}/say", "b": f"{BRANCH['b']}/say-2", "c": f"{BRANCH['c']}/say-3"}


def branch_states(taken: str, task_state: str = COMPLETE) -> dict:
    expected = {"echo-value": task_state, BRANCHES: COMPLETE}
    for name in "abc":
        expected[BRANCH[name]] = COMPLETE if name == taken else SKIPPED
        expected[BRANCH_TASK[name]] = task_state if name == taken else SKIPPED
    return expected


def test_if_elif_else_runs_the_taken_branch_and_records_the_others_canceled(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", branches)
    code, first, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r1")
    assert code == 0, err
    assert {name: task["state"] for name, task in first["tasks"].items()} == branch_states("a")
    for name in "bc":  # a branch not taken: its DAG has an execution (CANCELED), its tasks none
        assert first["tasks"][BRANCH[name]]["execution_id"] is not None
        assert first["tasks"][BRANCH_TASK[name]]["execution_id"] is None
    assert first["tasks"][BRANCH_TASK["a"]]["execution_id"] is not None

    mlmd_run = RunRecords(db, "r1")
    root = mlmd_run.root()
    assert prop(root, "task_name") == "" and mlmd_run.type_of(root) == records.DAG_EXECUTION_TYPE
    pipeline_context = mlmd_run.store.get_context_by_type_and_name(records.PIPELINE_CONTEXT_TYPE, "branches")
    assert {e.id for e in mlmd_run.store.get_executions_by_context(pipeline_context.id)} >= set(mlmd_run.by_id)
    group = mlmd_run.one("condition-branches-1")
    assert mlmd_run.type_of(group) == records.DAG_EXECUTION_TYPE
    assert prop(group, "parent_dag_id") == root.id and group.last_known_state == mlmd.Execution.COMPLETE
    for name, task in (("a", "condition-2"), ("b", "condition-3"), ("c", "condition-4")):
        dag = mlmd_run.one(task)
        assert dag.id == first["tasks"][BRANCH[name]]["execution_id"]
        assert mlmd_run.type_of(dag) == records.DAG_EXECUTION_TYPE
        assert prop(dag, "parent_dag_id") == group.id
        assert prop(dag, "inputs") == {"pipelinechannel--echo-value-Output": "a"}
        assert prop(dag, "total_dag_tasks") == 1
        assert dag.last_known_state == (mlmd.Execution.COMPLETE if name == "a" else mlmd.Execution.CANCELED)
    assert "say" in mlmd_run.task_names()
    assert not {"say-2", "say-3"} & mlmd_run.task_names()  # no execution for the tasks of a branch not taken
    said = mlmd_run.one("say")
    assert prop(said, "parent_dag_id") == mlmd_run.one("condition-2").id
    assert root.last_known_state == mlmd.Execution.COMPLETE

    # the same run again, in text: every task CACHED, the branches not taken still SKIPPED
    code, out, err = cli("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r2")
    assert code == 0, err
    lines = text_states(out)
    assert lines["echo-value"] == "CACHED" and lines[BRANCH_TASK["a"]] == "CACHED"
    for name in "bc":
        assert lines[BRANCH[name]] == "SKIPPED" and lines[BRANCH_TASK[name]] == "SKIPPED"
    assert set(lines) == set(branch_states("a"))
    second = RunRecords(db, "r2")
    assert second.one("say").last_known_state == mlmd.Execution.CACHED
    assert prop(second.one("say"), "cached_execution_id") == str(said.id)
    assert second.one("condition-3").last_known_state == mlmd.Execution.CANCELED

    # flipped: the other branch runs; flipped back: the first branch's execution is reused
    flipped = run(db, path, tmp_path, params={"s": "b"}, run_name="r3")
    assert states(flipped) == branch_states("b")
    assert flipped.tasks[BRANCH_TASK["a"]].execution_id is None
    back = run(db, path, tmp_path, params={"s": "a"}, run_name="r4")
    assert states(back) == branch_states("a", CACHED)
    assert back.tasks[BRANCH_TASK["a"]].cached_execution_id == said.id
    assert back.tasks["echo-value"].cached_execution_id == mlmd_run.one("echo-value").id
    assert back.succeeded


@dsl.pipeline(name="typed-conditions")
def typed_conditions(s: str = "go", i: int = 3, f: float = 0.5, b: bool = True):
    with dsl.If(s == "go"):
        say(message="string")
    with dsl.If(i > 2):
        say(message="int")
    with dsl.If(f < 1.5):
        say(message="float")
    with dsl.If(b == True):  # noqa: E712 (compiled to CEL `== true`)
        say(message="bool")
    with dsl.If(i >= 2.5):  # int against float: CEL double(int(...))
        say(message="int-vs-float")
    sq = square(x=i)
    with dsl.If(sq.output > 5):  # an upstream task's int output
        say(message="upstream")


TYPED = {"string": "condition-1/say", "int": "condition-2/say-2", "float": "condition-3/say-3",
         "bool": "condition-4/say-4", "int-vs-float": "condition-5/say-5", "upstream": "condition-6/say-6"}


@pytest.mark.parametrize("params, taken", [
    ({}, {"string", "int", "float", "bool", "int-vs-float", "upstream"}),
    ({"s": "stop", "i": 2, "f": 1.5, "b": False}, set()),
    ({"s": "Go", "i": 4, "f": 7.0, "b": True}, {"int", "bool", "int-vs-float", "upstream"}),
])
def test_conditions_on_string_int_float_bool_parameters_and_an_upstream_output(db, tmp_path, params, taken):
    path = compile_to(tmp_path / "p.yaml", typed_conditions)
    report = run(db, path, tmp_path, params=params, run_name="r")
    expected = {"square": COMPLETE}
    for message, task in TYPED.items():
        expected[task.split("/")[0]] = COMPLETE if message in taken else SKIPPED
        expected[task] = COMPLETE if message in taken else SKIPPED
    assert states(report) == expected
    assert report.succeeded
    mlmd_run = RunRecords(db, "r")
    for message, task in TYPED.items():
        dag = mlmd_run.one(task.split("/")[0])
        assert dag.last_known_state == (mlmd.Execution.COMPLETE if message in taken else mlmd.Execution.CANCELED)
        assert len(mlmd_run.named(task.split("/")[1])) == (1 if message in taken else 0)
        if message in taken:  # it really ran: echo wrote its message
            stdout = Path(report.tasks[task].task_dir) / "stdout.log"
            assert stdout.read_text().strip() == message
    assert prop(mlmd_run.one("condition-2"), "inputs") == {"pipelinechannel--i": params.get("i", 3)}


# == 2. dsl.ParallelFor =============================================================================

@dsl.pipeline(name="literal-loop")
def literal_loop():
    with dsl.ParallelFor([3, 1, 2]) as x:
        square(x=x)


def check_loop(mlmd_run: RunRecords, report, loop: str, items: list, body: str, parent_id: int,
               prefix: str = "", items_input: str = "") -> list:
    """The records of one ParallelFor as KFP makes them; returns the iteration DAG executions.
    ``items_input``: the loop DAG's list input of a loop over a parameter (pipelinechannel--xs)."""
    loop_report = report.tasks[prefix + loop]
    assert loop_report.state == COMPLETE
    loop_dag = mlmd_run[loop_report.execution_id]
    if items_input:
        assert prop(loop_dag, "inputs") == {items_input: items}
    assert mlmd_run.type_of(loop_dag) == records.DAG_EXECUTION_TYPE
    assert prop(loop_dag, "task_name") == loop
    assert prop(loop_dag, "iteration_count") == len(items)
    assert prop(loop_dag, "iteration_index") is None
    assert prop(loop_dag, "parent_dag_id") == parent_id
    iterations = sorted(mlmd_run.children(loop_dag.id), key=lambda e: prop(e, "iteration_index"))
    assert [prop(e, "iteration_index") for e in iterations] == list(range(len(items)))
    for index, iteration in enumerate(iterations):
        assert mlmd_run.type_of(iteration) == records.DAG_EXECUTION_TYPE
        assert prop(iteration, "task_name") == loop
        if items_input:  # KFP's iteration driver: the loop's inputs without the list, plus the item
            assert prop(iteration, "inputs") == {f"{items_input}-loop-item": items[index]}
        assert report.tasks[f"{prefix}{loop}/{index}"].execution_id == iteration.id
        assert report.tasks[f"{prefix}{loop}/{index}"].state == COMPLETE
        [task] = [e for e in mlmd_run.children(iteration.id) if prop(e, "task_name") == body]
        assert prop(task, "iteration_index") is None  # body tasks carry no index, their iteration DAG does
        assert report.tasks[f"{prefix}{loop}/{index}/{body}"].execution_id == task.id
    return iterations


def test_a_loop_over_a_literal_list_records_a_loop_dag_and_one_dag_per_iteration(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", literal_loop)
    report = run(db, path, tmp_path, run_name="r")
    assert states(report) == {"for-loop-2": COMPLETE, **{f"for-loop-2/{i}": COMPLETE for i in range(3)},
                              **{f"for-loop-2/{i}/square": COMPLETE for i in range(3)}}
    assert [report.tasks[f"for-loop-2/{i}/square"].output_parameters["Output"] for i in range(3)] == [9, 1, 4]
    mlmd_run = RunRecords(db, "r")
    iterations = check_loop(mlmd_run, report, "for-loop-2", [3, 1, 2], "square", mlmd_run.root().id)
    assert prop(mlmd_run[report.tasks["for-loop-2"].execution_id], "total_dag_tasks") == 1  # the body's size
    for index, item in enumerate([3, 1, 2]):
        [task] = mlmd_run.children(iterations[index].id)
        assert prop(task, "inputs") == {"x": item}
        assert cache_key(mlmd_run.store, task.id)["inputParameterValues"] == {"x": item}  # the item, by input name


@dsl.pipeline(name="param-loops")
def param_loops(xs: List[int] = [1, 2], names: List[str] = ["a", "b"],
                recs: List[dict] = [{"label": "p", "n": 2}]):
    with dsl.ParallelFor(xs) as x:
        square(x=x)
    with dsl.ParallelFor(names) as name:
        echo_value(x=name)
    with dsl.ParallelFor(recs) as rec:
        repeat(label=rec.label, n=rec.n)  # item.field (not `.name`: that is the channel's own name)


def test_loops_over_pipeline_parameters_of_ints_strings_and_dicts(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", param_loops)
    xs, names, recs = [4, 5, 6], ["x", "y"], [{"label": "ab", "n": 2}, {"label": "c", "n": 3}]
    report = run(db, path, tmp_path, params={"xs": xs, "names": names, "recs": recs}, run_name="r")
    assert report.succeeded, states(report)
    assert [report.tasks[f"for-loop-1/{i}/square"].output_parameters["Output"] for i in range(3)] == [16, 25, 36]
    assert [report.tasks[f"for-loop-2/{i}/echo-value"].output_parameters["Output"] for i in range(2)] == ["x", "y"]
    assert [report.tasks[f"for-loop-3/{i}/repeat"].output_parameters["Output"] for i in range(2)] == ["abab", "ccc"]
    mlmd_run = RunRecords(db, "r")
    root = mlmd_run.root().id
    check_loop(mlmd_run, report, "for-loop-1", xs, "square", root, items_input="pipelinechannel--xs")
    check_loop(mlmd_run, report, "for-loop-2", names, "echo-value", root, items_input="pipelinechannel--names")
    check_loop(mlmd_run, report, "for-loop-3", recs, "repeat", root, items_input="pipelinechannel--recs")
    second = mlmd_run[report.tasks["for-loop-3/1/repeat"].execution_id]
    assert prop(second, "inputs") == {"label": "c", "n": 3}
    assert cache_key(mlmd_run.store, second.id)["inputParameterValues"] == {"label": "c", "n": 3}
    again = run(db, path, tmp_path, params={"xs": xs, "names": names, "recs": recs}, run_name="r2")
    body = [name for name in again.tasks if name.count("/") == 2]
    assert len(body) == 7 and {again.tasks[name].state for name in body} == {CACHED}


def test_an_empty_list_makes_a_loop_of_no_iterations(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", param_loops)
    report = run(db, path, tmp_path, params={"xs": [], "names": [], "recs": []}, run_name="r")
    assert states(report) == {"for-loop-1": COMPLETE, "for-loop-2": COMPLETE, "for-loop-3": COMPLETE}
    assert report.succeeded
    mlmd_run = RunRecords(db, "r")
    for loop in ("for-loop-1", "for-loop-2", "for-loop-3"):
        [dag] = mlmd_run.named(loop)  # the loop DAG only: no iteration DAGs
        assert prop(dag, "iteration_count") == 0
        assert mlmd_run.children(dag.id) == []
    assert len(mlmd_run.executions) == 4  # root and three loops


@dsl.pipeline(name="upstream-loop")
def upstream_loop(n: int = 3):
    items = make_list(n=n)
    with dsl.ParallelFor(items.output) as x:
        sq = square(x=x)
    join_ints(xs=dsl.Collected(sq.output))


def test_a_loop_over_an_upstream_output_and_a_collected_parameter_list(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", upstream_loop)
    report = run(db, path, tmp_path, params={"n": 4}, run_name="r")
    assert report.succeeded, states(report)
    assert list(report.tasks).index("make-list") < list(report.tasks).index("for-loop-1")
    assert report.tasks["join-ints"].output_parameters["Output"] == "1,4,9,16"  # in iteration order
    mlmd_run = RunRecords(db, "r")
    check_loop(mlmd_run, report, "for-loop-1", [1, 2, 3, 4], "square", mlmd_run.root().id)
    join = mlmd_run.one("join-ints")
    assert prop(join, "inputs") == {"xs": [1, 4, 9, 16]}
    assert cache_key(mlmd_run.store, join.id)["inputParameterValues"] == {"xs": [1, 4, 9, 16]}


@dsl.pipeline(name="nested-loops")
def nested_loops():
    with dsl.ParallelFor([1, 2]) as a:
        with dsl.ParallelFor([10, 20, 30]) as b:
            add(a=a, b=b)


def test_nested_loops_repeat_the_inner_loop_under_each_outer_iteration(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", nested_loops)
    report = run(db, path, tmp_path, run_name="r")
    assert report.succeeded, states(report)
    sums = {(i, j): report.tasks[f"for-loop-2/{i}/for-loop-4/{j}/add"].output_parameters["Output"]
            for i in range(2) for j in range(3)}
    assert sums == {(i, j): [1, 2][i] + [10, 20, 30][j] for i in range(2) for j in range(3)}
    mlmd_run = RunRecords(db, "r")
    outer = check_loop(mlmd_run, report, "for-loop-2", [1, 2], "for-loop-4", mlmd_run.root().id)
    for i, iteration in enumerate(outer):
        check_loop(mlmd_run, report, "for-loop-4", [10, 20, 30], "add", iteration.id, prefix=f"for-loop-2/{i}/")
    assert len(mlmd_run.named("add")) == 6
    assert len(mlmd_run.named("for-loop-4")) == 2 + 6  # a loop DAG per outer iteration, 3 iterations each


@dsl.container_component
def show_task(task_name: str, task_id: str, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=HOST_IMAGE,
                             command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf "%s %s" "$1" "$2" > "$0"'],
                             args=[out, task_name, task_id])


@dsl.pipeline(name="nested-collected")
def nested_collected():
    with dsl.ParallelFor([1, 2]) as a:
        with dsl.ParallelFor([10, 20]) as b:
            summed = add(a=a, b=b)
        show_task(task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER, task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER)
    join_ints(xs=dsl.Collected(summed.output))


def test_collected_through_nested_loops_and_task_placeholders_in_an_iteration(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", nested_collected)
    report = run(db, path, tmp_path, run_name="r")
    assert report.succeeded, states(report)
    # KFP 2.14+ (drv/resolve.go CollectInputs): one flat list, outer-major, of every iteration's output
    assert report.tasks["join-ints"].output_parameters["Output"] == "11,21,12,22"
    for i in range(2):  # {{$.pipeline_task_uuid}} is the parent DAG's execution ID: here the iteration's
        iteration = report.tasks[f"for-loop-2/{i}"].execution_id
        assert report.tasks[f"for-loop-2/{i}/show-task"].output_parameters["out"] == f"show-task {iteration}"


@dsl.pipeline(name="limited-loop")
def limited_loop(directory: str):
    with dsl.ParallelFor(["a", "b", "c", "d"], parallelism=2) as name:
        stamp(directory=directory, name=name, seconds=1.0)


def test_a_loops_parallelism_limits_its_iterations_running_at_once(db, tmp_path):
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    path = compile_to(tmp_path / "p.yaml", limited_loop)
    report = run(db, path, tmp_path, params={"directory": str(stamps)}, parallelism=4)
    assert report.succeeded, states(report)
    intervals = list(read_stamps(stamps).values())
    assert len(intervals) == 4
    assert max_concurrency(intervals) == 2  # never more than parallelism=2 (and it did run two at once)


@dsl.pipeline(name="fan-in")
def fan_in(xs: List[int] = [3, 1, 2]):
    say(message="independent")
    with dsl.ParallelFor(xs) as x:
        sq = square(x=x)
        ds = make_ds(x=sq.output)
    join_ints(xs=dsl.Collected(sq.output))
    concat(ds=dsl.Collected(ds.outputs["out"]))


def test_a_changed_item_reexecutes_its_iteration_and_the_collected_consumers_only(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", fan_in)
    first = run(db, path, tmp_path, params={"xs": [3, 1, 2]}, run_name="r1")
    assert first.succeeded, states(first)
    second = run(db, path, tmp_path, params={"xs": [3, 7, 2]}, run_name="r2")
    containers = {name: state for name, state in states(second).items()
                  if name.rsplit("/", 1)[-1] in ("say", "square", "make-ds", "join-ints", "concat")}
    assert containers == {"say": CACHED,
                          "for-loop-1/0/square": CACHED, "for-loop-1/0/make-ds": CACHED,
                          "for-loop-1/1/square": COMPLETE, "for-loop-1/1/make-ds": COMPLETE,
                          "for-loop-1/2/square": CACHED, "for-loop-1/2/make-ds": CACHED,
                          "join-ints": COMPLETE, "concat": COMPLETE}
    for name in ("for-loop-1/0/square", "for-loop-1/2/make-ds"):
        assert second.tasks[name].cached_execution_id == first.tasks[name].execution_id
    assert second.tasks["join-ints"].output_parameters["Output"] == "9,49,4"
    assert second.tasks["concat"].output_parameters["Output"] == "9,49,4"
    store = connect(db)
    names = [cache_key(store, run.tasks["concat"].execution_id)["inputArtifactNames"]["ds"]["artifactNames"]
             for run in (first, second)]
    assert names[0][0] == names[1][0] and names[0][2] == names[1][2] and names[0][1] != names[1][1]
    assert names[1][1] == str(second.tasks["for-loop-1/1/make-ds"].output_artifact_ids["out"][0])
    third = run(db, path, tmp_path, params={"xs": [3, 7, 2]}, run_name="r3")  # the same list of artifacts: a hit
    assert third.tasks["concat"].state == CACHED
    assert third.tasks["concat"].cached_execution_id == second.tasks["concat"].execution_id


@dsl.pipeline(name="loop-condition")
def loop_condition(xs: List[int] = [1, 5, 2, 7]):
    with dsl.ParallelFor(xs) as x:
        with dsl.If(x > 3):
            square(x=x)


def test_a_condition_inside_a_loop_is_decided_per_iteration(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", loop_condition)
    report = run(db, path, tmp_path, run_name="r")
    assert report.succeeded, states(report)
    taken = {1, 3}  # the items 5 and 7
    for i in range(4):
        assert report.tasks[f"for-loop-1/{i}"].state == COMPLETE
        assert report.tasks[f"for-loop-1/{i}/condition-2"].state == (COMPLETE if i in taken else SKIPPED)
        assert report.tasks[f"for-loop-1/{i}/condition-2/square"].state == (COMPLETE if i in taken else SKIPPED)
    assert report.tasks["for-loop-1/3/condition-2/square"].output_parameters["Output"] == 49
    mlmd_run = RunRecords(db, "r")
    iterations = check_loop(mlmd_run, report, "for-loop-1", [1, 5, 2, 7], "condition-2", mlmd_run.root().id)
    for i, iteration in enumerate(iterations):
        [condition] = mlmd_run.children(iteration.id)
        assert condition.last_known_state == (mlmd.Execution.COMPLETE if i in taken else mlmd.Execution.CANCELED)
        assert [prop(e, "task_name") for e in mlmd_run.children(condition.id)] == (["square"] if i in taken else [])
    assert len(mlmd_run.named("square")) == 2


@dsl.pipeline(name="loop-failure")
def loop_failure(xs: List[int] = [1, 0, 2]):
    with dsl.ParallelFor(xs) as x:
        inv = invert(x=x)
        square(x=x).after(inv)
    total(xs=dsl.Collected(inv.output))
    square(x=5)


def test_a_failing_iteration_fails_its_loop_and_stops_the_collected_consumer_only(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", loop_failure)
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r")
    assert code == 1, err
    assert {name: task["state"] for name, task in result["tasks"].items()} == {
        "for-loop-1/0/invert": COMPLETE, "for-loop-1/0/square": COMPLETE, "for-loop-1/0": COMPLETE,
        "for-loop-1/1/invert": FAILED, "for-loop-1/1/square": NOT_RUN, "for-loop-1/1": FAILED,
        "for-loop-1/2/invert": COMPLETE, "for-loop-1/2/square": COMPLETE, "for-loop-1/2": COMPLETE,
        "for-loop-1": FAILED, "total": NOT_RUN, "square-2": COMPLETE}
    mlmd_run = RunRecords(db, "r")
    loop = mlmd_run[result["tasks"]["for-loop-1"]["execution_id"]]
    assert loop.last_known_state == mlmd.Execution.FAILED
    assert [e.last_known_state for e in sorted(mlmd_run.children(loop.id), key=lambda e: prop(e, "iteration_index"))
            ] == [mlmd.Execution.COMPLETE, mlmd.Execution.FAILED, mlmd.Execution.COMPLETE]
    assert "total" not in mlmd_run.task_names()
    assert len(mlmd_run.named("square")) == 2 and len(mlmd_run.named("square-2")) == 1
    assert mlmd_run.root().last_known_state == mlmd.Execution.FAILED


@dsl.pipeline(name="loop-retry")
def loop_retry(directory: str):
    with dsl.ParallelFor(["a", "b"]) as name:
        flaky_item(directory=directory, name=name, succeed_on=2).set_retry(num_retries=1, backoff_duration="0s",
                                                                           backoff_max_duration="0s")


def test_set_retry_inside_a_loop_retries_each_iteration(db, tmp_path):
    # KFP 2.14+ applies a retry policy to any container task (open reports say it does not fire inside
    # ParallelFor: #12389); the contract's set_retry has no such exception.
    counters = tmp_path / "counters"
    counters.mkdir()
    path = compile_to(tmp_path / "p.yaml", loop_retry)
    report = run(db, path, tmp_path, params={"directory": str(counters)}, run_name="r")
    assert report.succeeded, states(report)
    for i, name in enumerate("ab"):
        task = report.tasks[f"for-loop-2/{i}/flaky-item"]
        assert task.state == COMPLETE and task.attempts == 2
        assert task.output_parameters["Output"] == f"{name}:2"
        assert (counters / name).read_text() == "2"
    executions = RunRecords(db, "r").named("flaky-item")
    assert len(executions) == 2 and {e.last_known_state for e in executions} == {mlmd.Execution.COMPLETE}


# == 3. dsl.Collected of artifacts ==================================================================

def test_a_collected_artifact_input_is_one_event_per_artifact_and_a_key_of_ids_in_order(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", fan_in)
    report = run(db, path, tmp_path, params={"xs": [3, 1, 2]}, run_name="r")
    assert report.succeeded, states(report)
    produced = [report.tasks[f"for-loop-1/{i}/make-ds"].output_artifact_ids["out"][0] for i in range(3)]
    assert len(set(produced)) == 3
    assert report.tasks["concat"].output_parameters["Output"] == "9,1,4"  # the consumer saw them in order
    store = connect(db)
    execution_id = report.tasks["concat"].execution_id
    inputs = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type == mlmd.Event.INPUT]
    assert sorted(e.artifact_id for e in inputs) == sorted(produced)
    assert {e.path.steps[0].key for e in inputs} == {"ds"}
    key = cache_key(store, execution_id)
    assert key["inputArtifactNames"] == {"ds": {"artifactNames": [str(i) for i in produced]}}
    mlmd_run = RunRecords(db, "r")
    for artifact_id, item in zip(produced, [9, 1, 4]):
        [artifact] = store.get_artifacts_by_id([artifact_id])
        assert Path(artifact.uri).read_text() == str(item)
    assert mlmd_run[execution_id].last_known_state == mlmd.Execution.COMPLETE


# == 4. dsl.ExitHandler, ignore_upstream_failure ====================================================

@dsl.pipeline(name="exit-handler")
def exit_handler(fail: bool = True):
    final = report_status()
    with dsl.ExitHandler(final, name="guarded"):
        step = maybe_fail(fail=fail)
        say(message="after the step").after(step)


def test_the_exit_task_runs_after_a_failed_group_and_sees_failed(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", exit_handler)
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r")
    assert code == 1, err
    tasks = result["tasks"]
    assert {name: task["state"] for name, task in tasks.items()} == {
        "exit-handler-1/maybe-fail": FAILED, "exit-handler-1/say": NOT_RUN, "exit-handler-1": FAILED,
        "report-status": COMPLETE}
    assert list(tasks).index("report-status") > list(tasks).index("exit-handler-1")  # after the group
    mlmd_run = RunRecords(db, "r")
    final = mlmd_run.one("report-status")
    assert final.last_known_state == mlmd.Execution.COMPLETE
    # KFP 2.14+: the state is the MLMD state of the exit handler's DAG execution, the name its task name
    assert json.loads(prop(final, "outputs")["Output"]) == {"state": "FAILED", "task": "exit-handler-1"}
    assert prop(final, "inputs")["status"]["state"] == "FAILED"
    assert prop(final, "parent_dag_id") == mlmd_run.root().id  # a sibling of the group, in the enclosing DAG
    assert mlmd_run.one("exit-handler-1").last_known_state == mlmd.Execution.FAILED
    assert prop(mlmd_run.one("exit-handler-1"), "display_name") == "guarded"  # taskInfo.name, from name=
    assert mlmd_run.one("maybe-fail").last_known_state == mlmd.Execution.FAILED
    assert "say" not in mlmd_run.task_names()
    assert mlmd_run.root().last_known_state == mlmd.Execution.FAILED


def test_the_exit_task_sees_complete_after_a_succeeding_group(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", exit_handler)
    report = run(db, path, tmp_path, params={"fail": False}, run_name="r")
    assert states(report) == {"exit-handler-1/maybe-fail": COMPLETE, "exit-handler-1/say": COMPLETE,
                              "exit-handler-1": COMPLETE, "report-status": COMPLETE}
    assert report.succeeded
    status = json.loads(report.tasks["report-status"].output_parameters["Output"])
    assert status == {"state": "COMPLETE", "task": "exit-handler-1"}
    assert list(report.tasks)[-1] == "report-status"


@dsl.pipeline(name="ignore-failure")
def ignore_failure():
    bad = maybe_fail(fail=True)
    say(message="cleanup").after(bad).ignore_upstream_failure()
    say(message="never").after(bad)


def test_ignore_upstream_failure_runs_a_task_after_a_failing_one(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", ignore_failure)
    code, out, err = cli("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r")
    assert code == 1, err
    lines = text_states(out)
    assert lines == {"maybe-fail": "FAILED", "say": "EXECUTED", "say-2": "NOT_RUN"}
    mlmd_run = RunRecords(db, "r")
    assert mlmd_run.one("say").last_known_state == mlmd.Execution.COMPLETE
    assert "say-2" not in mlmd_run.task_names()
    cleanup, failed = mlmd_run.one("say"), mlmd_run.one("maybe-fail")
    assert cleanup.create_time_since_epoch >= failed.last_update_time_since_epoch  # it ran after the failure


# == 5. dsl.OneOf ===================================================================================

@dsl.pipeline(name="one-of")
def one_of(s: str = "a"):
    coin = echo_value(x=s)
    with dsl.If(coin.output == "a"):
        a = produce(tag="A")
    with dsl.Else():
        b = produce(tag="B")
    consume(tag=dsl.OneOf(a.outputs["Output"], b.outputs["Output"]),
            ds=dsl.OneOf(a.outputs["out"], b.outputs["out"]))


def test_one_of_hands_the_branch_that_ran_to_the_consumer_and_hits_on_a_rerun(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", one_of)
    store = connect(db)
    first = run(db, path, tmp_path, params={"s": "a"}, run_name="r1")
    assert first.succeeded, states(first)
    assert first.tasks["condition-branches-1/condition-3/produce-2"].state == SKIPPED
    assert first.tasks["consume"].output_parameters["Output"] == "A:A"
    made_a = first.tasks["condition-branches-1/condition-2/produce"].output_artifact_ids["out"]
    assert input_ids(store, first.tasks["consume"].execution_id) == {"ds": made_a}
    other = run(db, path, tmp_path, params={"s": "b"}, run_name="r2")
    assert other.tasks["condition-branches-1/condition-2/produce"].state == SKIPPED
    assert other.tasks["consume"].state == COMPLETE
    assert other.tasks["consume"].output_parameters["Output"] == "B:B"
    made_b = other.tasks["condition-branches-1/condition-3/produce-2"].output_artifact_ids["out"]
    assert input_ids(store, other.tasks["consume"].execution_id) == {"ds": made_b}
    again = run(db, path, tmp_path, params={"s": "a"}, run_name="r3")
    assert again.tasks["condition-branches-1/condition-2/produce"].state == CACHED
    assert again.tasks["consume"].state == CACHED
    assert again.tasks["consume"].cached_execution_id == first.tasks["consume"].execution_id
    assert again.tasks["consume"].output_parameters["Output"] == "A:A"
    assert input_ids(store, again.tasks["consume"].execution_id) == {"ds": made_a}


# == 6. set_retry ===================================================================================

@dsl.pipeline(name="retry")
def retry(counter: str, succeed_on: int = 3):
    flaky(counter=counter, succeed_on=succeed_on).set_retry(num_retries=2, backoff_duration="0s",
                                                            backoff_max_duration="0s")


def test_a_retried_task_that_succeeds_is_one_complete_execution_and_a_cache_source(db, tmp_path):
    counter = tmp_path / "attempts"
    path = compile_to(tmp_path / "p.yaml", retry)
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r1",
                                 "--param", f"counter={counter}")
    assert code == 0, err
    assert result["tasks"]["flaky"]["state"] == COMPLETE and result["tasks"]["flaky"]["attempts"] == 3
    assert counter.read_text() == "3"
    mlmd_run = RunRecords(db, "r1")
    [execution] = [e for e in mlmd_run.executions if mlmd_run.type_of(e) == records.CONTAINER_EXECUTION_TYPE]
    assert execution.id == result["tasks"]["flaky"]["execution_id"]  # one execution for every attempt
    assert execution.last_known_state == mlmd.Execution.COMPLETE
    assert prop(execution, "outputs") == {"Output": 3}
    again = run(db, path, tmp_path, params={"counter": str(counter)}, run_name="r2")
    assert again.tasks["flaky"].state == CACHED and again.tasks["flaky"].cached_execution_id == execution.id
    assert counter.read_text() == "3"  # not run again


def test_a_task_that_always_fails_is_tried_num_retries_plus_one_times_and_never_reused(db, tmp_path):
    counter = tmp_path / "attempts"
    path = compile_to(tmp_path / "p.yaml", retry)
    params = {"counter": str(counter), "succeed_on": 100}
    first = run(db, path, tmp_path, params=params, run_name="r1")
    assert first.tasks["flaky"].state == FAILED and first.tasks["flaky"].attempts == 3
    assert not first.succeeded
    assert counter.read_text() == "3"
    assert "attempt 3 fails" in first.tasks["flaky"].error
    mlmd_run = RunRecords(db, "r1")
    [execution] = mlmd_run.named("flaky")
    assert execution.last_known_state == mlmd.Execution.FAILED
    second = run(db, path, tmp_path, params=params, run_name="r2")
    assert second.tasks["flaky"].state == FAILED and second.tasks["flaky"].cached_execution_id is None
    assert second.tasks["flaky"].execution_id != execution.id
    assert counter.read_text() == "6"  # executed again, three attempts


# == 7. Pipeline-level input artifacts ==============================================================

@dsl.pipeline(name="artifact-input")
def artifact_input(data: Input[Dataset]):
    count_chars(data=data)


@dsl.pipeline(name="make-a-dataset")
def make_a_dataset():
    make_ds(x=12345)


def test_pipeline_input_artifacts_by_uri_and_by_id(db, tmp_path):
    source = tmp_path / "rows.txt"
    source.write_text("abcdefg")
    path = compile_to(tmp_path / "p.yaml", artifact_input)
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r1",
                                 "--artifact", f"data={source}")
    assert code == 0, err
    assert result["tasks"]["count-chars"]["state"] == COMPLETE
    store = connect(db)
    counted = result["tasks"]["count-chars"]["execution_id"]
    [imported_id] = input_ids(store, counted)["data"]
    [imported] = store.get_artifacts_by_id([imported_id])
    assert imported.uri == str(source) and imported.state == mlmd.Artifact.LIVE
    assert {t.id: t.name for t in store.get_artifact_types()}[imported.type_id] == "system.Dataset"
    assert cache_key(store, counted)["inputArtifactNames"] == {"data": {"artifactNames": [str(imported_id)]}}
    assert prop(store.get_executions_by_id([counted])[0], "outputs") == {"Output": 7}
    mlmd_run = RunRecords(db, "r1")
    assert input_ids(store, mlmd_run.root().id) == {"data": [imported_id]}  # the root DAG's input artifact

    # the same URI again: the same artifact (as dsl.importer with reimport=False), so the consumer hits
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r2",
                                 "--artifact", f"data={source}")
    assert code == 0, err
    assert result["tasks"]["count-chars"]["state"] == CACHED
    assert result["tasks"]["count-chars"]["cached_execution_id"] == counted
    # that artifact by its ID: a hit too
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r3",
                                 "--artifact", f"data={imported_id}")
    assert code == 0, err
    assert result["tasks"]["count-chars"]["state"] == CACHED
    assert input_ids(store, result["tasks"]["count-chars"]["execution_id"]) == {"data": [imported_id]}

    # another existing artifact by ID (library): keyed by that ID, a miss
    made = run(db, compile_to(tmp_path / "m.yaml", make_a_dataset), tmp_path, run_name="maker")
    [other_id] = made.tasks["make-ds"].output_artifact_ids["out"]
    report = run(db, path, tmp_path, artifacts={"data": other_id}, run_name="r4")
    assert report.tasks["count-chars"].state == COMPLETE
    assert report.tasks["count-chars"].output_parameters["Output"] == 5
    assert input_ids(store, report.tasks["count-chars"].execution_id) == {"data": [other_id]}
    assert cache_key(store, report.tasks["count-chars"].execution_id)["inputArtifactNames"] == {
        "data": {"artifactNames": [str(other_id)]}}
    again = run(db, path, tmp_path, artifacts={"data": other_id}, run_name="r5")
    assert again.tasks["count-chars"].state == CACHED
    assert again.tasks["count-chars"].cached_execution_id == report.tasks["count-chars"].execution_id


@pytest.mark.parametrize("arguments", [["--artifact", "data=424242"],  # no artifact with that ID
                                       [],  # the required input artifact not given
                                       ["--artifact", "nope=1"],  # no input artifact of that name
                                       ["--artifact", "data"]])  # not NAME=ID|URI
def test_a_bad_input_artifact_is_a_usage_error_before_anything_is_written(db, tmp_path, arguments):
    path = compile_to(tmp_path / "p.yaml", artifact_input)
    code, out, err = cli("run-pipeline", path, *root_args(db, tmp_path), *arguments)
    assert code == 2, (out, err)
    assert out == "" and err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    assert connect(db).get_executions() == []


# == 8. Parallelism =================================================================================

@dsl.pipeline(name="fan-out")
def fan_out(directory: str, seconds: float = 1.0):
    for name in ("a", "b", "c", "d"):
        stamp(directory=directory, name=name, seconds=seconds)


def test_independent_tasks_run_at_once_up_to_the_parallelism(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", fan_out)
    wide, narrow = tmp_path / "wide", tmp_path / "narrow"
    wide.mkdir()
    narrow.mkdir()
    report = run(db, path, tmp_path, params={"directory": str(wide)}, parallelism=4, run_name="wide")
    assert set(states(report).values()) == {COMPLETE} and len(report.tasks) == 4
    intervals = list(read_stamps(wide).values())
    assert len(intervals) == 4
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)  # all four overlapped

    code, out, err = cli("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "narrow",
                         "--param", f"directory={narrow}", "--parallelism", "1")
    assert code == 0, err
    assert set(text_states(out).values()) == {"EXECUTED"}
    intervals = list(read_stamps(narrow).values())
    assert len(intervals) == 4 and max_concurrency(intervals) == 1  # one after the other


@dsl.pipeline(name="branch-failure")
def branch_failure():
    bad = maybe_fail(fail=True)
    say(message="descendant").after(bad)
    first = echo_value(x="x")
    second = repeat(label=first.output, n=2)
    square(x=2).after(second)


def test_a_failure_lets_independent_branches_finish_and_its_descendants_do_not_run(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", branch_failure)
    code, result, err = cli_json("run-pipeline", path, *root_args(db, tmp_path), "--run-name", "r",
                                 "--parallelism", "4")
    assert code == 1
    assert {name: task["state"] for name, task in result["tasks"].items()} == {
        "maybe-fail": FAILED, "say": NOT_RUN, "echo-value": COMPLETE, "repeat": COMPLETE, "square": COMPLETE}
    assert result["tasks"]["say"]["execution_id"] is None
    mlmd_run = RunRecords(db, "r")
    assert mlmd_run.task_names() == {"", "maybe-fail", "echo-value", "repeat", "square"}
    assert mlmd_run.one("square").last_known_state == mlmd.Execution.COMPLETE
    assert mlmd_run.root().last_known_state == mlmd.Execution.FAILED


@dsl.pipeline(name="two-sleepers")
def two_sleepers(one: str, two: str):
    sleepy(marker=one)
    sleepy(marker=two)


def test_ctrl_c_stops_every_running_task_and_marks_their_executions_failed(db, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    path = compile_to(tmp_path / "p.yaml", two_sleepers)
    process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, *root_args(db, tmp_path),
                                "--param", f"one={one}", "--param", f"two={two}", "--parallelism", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (one.exists() and two.exists()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert one.exists() and two.exists()  # both run at once
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    store = connect(db)
    assert sorted(e.last_known_state for e in store.get_executions()) == [mlmd.Execution.FAILED] * 3


# == 9. DAG executions record their input and output artifacts ======================================

@dsl.pipeline(name="inner-ds")
def inner_ds(ds: Input[Dataset]) -> Dataset:
    return copy_ds(src=ds).outputs["out"]


@dsl.pipeline(name="dag-artifacts")
def dag_artifacts(flag: bool = True):
    made = make_ds(x=1)
    inner = inner_ds(ds=made.outputs["out"])
    count_chars(data=inner.output)
    with dsl.If(flag == True):  # noqa: E712
        count_chars(data=made.outputs["out"])
    with dsl.ParallelFor([1, 2]) as x:
        each = make_ds(x=x)
    concat(ds=dsl.Collected(each.outputs["out"]))


def test_nested_pipelines_conditions_and_loops_record_artifact_events_on_their_dags(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", dag_artifacts)
    report = run(db, path, tmp_path, run_name="r")
    assert report.succeeded, states(report)
    store = connect(db)
    [made] = report.tasks["make-ds"].output_artifact_ids["out"]
    [copied] = report.tasks["inner-ds/copy-ds"].output_artifact_ids["out"]
    inner = report.tasks["inner-ds"].execution_id
    assert input_ids(store, inner) == {"ds": [made]}
    assert output_ids(store, inner) == {"Output": [copied]}
    assert input_ids(store, report.tasks["count-chars"].execution_id) == {"data": [copied]}
    assert report.tasks["count-chars"].output_parameters["Output"] == len("copy of 1")
    condition = report.tasks["condition-1"].execution_id
    assert input_ids(store, condition) == {"pipelinechannel--make-ds-out": [made]}
    loop = report.tasks["for-loop-3"].execution_id
    each = [report.tasks[f"for-loop-3/{i}/make-ds-2"].output_artifact_ids["out"][0] for i in range(2)]
    loop_outputs = output_ids(store, loop)
    assert set(loop_outputs) == {"pipelinechannel--make-ds-2-out"}
    assert sorted(loop_outputs["pipelinechannel--make-ds-2-out"]) == sorted(each)
    mlmd_run = RunRecords(db, "r")
    assert prop(mlmd_run[inner], "total_dag_tasks") == 1
    assert prop(mlmd_run[condition], "total_dag_tasks") == 1
    assert prop(mlmd_run[inner], "parent_dag_id") == report.dag_execution_id


# == 10. Placeholders, optional inputs, environment, resource limits ================================

@dsl.container_component
def show_placeholders(job_name: str, job_resource_name: str, job_id: str, task_name: str, task_id: str,
                      pipeline_root: str, create_time: str, schedule_time: str, out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image=HOST_IMAGE, command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf "%s\\n" "$@" > "$0"'],
        args=[out, job_name, job_resource_name, job_id, task_name, task_id, pipeline_root, create_time,
              schedule_time])


@dsl.container_component
def print_env(out: dsl.OutputPath(str)):
    return dsl.ContainerSpec(image=HOST_IMAGE,
                             command=["sh", "-c", 'mkdir -p "$(dirname "$0")" && printf %s "$GREETING" > "$0"'],
                             args=[out])


@dsl.pipeline(name="placeholders")
def placeholders(marker: str):
    show_placeholders(job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                      job_resource_name=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
                      job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                      task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                      task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
                      pipeline_root=dsl.PIPELINE_ROOT_PLACEHOLDER,
                      create_time=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
                      schedule_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER)
    optional_input()
    print_env().set_env_variable("GREETING", "hello from set_env_variable")
    limits = slow_limits(marker=marker)
    marker_exists(marker=marker).set_cpu_limit(limits.outputs["cpu"]).set_memory_limit(limits.outputs["memory"])


@pytest.fixture
def placeholder_run(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", placeholders)
    report = run(db, path, tmp_path, params={"marker": str(tmp_path / "limits-done")}, run_name="ph-run",
                 parallelism=4)
    return db, report


def test_placeholders_are_all_resolved(placeholder_run):
    db, report = placeholder_run
    task = report.tasks["show-placeholders"]
    assert task.state == COMPLETE, task.error
    values = task.output_parameters["out"].splitlines()
    assert len(values) == 8
    for name, value in zip(["job_name", "job_resource_name", "job_id", "task_name", "task_id", "pipeline_root",
                            "create_time", "schedule_time"], values):
        assert value and "{{$." not in value, (name, value)
    inputs = prop(RunRecords(db, "ph-run").one("show-placeholders"), "inputs")
    assert "{{$." not in json.dumps(inputs)  # recorded resolved, as KFP's driver resolves them


def test_placeholder_values_are_kfps(placeholder_run, tmp_path):
    db, report = placeholder_run
    (job_name, resource_name, job_id, task_name, task_id, pipeline_root, create_time,
     schedule_time) = report.tasks["show-placeholders"].output_parameters["out"].splitlines()
    assert job_name == "ph-run"  # the run's name
    # KFP's backend: the run's Kubernetes object name, the pipeline's name with generateName's 5 characters
    assert re.fullmatch(r"placeholders-[bcdfghjklmnpqrstvwxz2456789]{5}", resource_name), resource_name
    assert job_id == "ph-run"  # the name of its system.PipelineRun context, as KFP's is the run's ID
    assert task_name == "show-placeholders"  # KFP 2.14+: the IR task key
    assert task_id == str(report.dag_execution_id)  # KFP's driver: the parent DAG's execution ID
    assert str(tmp_path / "root") in pipeline_root
    for value in (create_time, schedule_time):  # KFP 2.17+: RFC 3339, UTC
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


def test_an_unset_optional_input_stays_none(placeholder_run):
    _, report = placeholder_run
    assert report.tasks["optional-input"].state == COMPLETE, report.tasks["optional-input"].error
    assert report.tasks["optional-input"].output_parameters["Output"] == "unset"


def test_set_env_variable_reaches_the_tasks_process(placeholder_run):
    _, report = placeholder_run
    assert report.tasks["print-env"].state == COMPLETE, report.tasks["print-env"].error
    assert report.tasks["print-env"].output_parameters["out"] == "hello from set_env_variable"


def test_an_output_used_only_in_resource_limits_makes_the_consumer_wait_for_its_producer(placeholder_run):
    db, report = placeholder_run
    assert report.tasks["slow-limits"].state == COMPLETE
    assert report.tasks["marker-exists"].state == COMPLETE, report.tasks["marker-exists"].error
    assert report.tasks["marker-exists"].output_parameters["Output"] is True  # it started after the producer ended
    names = list(report.tasks)
    assert names.index("slow-limits") < names.index("marker-exists")
    mlmd_run = RunRecords(db, "ph-run")
    assert (mlmd_run.one("marker-exists").create_time_since_epoch
            >= mlmd_run.one("slow-limits").last_update_time_since_epoch)
