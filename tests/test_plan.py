"""`mlmd-cache plan`: what a run would take from the cache, decided without running or writing anything,
checked against the run that follows it, task by task, and against the store's records (unchanged)."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import datetime
import hashlib
import json
from pathlib import Path
from typing import Iterator, List

import pytest
from kfp import dsl

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner.plan import plan_pipeline
from tests.pipelines import cli, compile_to, concat, copy_ds, make_ds, make_list, run, say, square
from tests.test_control_flow import BRANCH_TASK, branches, fan_in
from tests.test_runner import chain_pipeline, outer_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

# What each plan status promises of the run that follows it.
PROMISED = {"hit": "CACHED", "run": "COMPLETE", "skipped": "SKIPPED"}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"


def plan(db: str, path: str, tmp_path: Path, params=None, **options):
    return plan_pipeline(ExecutionCache(connect(db, read_only=True)), load_pipeline(path), dict(params or {}),
                         pipeline_root=tmp_path / "root", **options)


def labels(planned) -> dict:
    return {name: task.label for name, task in planned.tasks.items() if task.kind not in ("dag", "loop", "iteration")}


def assert_agrees(planned, report) -> None:
    """Every task the plan decided ends as the plan said; every task of the run is in the plan, except
    the iterations of a loop whose items the plan could not know."""
    unknown_loops = [name for name, task in planned.tasks.items() if task.kind == "loop" and task.status == "unknown"
                     and not any(other.startswith(name + "/") for other in planned.tasks)]
    assert set(planned.tasks) == {name for name in report.tasks
                                  if not any(name.startswith(loop + "/") for loop in unknown_loops)}
    for name, task in planned.tasks.items():
        if task.kind in ("dag", "loop", "iteration") and task.status != "skipped":
            continue
        if task.status == "unknown":
            continue
        assert report.tasks[name].state == PROMISED[task.status], (name, task, report.tasks[name].state,
                                                                   report.tasks[name].error)
        if task.status == "hit":
            assert report.tasks[name].cached_execution_id == task.source_execution_id, name


def snapshot(db: str) -> tuple:
    """The store's records, counted, and (SQLite) its file's bytes."""
    store = connect(db, read_only=True)
    counts = (len(store.get_executions()), len(store.get_artifacts()), len(store.get_contexts()),
              len(store.get_events_by_execution_ids([e.id for e in store.get_executions()])),
              len(store.get_artifact_types()), len(store.get_execution_types()), len(store.get_context_types()))
    digest = None
    if db.startswith("sqlite:///"):
        digest = hashlib.sha256(Path(db[len("sqlite:///"):]).read_bytes()).hexdigest()
    return counts, digest


def plan_then_run(db: str, path: str, tmp_path: Path, params=None, run_name=None, **options):
    """Plan, check that planning changed nothing (records, bytes, files), run, check they agree."""
    before = snapshot(db)
    root_files = sorted((tmp_path / "root").rglob("*")) if (tmp_path / "root").exists() else []
    planned = plan(db, path, tmp_path, params, **options)
    assert snapshot(db) == before
    assert (sorted((tmp_path / "root").rglob("*")) if (tmp_path / "root").exists() else []) == root_files
    report = run(db, path, tmp_path, params=params, run_name=run_name, **options)
    assert_agrees(planned, report)
    return planned, report


def new_store(db: str) -> None:
    connect(db)  # an empty MLMD store


def test_a_fresh_store_plans_every_task_to_run(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    new_store(db)
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r1")
    assert labels(planned) == {"make-data": "run", "train": "run (upstream runs)", "evaluate": "run (upstream runs)",
                               "announce": "run"}
    assert planned.tasks["make-data"].reason == "no cache source for this key"
    assert planned.tasks["train"].upstream == "make-data"
    assert "'data' will be a new artifact of task 'make-data'" in planned.tasks["train"].reason


def test_a_changed_parameter_runs_its_task_and_descendants_and_the_rest_hits(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    first = run(db, path, tmp_path, run_name="r1")
    planned, second = plan_then_run(db, path, tmp_path, params={"lr": 0.2}, run_name="r2")
    assert labels(planned) == {
        "make-data": f"hit (execution {first.tasks['make-data'].execution_id})", "train": "run",
        "evaluate": "run (upstream runs)",
        # after evaluate only by order (.after): its key is the same, so it hits
        "announce": f"hit (execution {first.tasks['announce'].execution_id})"}
    again, _ = plan_then_run(db, path, tmp_path, params={"lr": 0.2}, run_name="r3")
    assert {task.status for task in again.tasks.values()} == {"hit"}
    assert again.tasks["train"].source_execution_id == second.tasks["train"].execution_id


def test_caching_disabled_for_the_run_and_for_a_task(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline(cache_make_data=False))
    run(db, path, tmp_path, run_name="r1")
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r2", enable_caching=False)
    assert {task.label for task in planned.tasks.values()} == {"run"}
    assert {task.reason for task in planned.tasks.values()} == {"caching is disabled for the run"}
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r3")
    assert labels(planned)["make-data"] == "run"
    assert planned.tasks["make-data"].reason == "caching is disabled for the task"
    assert labels(planned)["train"] == labels(planned)["evaluate"] == "run (upstream runs)"
    assert planned.tasks["announce"].status == "hit"


def test_a_source_that_is_no_longer_valid_is_named_with_why(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    first = run(db, path, tmp_path, run_name="r1")
    source = first.tasks["train"].execution_id
    model = connect(db).get_artifacts_by_id(first.tasks["train"].output_artifact_ids["model"])[0]
    Path(model.uri).unlink()
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r2")
    assert labels(planned)["make-data"].startswith("hit") and labels(planned)["train"] == "run"
    assert planned.tasks["train"].reason == (f"source execution {source} is no valid cache source: output artifact "
                                             f"{model.id}'s file {model.uri} no longer exists")
    assert labels(planned)["evaluate"] == "run (upstream runs)"


def test_max_staleness_is_the_runs_rule(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    run(db, path, tmp_path, run_name="r1")
    tiny = datetime.timedelta(microseconds=1)  # every source is older than that
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r2", task_staleness={"announce": tiny})
    assert labels(planned)["announce"] == "run" and "maximum cache staleness" in planned.tasks["announce"].reason
    assert {labels(planned)[name].split()[0] for name in ("make-data", "train", "evaluate")} == {"hit"}
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r3", max_staleness=tiny)
    assert {task.label for task in planned.tasks.values()} == {"run", "run (upstream runs)"}


def test_keyed_by_content_a_consumer_of_a_task_that_runs_is_unknown_and_digests_are_the_runs_rule(db, tmp_path):
    from tests.test_digests import rows_pipeline

    path = compile_to(tmp_path / "p.yaml", rows_pipeline("early-cutoff", cache_rows=False))
    run(db, path, tmp_path, run_name="r1", key_by_content=True)
    planned, report = plan_then_run(db, path, tmp_path, run_name="r2", key_by_content=True)
    # make-rows runs (caching off for it); its new artifact may hold the same bytes: fit is not guessed
    assert labels(planned) == {"make-rows": "run", "fit": "unknown (depends on task make-rows)",
                               "score": "unknown (depends on task fit)"}
    assert report.tasks["fit"].state == "CACHED"  # it had the same bytes
    # by MLMD ID the new artifact is certainly a new key
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r3")
    assert labels(planned) == {"make-rows": "run", "fit": "run (upstream runs)", "score": "run (upstream runs)"}


@dsl.pipeline(name="gated")
def gated(n: int = 3):
    with dsl.If(n > 2):
        big = make_ds(x=n)
        copy_ds(src=big.outputs["out"])
    with dsl.Else():
        say(message="small")


BIG, SMALL = "condition-branches-1/condition-2", "condition-branches-1/condition-3"


def test_a_condition_on_a_parameter_is_decided_and_its_branches_skipped(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", gated)
    new_store(db)
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 3}, run_name="r1")
    assert labels(planned) == {f"{BIG}/make-ds": "run", f"{BIG}/copy-ds": "run (upstream runs)",
                               f"{SMALL}/say": "skipped"}
    assert planned.tasks[SMALL].status == "skipped"
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 1}, run_name="r2")
    assert labels(planned) == {f"{BIG}/make-ds": "skipped", f"{BIG}/copy-ds": "skipped", f"{SMALL}/say": "run"}
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 3}, run_name="r3")
    assert {labels(planned)[name].split()[0] for name in (f"{BIG}/make-ds", f"{BIG}/copy-ds")} == {"hit"}


def test_a_condition_on_an_output_of_a_task_that_runs_is_unknown_not_guessed(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", branches)
    run(db, path, tmp_path, params={"s": "a"}, run_name="r1")
    # echo-value hits: its output is known, so is the branch taken
    planned, _ = plan_then_run(db, path, tmp_path, params={"s": "a"}, run_name="r2")
    assert labels(planned)[BRANCH_TASK["a"]].startswith("hit")
    assert labels(planned)[BRANCH_TASK["b"]] == labels(planned)[BRANCH_TASK["c"]] == "skipped"
    # echo-value runs: which branch is taken is known only once it has
    planned, report = plan_then_run(db, path, tmp_path, params={"s": "b"}, run_name="r3")
    assert labels(planned)["echo-value"] == "run"
    for name in BRANCH_TASK.values():
        assert labels(planned)[name] == "unknown (depends on task echo-value)"
    assert "condition depends on task 'echo-value'" in planned.tasks[BRANCH_TASK["b"]].reason
    assert report.tasks[BRANCH_TASK["b"]].state == "COMPLETE"


@dsl.pipeline(name="loop-of-datasets")
def loop_of_datasets(xs: List[int] = [1, 2, 3]):
    with dsl.ParallelFor(xs) as x:
        made = make_ds(x=x)
        copied = copy_ds(src=made.outputs["out"])
    concat(ds=dsl.Collected(copied.outputs["out"]))
    say(message="independent")


def test_a_loop_shows_its_iterations_and_a_changed_item_runs_its_iteration_only(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", loop_of_datasets)
    run(db, path, tmp_path, params={"xs": [1, 2, 3]}, run_name="r1")
    planned, _ = plan_then_run(db, path, tmp_path, params={"xs": [1, 5, 3]}, run_name="r2")
    found = labels(planned)
    assert {name: label.split(" (")[0] for name, label in found.items()} == {
        "for-loop-1/0/make-ds": "hit", "for-loop-1/0/copy-ds": "hit",
        "for-loop-1/1/make-ds": "run", "for-loop-1/1/copy-ds": "run",
        "for-loop-1/2/make-ds": "hit", "for-loop-1/2/copy-ds": "hit",
        "concat": "run", "say": "hit"}
    assert found["for-loop-1/1/copy-ds"] == found["concat"] == "run (upstream runs)"
    assert planned.tasks["for-loop-1/1"].status == "run" and planned.tasks["for-loop-1/0"].status == "hit"


def test_a_parameter_output_of_a_task_that_runs_leaves_its_consumers_unknown(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", fan_in)
    run(db, path, tmp_path, params={"xs": [3, 1, 2]}, run_name="r1")
    planned, report = plan_then_run(db, path, tmp_path, params={"xs": [3, 7, 2]}, run_name="r2")
    found = labels(planned)
    assert found["for-loop-1/1/square"] == "run"
    # square's new output may equal its old one: make-ds would then hit; the plan does not guess
    assert found["for-loop-1/1/make-ds"] == "unknown (depends on task for-loop-1/1/square)"
    assert found["join-ints"].startswith("unknown") and found["concat"].startswith("unknown")
    assert found["for-loop-1/0/make-ds"].startswith("hit") and found["say"].startswith("hit")
    assert report.tasks["for-loop-1/1/make-ds"].state == "COMPLETE"


def test_a_loop_over_an_output_of_a_task_that_runs_is_unknown(db, tmp_path):
    @dsl.pipeline(name="upstream-loop")
    def upstream_loop(n: int = 2):
        items = make_list(n=n)
        with dsl.ParallelFor(items.output) as x:
            square(x=x)

    path = compile_to(tmp_path / "p.yaml", upstream_loop)
    run(db, path, tmp_path, params={"n": 2}, run_name="r1")
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 2}, run_name="r2")
    assert set(labels(planned)) == {"make-list", "for-loop-1/0/square", "for-loop-1/1/square"}
    assert {label.split()[0] for label in labels(planned).values()} == {"hit"}
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 3}, run_name="r3")
    assert labels(planned) == {"make-list": "run"}
    assert planned.tasks["for-loop-1"].label == "unknown (depends on task make-list)"


def test_a_nested_pipeline(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", outer_pipeline)
    run(db, path, tmp_path, run_name="r1")
    planned, _ = plan_then_run(db, path, tmp_path, run_name="r2")
    assert {label.split()[0] for label in labels(planned).values()} == {"hit"}
    assert planned.tasks["inner"].status == "hit"
    planned, _ = plan_then_run(db, path, tmp_path, params={"n": 6}, run_name="r3")
    assert labels(planned) == {"inner/make-data": "run", "inner/train": "run (upstream runs)",
                               "evaluate": "run (upstream runs)"}
    assert planned.tasks["inner"].status == "run"


def test_an_importer_of_a_known_uri_keeps_its_consumers_hitting(db, tmp_path):
    from kfp.dsl import Dataset

    from tests.test_runner import train

    source = tmp_path / "rows.txt"
    source.write_text("abcd")

    @dsl.pipeline(name="imported")
    def imported(uri: str):
        data = dsl.importer(artifact_uri=uri, artifact_class=Dataset)
        train(data=data.output, lr=0.1)

    path = compile_to(tmp_path / "p.yaml", imported)
    new_store(db)
    planned, first = plan_then_run(db, path, tmp_path, params={"uri": str(source)}, run_name="r1")
    assert labels(planned) == {"importer": "run", "train": "run (upstream runs)"}
    planned, _ = plan_then_run(db, path, tmp_path, params={"uri": str(source)}, run_name="r2")
    artifact = first.tasks["importer"].output_artifact_ids["artifact"][0]
    assert f"reuses artifact {artifact}" in planned.tasks["importer"].reason
    assert labels(planned)["train"] == f"hit (execution {first.tasks['train'].execution_id})"


# -- the command ------------------------------------------------------------------------------------

def test_the_command_prints_each_task_and_json(db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    first = run(db, path, tmp_path, run_name="r1")
    before = snapshot(db)
    code, out, err = cli("plan", path, "--db", db, "--param", "lr=0.2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["make-data", "hit", "(execution", f"{first.tasks['make-data'].execution_id})"]
    assert lines[1].split()[:2] == ["train", "run"] and "no cache source for this key" in lines[1]
    assert lines[2].split()[:4] == ["evaluate", "run", "(upstream", "runs)"]
    assert lines[-1] == "plan for pipeline chain: 2 hit, 2 run (nothing was run or written)"
    code, out, err = cli("plan", path, "--db", db, "--param", "lr=0.2", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["counts"] == {"hit": 2, "run": 2}
    assert document["tasks"]["evaluate"]["upstream"] == "train"
    code, out, err = cli("plan", path, "--db", db, "--disable-cache", "--json")
    assert {task["status"] for task in json.loads(out)["tasks"].values()} == {"run"}
    assert snapshot(db) == before


@pytest.mark.parametrize("arguments, message", [
    (["--param", "lr=fast"], "parameter 'lr'"),
    (["--param", "nope=1"], "has no parameter 'nope'"),
    (["--artifact", "x=1"], "no input artifact 'x'"),
    (["--run-name", "r1"], "already in the store"),
    (["--task-staleness", "nope=1d"], "has no task 'nope'"),
    (["--max-cache-staleness", "later"], "not a duration"),
])
def test_bad_input_is_one_line(db, tmp_path, arguments, message):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    run(db, path, tmp_path, run_name="r1")
    code, out, err = cli("plan", path, "--db", db, *arguments)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("Error: ") and message in err, err


def test_a_missing_pipeline_file_or_store_is_one_line_and_creates_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'none' / 'mlmd.sqlite'}"
    code, _, err = cli("plan", str(tmp_path / "missing.yaml"), "--db", db)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.yaml" in err
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    code, _, err = cli("plan", path, "--db", db)
    assert code != 0 and len(err.strip().splitlines()) == 1 and err.startswith("Error: no MLMD store"), err
    assert not (tmp_path / "none").exists()


# -- other backends ---------------------------------------------------------------------------------

@pytest.fixture(params=["mysql", "postgresql", "serve-sqlite"])
def server_db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:
        yield url


def test_plan_agrees_with_the_run_on_every_backend(server_db, tmp_path):
    path = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    new_store(server_db)
    planned, _ = plan_then_run(server_db, path, tmp_path, run_name="r1")
    assert {task.status for task in planned.tasks.values()} == {"run"}
    planned, _ = plan_then_run(server_db, path, tmp_path, params={"lr": 0.2}, run_name="r2")
    assert [task.status for task in planned.tasks.values()] == ["hit", "run", "run", "hit"]
