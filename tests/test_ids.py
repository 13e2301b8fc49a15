"""Artifact and execution IDs as users write them (``a:6``, ``#6``, ``e:6``, ``6``) in both command
lines, explain of DAG executions and of artifacts, and the lineage of an execution: on the
lineage tests' store (tests/test_lineage.py: five runs of one pipeline) and a nested pipeline's."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Model
from ml_metadata.proto import metadata_store_pb2 as mlmd

from lineage import graph as lg
from lineage import load
from mlmd_cache import ExecutionCache, connect
from mlmd_cache.store import records
from mlmd_cache.cli import main as mlmd_cache_main
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline
from tests.test_lineage import Scenario, cli, evaluate, scenario, train  # noqa: F401 (a fixture)
from tests.test_runner import outer_pipeline  # a nested pipeline: outer runs inner (make-data, train), then evaluate

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice


def number(node: str) -> str:
    return node[2:]


def cache_cli(*args: str):
    result = CliRunner(env={"MLMD_DB": None}).invoke(mlmd_cache_main, list(args))
    return result.exit_code, result.stdout, result.stderr


def only_execution_id(s: Scenario) -> int:
    """An ID that names an execution and no artifact."""
    artifacts = {a.id for a in s.store.get_artifacts()}
    return max(e.id for e in s.store.get_executions() if e.id not in artifacts)


def root_dag(s: Scenario, run: str) -> int:
    context = s.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
    [root] = [e for e in s.store.get_executions_by_context(context.id)
              if records.read_property(e, records.PARENT_DAG_ID) is None]
    return root.id


@pytest.mark.parametrize("form", ["{}", "a:{}", "#{}", "A:{}", "artifact:{}"])
def test_artifact_ids_in_every_form_name_the_artifact(scenario, form):
    s = scenario
    metrics = s.output("run-3", "evaluate")
    code, out, err = cli("upstream", form.format(number(metrics)), "--db", s.db, "--json")
    assert code == 0, err
    assert json.loads(out)["root"] == metrics
    code, out, err = cli("show", form.format(number(metrics)), "--db", s.db)
    assert code == 0, err
    assert out.startswith(f"artifact #{number(metrics)} ")


def test_show_takes_a_kind_and_a_number_or_one_id(scenario):
    s = scenario
    train = s.e("run-3", "train")
    for args in (["execution", number(train)], ["execution", train], [train], [f"execution:{number(train)}"]):
        code, out, err = cli("show", *args, "--db", s.db)
        assert code == 0, (args, err)
        assert out.startswith(f"execution {number(train)} train EXECUTED"), args
    code, out, err = cli("show", "execution", "a:" + number(train), "--db", s.db)
    assert code == 2 and err == (f"Error: show execution a:{number(train)} is an artifact ID: expected an "
                                 f"execution ID ({number(train)} or e:{number(train)})\n")
    code, out, err = cli("show", "artifact", train, "--db", s.db)
    assert code == 2 and "is an execution ID: expected an artifact ID" in err
    code, _, err = cli("show", "execution", "--db", s.db)
    assert code == 2 and "which one?" in err and len(err.splitlines()) == 1


def test_upstream_and_downstream_of_an_execution(scenario):
    s = scenario
    train = s.e("run-3", "train")
    whole = load.load_store(s.store, progress=False)
    code, out, err = cli("upstream", train, "--db", s.db, "--no-cached", "--json")
    assert code == 0, err
    tree = json.loads(out)
    assert tree["root"] == train and tree["tree"]["node"] == train
    assert {n["node"] for n in tree["nodes"]} - {train} == lg.upstream(whole, train, cached=False) == {
        s.output("run-1", "make-data"), s.e("run-1", "make-data")}
    code, out, err = cli("downstream", train, "--db", s.db)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"execution {number(train)} train EXECUTED")
    assert lines[1].startswith(f"└── [model] artifact #{number(s.output('run-3', 'train'))} ")
    assert f"execution {number(s.e('run-3', 'evaluate'))} evaluate EXECUTED" in lines[2]
    code, out, _ = cli("downstream", train, "--db", s.db, "--json")
    assert {n["node"] for n in json.loads(out)["nodes"]} - {train} == lg.downstream(whole, train)


def test_a_plain_number_that_names_only_an_execution_is_that_execution(scenario):
    s = scenario
    execution_id = only_execution_id(scenario)
    code, out, err = cli("upstream", str(execution_id), "--db", s.db, "--json")
    assert code == 0 and err == "", err
    assert json.loads(out)["root"] == f"e:{execution_id}"
    code, out, err = cli("show", str(execution_id), "--db", s.db)
    assert code == 0 and out.startswith(f"execution {execution_id} "), err


def test_an_id_of_the_wrong_kind_is_told_what_it_is(scenario):
    s = scenario
    execution_id = only_execution_id(scenario)
    code, _, err = cli("upstream", f"a:{execution_id}", "--db", s.db)
    assert (code, err) == (2, f"Error: no artifact with ID {execution_id} (execution {execution_id} exists: "
                              f"e:{execution_id})\n")
    code, _, err = cli("show", "artifact", str(execution_id), "--db", s.db)
    assert (code, err) == (2, f"Error: no artifact with ID {execution_id} (execution {execution_id} exists: "
                              f"e:{execution_id})\n")
    missing = max(e.id for e in s.store.get_executions()) + 1
    for command in ("upstream", "downstream", "explain", "show"):
        code, _, err = cli(command, str(missing), "--db", s.db)
        assert (code, err) == (2, f"Error: no artifact or execution with ID {missing}\n"), command
    code, _, err = cli("explain", f"e:{missing}", "--db", s.db)
    assert (code, err) == (2, f"Error: no execution with ID {missing}\n")


def test_explain_of_an_artifact_explains_the_execution_that_made_it(scenario):
    s = scenario
    model = s.output("run-3", "train")
    code, out, err = cli("explain", model, "--db", s.db)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"artifact #{number(model)} was made by execution {number(s.e('run-3', 'train'))}: " \
                       "why it ran or was cached"
    assert lines[1].startswith(f"execution {number(s.e('run-3', 'train'))} (task train, run run-3): EXECUTED")
    assert "parameter lr: 0.1 → 0.2" in out
    code, out, err = cli("explain", "#" + number(model), "--db", s.db, "--json")
    result = json.loads(out)
    assert (result["artifact_id"], result["execution"]["execution_id"], result["outcome"]) == (
        int(number(model)), int(number(s.e("run-3", "train"))), "key changed")
    # run-2 reused the dataset: its CACHED make-data points at it too, but run-1's made it
    code, out, _ = cli("explain", s.output("run-1", "make-data"), "--db", s.db, "--json")
    assert json.loads(out)["execution"]["execution_id"] == int(number(s.e("run-1", "make-data")))


@pytest.mark.parametrize("run, counts", [("run-3", "(1 cached, 2 executed)"), ("run-5", "(3 executed)")])
def test_explain_of_a_runs_root_dag_says_what_it_is(scenario, run, counts):
    s = scenario
    dag = root_dag(s, run)
    code, out, err = cli("explain", str(dag), "--db", s.db)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"execution {dag}: the root DAG execution of run {run} of pipeline lineage-chain: COMPLETE"
    assert "caching was disabled" not in out and "first run" not in out
    assert lines[2] == f"  it holds 3 executions {counts}:"
    tasks = [(line.split()[0], line.split()[1]) for line in lines[3:6]]
    assert tasks == [(number(s.e(run, task)), task) for task in ("make-data", "train", "evaluate")]
    first_executed = "train" if run == "run-3" else "make-data"  # run-3 reused make-data
    assert lines[-1].endswith(f"mlmd-lineage explain {number(s.e(run, first_executed))}")
    code, out, _ = cli("explain", f"e:{dag}", "--db", s.db, "--json")
    result = json.loads(out)
    assert result["outcome"] == "dag" and result["dag"]["root"] and result["dag"]["run"] == run
    assert [t["execution_id"] for t in result["dag"]["tasks"]] == [int(number(s.e(run, t))) for t in
                                                                   ("make-data", "train", "evaluate")]


def test_explain_of_a_nested_pipelines_dag_says_where_it_is(tmp_path):
    db = f"sqlite:///{tmp_path / 'nested.sqlite'}"
    compiler.Compiler().compile(outer_pipeline, str(tmp_path / "outer.yaml"))
    pipeline = load_pipeline(str(tmp_path / "outer.yaml"))
    report = run_pipeline(ExecutionCache(connect(db)), pipeline, pipeline.parse_parameters({}), run_name="nested",
                          pipeline_root=tmp_path / "root")
    inner = report.tasks["inner"].execution_id
    [nested] = connect(db).get_executions_by_id([inner])
    root = records.read_property(nested, records.PARENT_DAG_ID)
    code, out, err = cli("explain", str(inner), "--db", db)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"execution {inner}: the DAG execution of task inner in run nested of pipeline outer, "
                        f"inside DAG execution {root}: COMPLETE")
    assert lines[2] == "  it holds 2 executions (2 executed):"
    assert [line.split()[:2] for line in lines[3:5]] == [
        [str(report.tasks["inner/make-data"].execution_id), "make-data"],
        [str(report.tasks["inner/train"].execution_id), "train"]]
    code, out, _ = cli("explain", str(root), "--db", db)
    assert "the root DAG execution of run nested of pipeline outer" in out
    assert [str(inner), "inner", "DAG", "COMPLETE"] in [line.split() for line in out.splitlines()]  # the sub-DAG
    assert "it holds 2 executions (1 executed):" in out


def dry_run(*args: str) -> dict:
    """What ``invalidate --dry-run ARGS`` would stop (its answer but for when it was asked)."""
    code, out, err = cache_cli("invalidate", *args, "--dry-run", "--json")
    assert code == 0, err
    answer = json.loads(out)
    del answer["invalidated_at"], answer["invalidated_at_utc"]
    return answer


@dsl.pipeline(name="imports")
def importing_pipeline(uri: str):
    data = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
    train(data=data.output, lr=0.1)


def test_explain_of_an_importer_says_it_is_never_cached(tmp_path):
    db = f"sqlite:///{tmp_path / 'imports.sqlite'}"
    (tmp_path / "data.txt").write_text("xyz")
    compiler.Compiler().compile(importing_pipeline, str(tmp_path / "imports.yaml"))
    pipeline = load_pipeline(str(tmp_path / "imports.yaml"))
    report = run_pipeline(ExecutionCache(connect(db)), pipeline,
                          pipeline.parse_parameters({"uri": str(tmp_path / "data.txt")}), run_name="imports",
                          pipeline_root=tmp_path / "root")
    importer = report.tasks["importer"].execution_id
    code, out, err = cli("explain", str(importer), "--db", db)
    assert code == 0, err
    assert out.splitlines()[1] == ("  an importer (dsl.importer): it records an artifact from outside the pipeline, "
                                   "and is never cached")
    assert "caching was disabled" not in out
    assert json.loads(cli("explain", str(importer), "--db", db, "--json")[1])["outcome"] == "importer"
    # an artifact no execution wrote, with an ID no execution has: a plain number names it
    store = connect(db)
    type_id = store.get_artifact_type("system.Dataset").id
    bare = max(store.put_artifacts([mlmd.Artifact(type_id=type_id, uri=f"file:///bare/{i}") for i in range(3)]))
    assert bare not in {e.id for e in store.get_executions()}
    code, _, err = cli("explain", str(bare), "--db", db)
    assert (code, err) == (2, f"Error: artifact #{bare} has no recorded producer: no execution made it to explain\n")


def test_invalidate_takes_ids_of_its_options_kind_only(scenario, tmp_path):
    s = scenario
    source = number(s.e("run-1", "train"))
    plain = dry_run("--execution", source, "--db", s.db)
    assert plain["sources"][0]["execution_id"] == int(source)
    assert dry_run("--execution", f"e:{source}", "--db", s.db) == plain
    model = number(s.output("run-1", "train"))
    plain = dry_run("--artifact", model, "--db", s.db)
    assert plain["artifacts"] == [int(model)]
    for form in ("a:{}", "#{}"):
        assert dry_run("--artifact", form.format(model), "--db", s.db) == plain
    code, _, err = cache_cli("invalidate", "--artifact", f"e:{source}", "--db", s.db)
    assert code == 2 and err.startswith(f"Error: Invalid value for '--artifact': e:{source} is an execution ID: "
                                        f"expected an artifact ID ({source}, a:{source} or #{source})")
    assert len(err.splitlines()) == 1
    code, _, err = cache_cli("invalidate", "--execution", f"#{model}", "--db", s.db)
    assert code == 2 and f"#{model} is an artifact ID: expected an execution ID ({model} or e:{model})" in err


def test_export_and_plan_take_artifact_ids_as_written(scenario, tmp_path):
    s = scenario
    model = number(s.output("run-3", "train"))
    code, _, err = cli("export", "--artifact", f"#{model}", "--depth", "1", "-o", str(tmp_path / "a.json"),
                       "--db", s.db)
    assert code == 0, err
    code, _, err = cli("export", "--artifact", f"e:{model}", "-o", str(tmp_path / "b.json"), "--db", s.db)
    assert code == 2 and "is an execution ID: expected an artifact ID" in err
    compiler.Compiler().compile(input_artifact_pipeline(), str(tmp_path / "p.yaml"))
    code, _, err = cache_cli("plan", str(tmp_path / "p.yaml"), "--artifact", "data=e:1", "--db", s.db)
    assert (code, err.strip()) == (2, "Error: --artifact data=e:1 is an execution ID: expected an artifact ID "
                                      "(1, a:1 or #1)")
    code, out, err = cache_cli("plan", str(tmp_path / "p.yaml"), "--artifact", f"data=#{model}", "--db", s.db,
                               "--json")
    assert code == 0, err


def input_artifact_pipeline():
    """A pipeline whose input artifact ``data`` feeds evaluate."""
    @dsl.pipeline(name="takes-a-model")
    def takes_a_model(data: Input[Model]):
        evaluate(model=data, loss=0.5)

    return takes_a_model


def test_python_dash_m_lineage_is_mlmd_lineage(scenario):
    done = subprocess.run([sys.executable, "-m", "lineage", "runs", "--db", scenario.db, "--json"],
                          capture_output=True, text=True, env={**os.environ, "MLMD_DB": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout == cli("runs", "--db", scenario.db, "--json")[1]
    done = subprocess.run([sys.executable, "-m", "lineage", "upstream", "x"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("Error: 'x': not an MLMD ID")
