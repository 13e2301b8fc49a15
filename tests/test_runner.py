"""`run-pipeline`: compiled KFP pipelines (compiled here, with the real SDK) run locally with caching,
checked against the MLMD records themselves. One SQLite file per test."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import pytest
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.store import records
from mlmd_cache.environments._pip_shim import first_missing
from mlmd_cache.cli import main
from mlmd_cache.pipeline.spec import PipelineSpecError, UnsupportedPipelineError, load_pipeline
from mlmd_cache.runner import run_pipeline
from tests.backends import BACKENDS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def make_data(n: int, data: Output[Dataset]):
    with open(data.path, "w") as f:
        f.write("x" * n)
    data.metadata["rows"] = n


@dsl.component(base_image=IMAGE)
def train(data: Input[Dataset], lr: float, model: Output[Model]) -> float:
    import os

    if os.environ.get("MLMD_TEST_FAIL_TRAIN"):
        raise RuntimeError("training diverged: " + os.environ["MLMD_TEST_FAIL_TRAIN"])
    with open(data.path) as f:
        rows = len(f.read())
    with open(model.path, "w") as f:
        f.write(f"model of {rows} rows, lr={lr}")
    return lr / 2


@dsl.component(base_image=IMAGE)
def evaluate(model: Input[Model], loss: float, metrics: Output[Metrics]):
    with open(metrics.path, "w") as f:
        f.write(open(model.path).read() + f" loss={loss}")


@dsl.container_component
def announce(message: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[message])


def chain_pipeline(cache_make_data: bool = True, custom_key: Optional[str] = None):
    @dsl.pipeline(name="chain")
    def chain(n: int = 3, lr: float = 0.1):
        a = make_data(n=n)
        a.set_caching_options(cache_make_data)
        b = train(data=a.outputs["data"], lr=lr)
        if custom_key:
            b.set_caching_options(True, cache_key=custom_key)
        c = evaluate(model=b.outputs["model"], loss=b.outputs["Output"])
        announce(message="done").after(c)

    return chain


def compile_to(path: Path, pipeline) -> str:
    compiler.Compiler().compile(pipeline, str(path))
    return str(path)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"


@pytest.fixture(params=["sqlite", "serve-mysql"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    """The scenarios' store: a SQLite file, and `mlmd-cache serve` over MariaDB via grpc:// (as a KFP
    cluster's launchers see MLMD)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"
        return
    with backends.fresh_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def chain_yaml(tmp_path: Path) -> str:
    return compile_to(tmp_path / "chain.yaml", chain_pipeline())


def run(db: str, path: str, tmp_path: Path, *, params: Optional[dict] = None, **options):
    cache = ExecutionCache(connect(db))
    pipeline = load_pipeline(path)
    arguments = pipeline.parse_parameters({k: str(v) for k, v in (params or {}).items()})
    return run_pipeline(cache, pipeline, arguments, pipeline_root=tmp_path / "root", **options)


def states(report) -> dict[str, str]:
    return {name: task.state for name, task in report.tasks.items()}


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def output_ids(store, execution_id: int) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type == mlmd.Event.OUTPUT:
            ids.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
    return ids


def test_second_run_is_all_cached_with_the_first_runs_artifacts(db, chain_yaml, tmp_path):
    first = run(db, chain_yaml, tmp_path, run_name="first")
    assert states(first) == dict.fromkeys(["make-data", "train", "evaluate", "announce"], "COMPLETE")
    assert list(first.tasks) == ["make-data", "train", "evaluate", "announce"]  # dependency order
    second = run(db, chain_yaml, tmp_path, run_name="second")
    assert states(second) == dict.fromkeys(["make-data", "train", "evaluate", "announce"], "CACHED")

    store = connect(db)
    for name, task in second.tasks.items():
        source = first.tasks[name]
        assert task.cached_execution_id == source.execution_id
        assert task.fingerprint == source.fingerprint
        assert output_ids(store, task.execution_id) == output_ids(store, source.execution_id)
    # downstream tasks of the cached run consumed the very artifacts of the first run
    [train_input] = [e for e in store.get_events_by_execution_ids([second.tasks["train"].execution_id])
                     if e.type == mlmd.Event.INPUT]
    assert train_input.path.steps[0].key == "data"
    assert train_input.artifact_id == output_ids(store, first.tasks["make-data"].execution_id)["data"][0]
    # the outputs really were produced, one directory per execution
    metrics = store.get_artifacts_by_id(output_ids(store, first.tasks["evaluate"].execution_id)["metrics"])[0]
    assert Path(metrics.uri).read_text() == "model of 3 rows, lr=0.1 loss=0.05"
    assert Path(metrics.uri).parent == tmp_path / "root" / "first" / "evaluate" / str(first.tasks["evaluate"].execution_id)
    dataset = store.get_artifacts_by_id(output_ids(store, first.tasks["make-data"].execution_id)["data"])[0]
    assert records.read_property(dataset, "rows") == 3


def test_records_are_kfps(db, chain_yaml, tmp_path):
    report = run(db, chain_yaml, tmp_path, run_name="r1", params={"n": 4})
    store = connect(db)
    pipeline_context = store.get_context_by_type_and_name("system.Pipeline", "chain")
    run_context = store.get_context_by_type_and_name("system.PipelineRun", "r1")
    assert [c.id for c in store.get_parent_contexts_by_context(run_context.id)] == [pipeline_context.id]
    executions = store.get_executions_by_context(run_context.id)
    types = {t.id: t.name for t in store.get_execution_types()}
    [dag] = [e for e in executions if types[e.type_id] == "system.DAGExecution"]
    assert dag.id == report.dag_execution_id and dag.last_known_state == mlmd.Execution.COMPLETE
    assert records.read_property(dag, "inputs") == {"n": 4, "lr": 0.1}
    tasks = {records.read_property(e, "task_name"): e for e in executions if e.id != dag.id}
    assert set(tasks) == {"make-data", "train", "evaluate", "announce"}
    for name, execution in tasks.items():
        assert types[execution.type_id] == "system.ContainerExecution"
        assert records.read_property(execution, "parent_dag_id") == dag.id
        assert records.read_property(execution, "cache_fingerprint") == report.tasks[name].fingerprint
    assert records.read_property(tasks["make-data"], "image") == IMAGE
    assert records.read_property(tasks["announce"], "image") == "alpine:3.19"
    assert records.read_property(tasks["train"], "inputs") == {"lr": 0.1}
    assert records.read_property(tasks["train"], "outputs") == {"Output": 0.05}
    artifact_types = {t.id: t.name for t in store.get_artifact_types()}
    by_output = {key: artifact_types[a.type_id] for name in ("make-data", "train", "evaluate")
                 for key, ids in output_ids(store, tasks[name].id).items() for a in store.get_artifacts_by_id(ids)}
    assert by_output == {"data": "system.Dataset", "model": "system.Model", "metrics": "system.Metrics"}
    assert {a.id for a in store.get_artifacts_by_context(run_context.id)} >= {
        i for name in ("make-data", "train") for ids in output_ids(store, tasks[name].id).values() for i in ids}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cached_re_run_records_what_put_execution_records(backend, backends, chain_yaml, tmp_path):
    # On every backend (put_lineage_subgraph upserts what it is given): a re-run's hits are written together (put_lineage_subgraph), not one put_execution each: the
    # records must be the same, attributions of every event's artifact to the run included, and
    # the reused artifacts left as they were.
    with backends.fresh_store(backend, tmp_path / "store") as db:
        _check_cached_re_run_records(db, chain_yaml, tmp_path)


def _check_cached_re_run_records(db: str, chain_yaml: str, tmp_path: Path) -> None:
    run(db, chain_yaml, tmp_path, run_name="r1", params={"n": 4})
    store = connect(db)
    artifacts_before = {a.id: a for a in store.get_artifacts()}
    second = run(db, chain_yaml, tmp_path, run_name="r2", params={"n": 4})
    assert {t.state for t in second.tasks.values()} == {"CACHED"}
    pipeline_context = store.get_context_by_type_and_name("system.Pipeline", "chain")
    run_context = store.get_context_by_type_and_name("system.PipelineRun", "r2")
    in_pipeline = {e.id for e in store.get_executions_by_context(pipeline_context.id)}
    event_artifacts = set()
    for name, task in second.tasks.items():
        assert task.execution_id in in_pipeline
        events = store.get_events_by_execution_ids([task.execution_id])
        source = store.get_events_by_execution_ids([task.cached_execution_id])
        shape = lambda evs: sorted((e.type, e.path.steps[0].key, e.artifact_id) for e in evs)
        assert shape(events) == shape(source), name
        event_artifacts |= {e.artifact_id for e in events}
    assert event_artifacts and {a.id for a in store.get_artifacts_by_context(run_context.id)} == event_artifacts
    assert {a.id: a for a in store.get_artifacts()} == artifacts_before


def test_cache_key_is_the_one_kfps_driver_builds(db, chain_yaml, tmp_path):
    report = run(db, chain_yaml, tmp_path)
    store = connect(db)
    execution = store.get_executions_by_id([report.tasks["train"].execution_id])[0]
    key = records.read_property(execution, records.CACHE_KEY)["cacheKey"]
    pipeline = load_pipeline(chain_yaml)
    container = pipeline.executors["exec-train"].container
    assert key["containerSpec"] == {"image": IMAGE, "cmdArgs": [*container.command, *container.args]}
    assert "{{$}}" in key["containerSpec"]["cmdArgs"]  # unresolved
    assert key["inputArtifactNames"] == {
        "data": {"artifactNames": [str(i) for i in output_ids(store, report.tasks["make-data"].execution_id)["data"]]}}
    assert key["inputParameterValues"] == {"lr": 0.1}
    assert key["outputArtifactsSpec"] == {"model": {"type": {"schemaTitle": "system.Model", "schemaVersion": "0.0.1"}}}
    assert key["outputParametersSpec"] == {"Output": "NUMBER_DOUBLE"}


def test_a_task_with_caching_off_reexecutes_and_its_descendants_miss(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", chain_pipeline(cache_make_data=False))
    first = run(db, path, tmp_path)
    second = run(db, path, tmp_path)
    assert states(second) == {"make-data": "COMPLETE", "train": "COMPLETE", "evaluate": "COMPLETE",
                              "announce": "CACHED"}  # announce has no inputs from them
    assert second.tasks["make-data"].fingerprint is None  # caching off: no fingerprint, as in KFP
    store = connect(db)
    assert output_ids(store, second.tasks["make-data"].execution_id) != output_ids(
        store, first.tasks["make-data"].execution_id)


def test_disable_cache_executes_everything(db, chain_yaml, tmp_path):
    code, _, _ = cli("run-pipeline", chain_yaml, "--db", db, "--pipeline-root", str(tmp_path / "root"))
    assert code == 0
    code, out, err = cli("run-pipeline", chain_yaml, "--db", db, "--pipeline-root", str(tmp_path / "root"),
                         "--disable-cache", "--json", "--run-name", "no-cache")
    assert code == 0, err
    result = json.loads(out)
    assert result["run"] == "no-cache" and result["pipeline"] == "chain"
    assert {t: v["state"] for t, v in result["tasks"].items()} == dict.fromkeys(
        ["make-data", "train", "evaluate", "announce"], "COMPLETE")
    assert all(v["fingerprint"] is None and v["cached_execution_id"] is None for v in result["tasks"].values())


def test_a_run_name_already_in_the_store_is_refused_and_nothing_is_written(db, chain_yaml, tmp_path):
    root = str(tmp_path / "root")
    code, _, err = cli("run-pipeline", chain_yaml, "--db", db, "--pipeline-root", root, "--run-name", "nightly")
    assert code == 0, err
    store = connect(db)
    before = (len(store.get_executions()), len(store.get_artifacts()), len(store.get_contexts()))
    code, out, err = cli("run-pipeline", chain_yaml, "--db", db, "--pipeline-root", root, "--run-name", "nightly")
    assert code == 2 and out == ""
    assert err.strip() == "Error: a pipeline run named 'nightly' is already in the store; a new run needs a new name"
    assert (len(store.get_executions()), len(store.get_artifacts()), len(store.get_contexts())) == before


def test_a_changed_parameter_reruns_that_task_and_its_descendants_only(db, chain_yaml, tmp_path):
    run(db, chain_yaml, tmp_path)
    again = run(db, chain_yaml, tmp_path, params={"lr": 0.2})
    assert states(again) == {"make-data": "CACHED", "train": "COMPLETE", "evaluate": "COMPLETE",
                             "announce": "CACHED"}


def test_a_custom_cache_key_ignores_the_parameters(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", chain_pipeline(custom_key="v1"))
    run(db, path, tmp_path)
    again = run(db, path, tmp_path, params={"lr": 0.2})
    assert states(again)["train"] == "CACHED"


def test_a_failing_task_stops_its_descendants_and_a_rerun_reuses_what_succeeded(db, chain_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv("MLMD_TEST_FAIL_TRAIN", "nan loss")
    code, out, err = cli("run-pipeline", chain_yaml, "--db", db, "--pipeline-root", str(tmp_path / "root"),
                         "--run-name", "broken")
    assert code == 1
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line.startswith(" ")}
    assert lines["make-data"] == "EXECUTED" and lines["train"] == "FAILED"
    assert lines["evaluate"] == "NOT_RUN" and lines["announce"] == "NOT_RUN"
    assert "RuntimeError: training diverged: nan loss" in out  # the stderr tail
    store = connect(db)
    run_context = store.get_context_by_type_and_name("system.PipelineRun", "broken")
    by_task = {records.read_property(e, "task_name"): e.last_known_state
               for e in store.get_executions_by_context(run_context.id)}
    assert by_task == {"": mlmd.Execution.FAILED, "make-data": mlmd.Execution.COMPLETE,
                       "train": mlmd.Execution.FAILED}

    monkeypatch.delenv("MLMD_TEST_FAIL_TRAIN")  # the fix
    fixed = run(db, chain_yaml, tmp_path)
    assert states(fixed) == {"make-data": "CACHED", "train": "COMPLETE", "evaluate": "COMPLETE",
                             "announce": "COMPLETE"}


def test_parameters_are_parsed_by_their_declared_types(chain_yaml, db):
    pipeline = load_pipeline(chain_yaml)
    assert pipeline.parse_parameters({"n": "7", "lr": "0.5"}) == {"n": 7, "lr": 0.5}
    with pytest.raises(PipelineSpecError, match="'n': 'x' is not an integer"):
        pipeline.parse_parameters({"n": "x"})
    code, _, err = cli("run-pipeline", chain_yaml, "--db", db, "--param", "epochs=3")
    assert code == 2 and "no parameter 'epochs'" in err


def test_a_command_missing_on_the_host_is_refused(db, tmp_path):
    @dsl.container_component
    def missing():
        return dsl.ContainerSpec(image="busybox", command=["no-such-program-here"])

    @dsl.pipeline(name="missing")
    def pipeline():
        missing()

    path = compile_to(tmp_path / "p.yaml", pipeline)
    code, _, err = cli("run-pipeline", path, "--db", db, "--pipeline-root", str(tmp_path / "root"))
    assert code == 2 and "'no-such-program-here' does not exist on this host" in err


def test_the_pip_shim_names_the_first_requirement_that_is_missing():
    import kfp

    assert first_missing(["--quiet", "--no-warn-script-location", f"kfp=={kfp.__version__}", "--no-deps",
                          'typing-extensions>=3.7.4,<5; python_version<"3.9"']) is None
    assert first_missing(["--index-url", "https://x/simple", f"kfp=={kfp.__version__}", "kfp==0.0.1"]) == "kfp==0.0.1"
    assert first_missing(["surely-not-an-installed-package-xyz"]) == "surely-not-an-installed-package-xyz"
    assert first_missing(["-r", "requirements.txt"]) == "-r"


@dsl.component(base_image=IMAGE)
def sleepy(marker: str):
    import time

    open(marker, "w").close()
    time.sleep(60)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_marks_the_running_execution_failed(db, tmp_path, sig):
    marker = tmp_path / "started"

    @dsl.pipeline(name="sleepy")
    def pipeline(marker: str):
        sleepy(marker=marker)

    path = compile_to(tmp_path / "p.yaml", pipeline)
    process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", db,
                                "--param", f"marker={marker}", "--pipeline-root", str(tmp_path / "root")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists()
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err
    store = connect(db)
    assert sorted(e.last_known_state for e in store.get_executions()) == [mlmd.Execution.FAILED] * 2


def test_ctrl_c_during_a_loop_stops_every_running_task_and_ends_every_open_execution(db, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()

    @dsl.pipeline(name="sleepy-loop")
    def pipeline(markers: str):
        with dsl.ParallelFor(["a", "b", "c"]) as item:
            with dsl.If(item != "z"):
                sleepy(marker=f"{markers}/{item}")

    path = compile_to(tmp_path / "p.yaml", pipeline)
    process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", db,
                                "--param", f"markers={markers}", "--pipeline-root", str(tmp_path / "root"),
                                "--parallelism", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(list(markers.iterdir())) == 2  # --parallelism 2: two of the three run at once
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    executions = connect(db).get_executions()
    assert not [e for e in executions if e.last_known_state == mlmd.Execution.RUNNING]
    running_tasks = [e for e in executions if records.read_property(e, "task_name") == "sleepy"]
    assert [e.last_known_state for e in running_tasks] == [mlmd.Execution.FAILED] * 2
    assert len(list(markers.iterdir())) == 2  # the third never started


def test_ctrl_c_tells_the_loop_iterations_that_never_opened_as_not_run(sqlite_db, tmp_path):
    """A loop's own parallelism keeps iterations unopened: after Ctrl-C each of them, and its tasks,
    is NOT_RUN, as every other task that never started (they had no line at all)."""
    markers = tmp_path / "markers"
    markers.mkdir()

    @dsl.pipeline(name="one-at-a-time")
    def pipeline(markers: str):
        with dsl.ParallelFor(["a", "b", "c"], parallelism=1) as item:
            sleepy(marker=f"{markers}/{item}")

    path = compile_to(tmp_path / "p.yaml", pipeline)
    process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", sqlite_db,
                                "--param", f"markers={markers}", "--pipeline-root", str(tmp_path / "root"),
                                "--task-env", "host", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(markers.iterdir()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    tasks = {name: task["state"] for name, task in json.loads(out)["tasks"].items()}
    assert tasks == {"for-loop-2/0/sleepy": "FAILED", "for-loop-2/0": "FAILED",
                     "for-loop-2/1/sleepy": "NOT_RUN", "for-loop-2/1": "NOT_RUN",
                     "for-loop-2/2/sleepy": "NOT_RUN", "for-loop-2/2": "NOT_RUN", "for-loop-2": "FAILED"}, tasks
    not_run = [line.split()[0] for line in err.splitlines() if line.split()[1:2] == ["NOT_RUN"]]
    assert not_run == ["for-loop-2/1/sleepy", "for-loop-2/1", "for-loop-2/2/sleepy", "for-loop-2/2"], err


def test_runs_over_every_backend(store_url, chain_yaml, tmp_path):
    """The runner uses only the MLMD API: the same two runs on every store backend."""
    first = run(store_url, chain_yaml, tmp_path, run_name="first")
    second = run(store_url, chain_yaml, tmp_path, run_name="second")
    assert set(states(first).values()) == {"COMPLETE"} and set(states(second).values()) == {"CACHED"}
    store = connect(store_url)
    for name, task in second.tasks.items():
        assert task.cached_execution_id == first.tasks[name].execution_id
        assert output_ids(store, task.execution_id) == output_ids(store, first.tasks[name].execution_id)


def test_the_example_pipeline(tmp_path, sqlite_db):
    example = Path(__file__).resolve().parent.parent / "examples" / "train_pipeline.py"
    subprocess.run([sys.executable, str(example), str(tmp_path / "t.yaml")], check=True, capture_output=True)
    args = ["run-pipeline", str(tmp_path / "t.yaml"), "--db", sqlite_db, "--json"]
    first, second = (json.loads(cli(*args)[1]) for _ in range(2))
    assert {t["state"] for t in first["tasks"].values()} == {"COMPLETE"}
    assert {t["state"] for t in second["tasks"].values()} == {"CACHED"}  # metrics too (metadata only)
    assert (tmp_path / "store" / "pipeline-root" / first["run"]).is_dir()  # default root: beside the store


@dsl.pipeline(name="inner")
def inner_pipeline(n: int, lr: float = 0.1) -> NamedTuple("Outputs", model=Model, loss=float):
    data = make_data(n=n)
    fitted = train(data=data.outputs["data"], lr=lr)
    return NamedTuple("Outputs", model=Model, loss=float)(fitted.outputs["model"], fitted.outputs["Output"])


@dsl.pipeline(name="outer")
def outer_pipeline(n: int = 5):
    fitted = inner_pipeline(n=n)
    evaluate(model=fitted.outputs["model"], loss=fitted.outputs["loss"])


def test_nested_pipelines_run_in_their_own_dag_execution_and_are_cached(db, tmp_path):
    path = compile_to(tmp_path / "p.yaml", outer_pipeline)
    first = run(db, path, tmp_path, run_name="first")
    assert states(first) == {"inner/make-data": "COMPLETE", "inner/train": "COMPLETE",
                             "inner": "COMPLETE", "evaluate": "COMPLETE"}
    second = run(db, path, tmp_path, run_name="second")
    assert states(second) == {"inner/make-data": "CACHED", "inner/train": "CACHED",
                              "inner": "COMPLETE", "evaluate": "CACHED"}
    store = connect(db)
    nested = store.get_executions_by_id([first.tasks["inner"].execution_id])[0]
    types = {t.id: t.name for t in store.get_execution_types()}
    assert types[nested.type_id] == "system.DAGExecution"
    assert records.read_property(nested, "parent_dag_id") == first.dag_execution_id
    assert records.read_property(nested, "task_name") == "inner"
    assert records.read_property(nested, "inputs") == {"n": 5, "lr": 0.1}
    assert records.read_property(nested, "outputs") == {"loss": 0.05}
    inner_train = store.get_executions_by_id([first.tasks["inner/train"].execution_id])[0]
    assert records.read_property(inner_train, "parent_dag_id") == nested.id
    assert records.read_property(inner_train, "task_name") == "train"
    # evaluate consumed the nested pipeline's model: the artifact train produced
    [model_input] = [e.artifact_id for e in store.get_events_by_execution_ids([first.tasks["evaluate"].execution_id])
                     if e.type == mlmd.Event.INPUT]
    assert model_input == output_ids(store, inner_train.id)["model"][0]
    assert (tmp_path / "root" / "first" / "inner" / "train" / str(inner_train.id) / "model").is_file()


def test_an_importer_reuses_the_artifact_of_its_uri_so_downstream_tasks_hit(db, tmp_path):
    source = tmp_path / "rows.txt"
    source.write_text("abcd")

    @dsl.pipeline(name="imported")
    def pipeline(uri: str):
        data = dsl.importer(artifact_uri=uri, artifact_class=Dataset, metadata={"origin": "test"})
        train(data=data.output, lr=0.1)

    path = compile_to(tmp_path / "p.yaml", pipeline)
    first = run(db, path, tmp_path, params={"uri": source})
    second = run(db, path, tmp_path, params={"uri": source})
    assert states(first) == {"importer": "COMPLETE", "train": "COMPLETE"}
    assert states(second) == {"importer": "COMPLETE", "train": "CACHED"}
    assert first.tasks["importer"].output_artifact_ids == second.tasks["importer"].output_artifact_ids
    store = connect(db)
    execution = store.get_executions_by_id([first.tasks["importer"].execution_id])[0]
    assert {t.id: t.name for t in store.get_execution_types()}[execution.type_id] == "system.ImporterExecution"
    [artifact] = store.get_artifacts_by_id(first.tasks["importer"].output_artifact_ids["artifact"])
    assert artifact.uri == str(source) and records.read_property(artifact, "origin") == "test"
    model = store.get_artifacts_by_id(output_ids(store, first.tasks["train"].execution_id)["model"])[0]
    assert Path(model.uri).read_text() == "model of 4 rows, lr=0.1"


def test_a_failure_inside_a_nested_pipeline_fails_it_and_stops_its_dependents(db, tmp_path, monkeypatch):
    path = compile_to(tmp_path / "p.yaml", outer_pipeline)
    monkeypatch.setenv("MLMD_TEST_FAIL_TRAIN", "boom")
    code, out, err = cli("run-pipeline", path, "--db", db, "--json", "--run-name", "r")
    assert code == 1
    tasks = json.loads(out)["tasks"]
    assert {name: task["state"] for name, task in tasks.items()} == {
        "inner/make-data": "COMPLETE", "inner/train": "FAILED", "inner": "FAILED", "evaluate": "NOT_RUN"}
    assert tasks["evaluate"] == {"state": "NOT_RUN", "execution_id": None, "cached_execution_id": None,
                                 "fingerprint": None, "kind": "container", "attempts": 0}
    assert "training diverged: boom" in err  # progress lines, with the stderr tail, go to stderr with --json
    store = connect(db)
    dags = {e.id: e.last_known_state for e in store.get_executions()
            if records.read_property(e, "task_name") in ("", "inner")}
    assert set(dags.values()) == {mlmd.Execution.FAILED} and len(dags) == 2


def test_a_terminal_shows_which_task_is_running(sqlite_db, chain_yaml, tmp_path):
    primary, secondary = os.openpty()  # stderr on a terminal: the live table is drawn there
    try:
        done = subprocess.run([sys.executable, "-m", "mlmd_cache", "run-pipeline", chain_yaml, "--db", sqlite_db,
                               "--pipeline-root", str(tmp_path / "root")],
                              stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=120)
        os.close(secondary)
        drawn = b""
        while chunk := _read_available(primary):
            drawn += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert b"make-data" in drawn and b"evaluate" in drawn and b"tasks done" in drawn
    assert "running" not in done.stdout and "\x1b" not in done.stdout  # the result lines stay clean
    assert done.stdout.startswith("make-data                EXECUTED ")


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        return b""
