"""Lineage (the `lineage` package and `mlmd-lineage`) on stores written by the runner: a KFP pipeline
compiled here with the real SDK, run five times on one SQLite file."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import doctest
import inspect
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output
from ml_metadata.proto import metadata_store_pb2 as mlmd

import lineage.explain
import lineage.export
import lineage.graph
from lineage import explain as lx
from lineage import export as lexport
from lineage import graph as lg
from lineage import load
from lineage.cli import main
from mlmd_cache import ExecutionCache, connect
from mlmd_cache.errors import NotFoundError
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

TASKS = ("make-data", "train", "evaluate")


@dsl.component(base_image="python:3.11")
def make_data(n: int, data: Output[Dataset]):
    with open(data.path, "w") as f:
        f.write("x" * n)


@dsl.component(base_image="python:3.11")
def train(data: Input[Dataset], lr: float, model: Output[Model]) -> float:
    with open(data.path) as f:
        rows = len(f.read())
    with open(model.path, "w") as f:
        f.write(f"model of {rows} rows, lr={lr}")
    return lr / 2


@dsl.component(base_image="python:3.11")
def evaluate(model: Input[Model], loss: float, metrics: Output[Metrics]):
    with open(metrics.path, "w") as f:
        f.write(open(model.path).read() + f" loss={loss}")


@dsl.pipeline(name="lineage-chain")
def lineage_chain(n: int = 3, lr: float = 0.1):
    a = make_data(n=n)
    b = train(data=a.outputs["data"], lr=lr)
    evaluate(model=b.outputs["model"], loss=b.outputs["Output"])


class Scenario:
    """run-1 executes everything; run-2 is all CACHED; run-3 changes lr (make-data CACHED, train and
    evaluate execute); run-4 changes n (everything executes: train because its dataset is new);
    run-5 runs with caching disabled."""

    def __init__(self, db: str, root: Path) -> None:
        self.db = db
        self.store = connect(db)
        cache = ExecutionCache(self.store)
        pipeline_file = str(root / "chain.yaml")
        compiler.Compiler().compile(lineage_chain, pipeline_file)
        pipeline = load_pipeline(pipeline_file)
        self.reports = {}
        for run, params, options in (("run-1", {}, {}), ("run-2", {}, {}), ("run-3", {"lr": "0.2"}, {}),
                                     ("run-4", {"n": "5", "lr": "0.2"}, {}), ("run-5", {}, {"enable_caching": False})):
            self.reports[run] = run_pipeline(cache, pipeline, pipeline.parse_parameters(params), run_name=run,
                                             pipeline_root=root / "root", **options)

    def e(self, run: str, task: str) -> str:
        return f"e:{self.reports[run].tasks[task].execution_id}"

    def output(self, run: str, task: str) -> str:
        execution_id = self.reports[run].tasks[task].execution_id
        [event] = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type == mlmd.Event.OUTPUT]
        return f"a:{event.artifact_id}"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("lineage")
    return Scenario(f"sqlite:///{root / 'store' / 'mlmd.sqlite'}", root)


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_scenario_ran_as_described(scenario):
    states = {run: {name: task.state for name, task in report.tasks.items()} for run, report in scenario.reports.items()}
    assert states["run-2"] == dict.fromkeys(TASKS, "CACHED")
    assert states["run-3"] == {"make-data": "CACHED", "train": "COMPLETE", "evaluate": "COMPLETE"}
    assert states["run-4"] == states["run-5"] == states["run-1"] == dict.fromkeys(TASKS, "COMPLETE")


def test_lineage_doctests():
    for module in (lineage.graph, lineage.explain, lineage.export):
        failed, attempted = doctest.testmod(module)
        assert attempted and not failed, module.__name__


def test_upstream_closure_equals_the_expected_set(scenario):
    s = scenario
    metrics = s.output("run-3", "evaluate")
    # run-3's metrics come from its own evaluate and train, on run-1's dataset: made by run-1's
    # make-data and recorded as reused by the CACHED make-data of run-2 and run-3
    expected = {s.e("run-3", "evaluate"), s.output("run-3", "train"), s.e("run-3", "train"), s.output("run-1", "make-data"),
                s.e("run-1", "make-data"), s.e("run-2", "make-data"), s.e("run-3", "make-data")}
    whole = load.load_store(s.store, progress=False)
    assert lg.upstream(whole, metrics) == expected
    sub = load.load_subgraph(s.store, [metrics], hops=10, direction="upstream")
    assert set(sub) == expected | {metrics}
    assert lg.upstream(sub, metrics) == expected
    producers = expected - {s.e("run-2", "make-data"), s.e("run-3", "make-data")}
    assert lg.upstream(whole, metrics, cached=False) == producers  # what made it, not what reused it
    assert set(load.load_subgraph(s.store, [metrics], hops=10, direction="upstream", cached=False)) == producers | {metrics}
    assert lg.upstream(whole, metrics, depth=2) == {s.e("run-3", "evaluate"), s.output("run-3", "train")}
    assert set(load.load_subgraph(s.store, [metrics], hops=2, direction="upstream")) == {
        metrics, s.e("run-3", "evaluate"), s.output("run-3", "train")}
    assert lg.path(whole, s.output("run-1", "make-data"), metrics) == [
        s.output("run-1", "make-data"), s.e("run-3", "train"), s.output("run-3", "train"), s.e("run-3", "evaluate"), metrics]


def test_downstream_closure_equals_the_expected_set(scenario):
    s = scenario
    dataset = s.output("run-1", "make-data")
    trains = {s.e(run, "train") for run in ("run-1", "run-2", "run-3")}
    evaluates = {s.e(run, "evaluate") for run in ("run-1", "run-2", "run-3")}
    artifacts = {s.output("run-1", "train"), s.output("run-1", "evaluate"), s.output("run-3", "train"),
                 s.output("run-3", "evaluate")}
    whole = load.load_store(s.store, progress=False)
    assert lg.downstream(whole, dataset) == trains | evaluates | artifacts
    sub = load.load_subgraph(s.store, [dataset], hops=10, direction="downstream")
    assert lg.downstream(sub, dataset) == trains | evaluates | artifacts
    assert lg.downstream(whole, dataset, depth=1) == trains


def test_whole_store_holds_every_record_with_its_run(scenario, tmp_path):
    """load_store reads executions run by run: one in no run (written by another tool) is still
    loaded, with no run, and so is what it read and wrote."""
    copy = tmp_path / "outside.sqlite"
    shutil.copy(scenario.db[len("sqlite:///"):], copy)
    store = connect(f"sqlite:///{copy}")
    [dataset] = store.get_artifacts_by_id([int(scenario.output("run-1", "make-data")[2:])])
    execution_type = store.put_execution_type(mlmd.ExecutionType(name="other.Tool"))
    report_type = store.put_artifact_type(mlmd.ArtifactType(name="other.Report"))
    outside = mlmd.Execution(type_id=execution_type, last_known_state=mlmd.Execution.COMPLETE)
    report = mlmd.Artifact(type_id=report_type, uri="file:///report", state=mlmd.Artifact.LIVE)
    [report_id] = store.put_artifacts([report])
    [outside_id] = store.put_executions([outside])
    store.put_events([mlmd.Event(artifact_id=dataset.id, execution_id=outside_id, type=mlmd.Event.INPUT),
                      mlmd.Event(artifact_id=report_id, execution_id=outside_id, type=mlmd.Event.OUTPUT)])

    whole = load.load_store(store, progress=False)
    assert set(whole) == ({f"e:{e.id}" for e in store.get_executions()} | {f"a:{a.id}" for a in store.get_artifacts()})
    events = store.get_events_by_execution_ids([e.id for e in store.get_executions()])
    assert whole.number_of_edges() == len(events)
    assert (whole.nodes[f"e:{outside_id}"]["run"], whole.nodes[f"e:{outside_id}"]["type"]) == (None, "other.Tool")
    assert whole.nodes[f"a:{report_id}"]["run"] is None
    assert lg.upstream(whole, f"a:{report_id}") == {f"e:{outside_id}", scenario.output("run-1", "make-data"),
                                                     scenario.e("run-1", "make-data"), scenario.e("run-2", "make-data"),
                                                     scenario.e("run-3", "make-data")}
    for run in scenario.reports:
        one_run = load.load_run(store, run)
        for node, data in one_run.nodes(data=True):
            assert (whole.nodes[node]["run"], whole.nodes[node]["pipeline" if data["kind"] == "execution" else "kind"]) \
                == (data["run"], data["pipeline" if data["kind"] == "execution" else "kind"]), node


def test_node_attributes(scenario):
    s = scenario
    g = load.load_run(s.store, "run-3")
    train_node = g.nodes[s.e("run-3", "train")]
    assert train_node["kind"] == "execution" and train_node["type"] == "system.ContainerExecution"
    assert (train_node["task_name"], train_node["run"], train_node["state"]) == ("train", "run-3", "COMPLETE")
    assert train_node["pipeline"] == "lineage-chain" and train_node["properties"]["inputs"] == {"lr": 0.2}
    dataset = g.nodes[s.output("run-1", "make-data")]
    assert dataset["kind"] == "artifact" and dataset["type"] == "system.Dataset" and dataset["run"] == "run-1"
    assert dataset["uri"].endswith("/data")
    assert g.get_edge_data(s.output("run-1", "make-data"), s.e("run-3", "train")).keys() == {"data"}


def test_cached_executions_point_at_their_sources(scenario):
    s = scenario
    g = load.load_run(s.store, "run-2")
    executions = lg.run_executions(g, "run-2")
    assert [(e["task"], e["state"]) for e in executions] == [(t, "CACHED") for t in TASKS]
    for task in TASKS:
        node = s.e("run-2", task)
        assert g.nodes[node]["cached_execution_id"] == s.reports["run-1"].tasks[task].execution_id
        assert lg.cache_source(g, node) == s.e("run-1", task)
        # the CACHED execution's output is the source's very artifact
        assert list(g.successors(node)) == [s.output("run-1", task)]
    whole = load.load_store(s.store, progress=False)
    assert lg.cache_provenance(whole, s.e("run-3", "make-data")) == [s.e("run-3", "make-data"), s.e("run-1", "make-data")]
    assert lg.producer(whole, s.output("run-1", "make-data")) == s.e("run-1", "make-data")
    assert [e["state"] for e in lg.run_executions(whole, "run-3")] == ["CACHED", "EXECUTED", "EXECUTED"]


def test_explain_names_the_changed_parameter_and_the_reexecuted_producer(scenario):
    s = scenario
    result = lx.explain(load.load_task_history(s.store, int(s.e("run-3", "train")[2:])))
    assert result["outcome"] == "key changed" and result["full_key_compared"]
    assert result["changes"] == [{"component": "parameter", "name": "lr", "before": 0.1, "after": 0.2}]

    execution_id = int(s.e("run-4", "train")[2:])
    result = lx.explain(load.load_task_history(s.store, execution_id))
    [change] = result["changes"]
    assert (change["component"], change["name"]) == ("input artifact", "data")
    assert change["before"] == [int(s.output("run-1", "make-data")[2:])]
    assert change["after"] == [int(s.output("run-4", "make-data")[2:])]
    [producer] = change["producers"]
    assert producer["execution_id"] == s.reports["run-4"].tasks["make-data"].execution_id
    assert (producer["state"], producer["run"], producer["task"]) == ("EXECUTED", "run-4", "make-data")

    code, out, err = cli("explain", str(execution_id), "--db", s.db)
    assert code == 0, err
    assert (f"input artifact data: #{change['before'][0]} → #{change['after'][0]}" in out
            and "executed rather than cached in run run-4" in out)
    code, out, _ = cli("explain", s.e("run-3", "train")[2:], "--db", s.db)
    assert "parameter lr: 0.1 → 0.2" in out
    code, out, _ = cli("explain", s.e("run-4", "make-data")[2:], "--db", s.db)
    assert "parameter n: 3 → 5" in out


def test_explain_cached_first_and_disabled(scenario):
    s = scenario
    code, out, _ = cli("explain", s.e("run-2", "train")[2:], "--db", s.db, "--json")
    result = json.loads(out)
    assert result["outcome"] == "cached"
    assert result["source"] == {"execution_id": s.reports["run-1"].tasks["train"].execution_id, "task": "train",
                                "run": "run-1", "state": "EXECUTED"}
    code, out, _ = cli("explain", s.e("run-1", "train")[2:], "--db", s.db)
    assert "first run of this task" in out
    code, out, _ = cli("explain", s.e("run-5", "train")[2:], "--db", s.db)
    assert "caching was disabled" in out


def test_cli_runs_show_and_trees(scenario):
    s = scenario
    code, out, err = cli("runs", "--db", s.db)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "PIPELINE", "CREATED", "(UTC)", "EXECUTED", "CACHED", "FAILED", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == ["run-5", "run-4", "run-3", "run-2", "run-1"]
    assert lines[3].split()[-4:-1] == ["2", "1", "0"]  # run-3: 2 executed, 1 cached
    code, out, _ = cli("runs", "--db", s.db, "--json")
    assert {r["run"]: r["cached"] for r in json.loads(out)["runs"]}["run-2"] == 3
    code, out, _ = cli("runs", "--db", s.db, "--limit", "2", "--json")
    assert [(r["run"], r["pipeline"], r["executed"]) for r in json.loads(out)["runs"]] == [
        ("run-5", "lineage-chain", 3), ("run-4", "lineage-chain", 3)]
    code, out, _ = cli("runs", "--db", s.db, "--limit", "150", "--json")  # more than one page of MLMD's list
    assert [r["run"] for r in json.loads(out)["runs"]] == ["run-5", "run-4", "run-3", "run-2", "run-1"]
    code, out, err = cli("runs", "--db", s.db, "-n", "0")
    assert code == 2 and "0 is not in the range x>=1" in err

    code, out, _ = cli("show", "run", "run-3", "--db", s.db, "--json")
    shown = json.loads(out)
    assert [e["state"] for e in shown["executions"]] == ["CACHED", "EXECUTED", "EXECUTED"]
    code, out, _ = cli("show", "artifact", s.output("run-1", "make-data")[2:], "--db", s.db)
    assert code == 0 and "produced by:" in out and "consumed by:" in out
    code, out, _ = cli("show", "execution", s.e("run-2", "train")[2:], "--db", s.db)
    assert code == 0 and f"CACHED (from {s.reports['run-1'].tasks['train'].execution_id})" in out

    metrics = s.output("run-3", "evaluate")
    whole = load.load_store(s.store, progress=False)
    code, out, _ = cli("upstream", metrics[2:], "--db", s.db, "--no-cached", "--json")
    tree = json.loads(out)
    # --no-cached shows what made the artifact: without the CACHED make-data of run-2 and run-3 that reused run-1's dataset
    assert {n["node"] for n in tree["nodes"]} - {metrics} == lg.upstream(whole, metrics, cached=False) == {
        s.e("run-3", "evaluate"), s.output("run-3", "train"), s.e("run-3", "train"), s.output("run-1", "make-data"),
        s.e("run-1", "make-data")}
    code, out, _ = cli("upstream", metrics[2:], "--db", s.db, "--no-cached")
    assert "CACHED" not in out and f"execution {s.e('run-1', 'make-data')[2:]} make-data EXECUTED" in out
    code, out, _ = cli("downstream", s.output("run-1", "make-data")[2:], "--db", s.db, "--no-cached", "--json")
    assert {n["node"] for n in json.loads(out)["nodes"]} == lg.downstream(whole, s.output("run-1", "make-data"),
                                                                         cached=False) | {s.output("run-1", "make-data")}
    code, out, _ = cli("upstream", metrics[2:], "--db", s.db, "--depth", "2")
    assert out.splitlines()[1].startswith("└── [metrics] execution") and len(out.splitlines()) == 3
    code, out, _ = cli("downstream", s.output("run-1", "make-data")[2:], "--db", s.db)
    assert code == 0 and "(shown above)" in out


@pytest.mark.parametrize("args", [("show", "run", "no-such-run"), ("show", "artifact", "9999"),
                                  ("show", "execution", "9999"), ("upstream", "9999"), ("explain", "9999"),
                                  ("show", "artifact", "x")])
def test_unknown_ids_and_names_exit_2(scenario, args):
    code, out, err = cli(*args, "--db", scenario.db)
    assert code == 2 and err.startswith("Error: ") and "Traceback" not in err, (out, err)


def test_export_files_parse_back(scenario, tmp_path):
    s = scenario
    code, _, err = cli("export", "--run", "run-3", "--format", "json", "-o", str(tmp_path / "run.json"), "--db", s.db)
    assert code == 0, err
    g = nx.node_link_graph(json.loads((tmp_path / "run.json").read_text()), edges="edges")
    expected = lg.with_parameter_flow(load.load_run(s.store, "run-3"))  # and train's loss to evaluate
    assert set(g) == set(expected) and g.number_of_edges() == expected.number_of_edges()
    assert g.nodes[s.e("run-3", "make-data")]["cached_execution_id"] == s.reports["run-1"].tasks["make-data"].execution_id

    code, _, err = cli("export", "--artifact", s.output("run-3", "train")[2:], "--depth", "2",
                       "-o", str(tmp_path / "a.graphml"), "--db", s.db)
    assert code == 0, err
    g = nx.read_graphml(tmp_path / "a.graphml", force_multigraph=True)
    assert s.e("run-3", "train") in g and s.e("run-3", "evaluate") in g
    assert json.loads(g.nodes[s.e("run-3", "train")]["properties"])["inputs"] == {"lr": 0.2}

    code, _, err = cli("export", "-o", str(tmp_path / "all.dot"), "--db", s.db)
    assert code == 0, err
    dot_text = (tmp_path / "all.dot").read_text()
    assert dot_text.startswith("digraph lineage {") and "cached from" in dot_text
    dot = shutil.which("dot")
    if dot is None:
        try:
            import pydot
        except ImportError:
            if os.environ.get("CI") == "true":
                pytest.fail("neither Graphviz's dot nor pydot is installed, under CI=true")
            pytest.skip("neither Graphviz's dot nor pydot is installed")
        assert pydot.graph_from_dot_data(dot_text)
    else:
        subprocess.run([dot, "-Tsvg", "-o", os.devnull], input=dot_text.encode(), check=True)


def test_svg_is_drawn(scenario, tmp_path):
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz's dot is missing under CI=true (Debian: apt-get install graphviz)")
        pytest.skip("Graphviz's dot is not installed")
    code, _, err = cli("export", "--run", "run-3", "-o", str(tmp_path / "run.svg"), "--db", scenario.db)
    assert code == 0, err
    svg = ElementTree.parse(tmp_path / "run.svg").getroot()
    assert svg.tag.endswith("svg")
    text = (tmp_path / "run.svg").read_text()
    assert "stroke-dasharray" in text  # the CACHED make-data is drawn dashed
    assert f"cached from {scenario.reports['run-1'].tasks['make-data'].execution_id}" in text


def test_kfp_written_records_degrade_gracefully(scenario, tmp_path):
    """Without our mlmd_cache_key and cached_execution_id (a store KFP wrote): everything loads, and
    explain compares what KFP records."""
    copy = tmp_path / "kfp.sqlite"
    shutil.copy(scenario.db[len("sqlite:///"):], copy)
    store = connect(f"sqlite:///{copy}")
    executions = store.get_executions()
    for execution in executions:
        for name in ("mlmd_cache_key", "cached_execution_id"):
            if name in execution.custom_properties:
                del execution.custom_properties[name]
    store.put_executions(executions)
    whole = load.load_store(store, progress=False)
    assert all("cached_execution_id" not in d for _, d in whole.nodes(data=True))
    result = lx.explain(load.load_task_history(store, int(scenario.e("run-3", "train")[2:])))
    assert result["full_key_compared"] is False
    assert {"component": "parameter", "name": "lr", "before": 0.1, "after": 0.2} in result["changes"]
    result = lx.explain(load.load_task_history(store, int(scenario.e("run-4", "train")[2:])))
    assert [c["producers"][0]["run"] for c in result["changes"] if c["component"] == "input artifact"] == ["run-4"]
    result = lx.explain(load.load_task_history(store, int(scenario.e("run-2", "train")[2:])))
    assert result["outcome"] == "cached" and result["source"] is None
    assert "names no source" in "\n".join(lx.describe(result))
    lexport.write(whole, "graphml", str(tmp_path / "kfp.graphml"))


def test_loader_errors(scenario):
    with pytest.raises(NotFoundError):
        load.load_subgraph(scenario.store, ["a:9999"])
    with pytest.raises(NotFoundError):
        load.load_run(scenario.store, "missing")
    with pytest.raises(NotFoundError):
        lg.upstream(nx.MultiDiGraph(), "a:1")


def test_upstream_and_downstream_default_to_cached_in_python_and_in_the_cli(scenario):
    """lineage.upstream() and `mlmd-lineage upstream` agree (issue 26, item 7): both include the CACHED
    executions by default, and both leave them out when asked (cached=False, --no-cached)."""
    s = scenario
    metrics, dataset = s.output("run-3", "evaluate"), s.output("run-1", "make-data")
    whole = load.load_store(s.store, progress=False)
    for direction, function, node in (("upstream", lg.upstream, metrics), ("downstream", lg.downstream, dataset)):
        assert inspect.signature(function).parameters["cached"].default is True
        for flags, cached in (((), True), (("--cached",), True), (("--no-cached",), False)):
            code, out, err = cli(direction, node, "--db", s.db, "--json", *flags)
            assert code == 0, err
            shown = json.loads(out)
            assert shown["cached"] is cached
            assert {n["node"] for n in shown["nodes"]} - {node} == function(whole, node, cached=cached), (direction, flags)
    code, out, _ = cli("upstream", metrics, "--db", s.db)  # the default text tree shows the reusing executions too
    assert f"execution {s.e('run-2', 'make-data')[2:]} make-data CACHED" in out


@dsl.pipeline(name="lineage-loop")
def lineage_loop(n: int = 3):
    data = make_data(n=n)
    with dsl.ParallelFor([0.1, 0.2]) as lr:
        train(data=data.outputs["data"], lr=lr)


def test_show_run_names_each_loop_iteration_by_its_path(tmp_path):
    """Both iterations' train is KFP's task_name "train": show run lists them by the path run-pipeline
    reports (for-loop-2/0/train), not "train" twice."""
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    compiler.Compiler().compile(lineage_loop, str(tmp_path / "loop.yaml"))
    pipeline = load_pipeline(str(tmp_path / "loop.yaml"))
    report = run_pipeline(ExecutionCache(connect(db)), pipeline, {}, run_name="looped", pipeline_root=tmp_path / "root")
    code, out, err = cli("show", "run", "looped", "--db", db, "--json")
    assert code == 0, err
    tasks = sorted(e["task"] for e in json.loads(out)["executions"])
    assert tasks == sorted(name for name, task in report.tasks.items() if task.kind == "container")
    assert tasks == ["for-loop-2/0/train", "for-loop-2/1/train", "make-data"]
    code, out, err = cli("show", "run", "looped", "--db", db)
    assert code == 0 and "for-loop-2/1/train" in out, out
