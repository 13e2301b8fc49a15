"""Max cache staleness (issue 11, item 2): a source older than the limit is not reused, per run and
per task, through the library and ``run-pipeline``, and ``explain`` says why.

Ages are made real by waiting a little longer than a tiny limit (the only way: MLMD sets an
execution's create time itself); the hits use a limit far above any wait."""
import datetime
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from kfp import dsl

from lineage.cli import main as lineage_main
from mlmd_cache import CacheKey, ExecutionCache, InvalidArgumentError, Outputs, Task, connect
from mlmd_cache.store import records
from mlmd_cache.durations import parse_duration
from mlmd_cache.pipeline.spec import parse_task_durations
from tests.pipelines import cli_json, compile_to, copy_ds, make_ds, run, states

TINY = datetime.timedelta(seconds=0.5)
WAIT = 1.2  # comfortably longer than TINY


@pytest.fixture(params=["sqlite", "mysql", "postgresql", "serve-sqlite"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:
        yield url


def _task(name: str = "t", staleness=None) -> Task:
    return Task(name, CacheKey.build(image="python:3.11", command=["true"], output_parameters={"x": "STRING"}),
                max_staleness=staleness)


def test_a_source_older_than_the_runs_limit_is_not_reused_and_the_reason_is_recorded(db: str) -> None:
    cache = ExecutionCache(connect(db))
    first = cache.execute(cache.pipeline_run("p", "r1"), _task(), lambda s: Outputs(parameters={"x": "1"}))
    assert cache.execute(cache.pipeline_run("p", "r2", max_staleness=datetime.timedelta(hours=1)), _task(),
                         lambda s: Outputs(parameters={"x": "2"})).state == "CACHED"
    time.sleep(WAIT)
    stale = cache.execute(cache.pipeline_run("p", "r3", max_staleness=TINY), _task(),
                          lambda s: Outputs(parameters={"x": "3"}))
    assert stale.state == "COMPLETE"
    reason = records.read_property(stale.execution, records.MISS_REASON)
    assert reason.startswith(f"source execution {first.id} is ") and "maximum cache staleness of 0.5s" in reason
    # without a limit the newest valid source is reused again
    again = cache.execute(cache.pipeline_run("p", "r4"), _task(), lambda s: None)
    assert again.state == "CACHED" and again.cached_execution_id == stale.id


def test_an_older_source_is_passed_over_for_a_newer_one_within_the_limit(tmp_path: Path) -> None:
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    cache.execute(cache.pipeline_run("p", "r1", enable_caching=False), _task(), lambda s: Outputs(parameters={"x": "a"}))
    old = cache.execute(cache.pipeline_run("p", "r2"), _task(), lambda s: Outputs(parameters={"x": "b"}))
    time.sleep(WAIT)
    limit = datetime.timedelta(seconds=WAIT / 2)
    newer = cache.execute(cache.pipeline_run("p", "r3", max_staleness=limit), _task(),
                          lambda s: Outputs(parameters={"x": "c"}))
    assert newer.state == "COMPLETE" and old.id != newer.id
    hit = cache.execute(cache.pipeline_run("p", "r4", max_staleness=limit), _task(), lambda s: None)
    assert hit.cached_execution_id == newer.id and hit.output_parameters == {"x": "c"}


def test_a_tasks_own_limit_overrides_the_runs(tmp_path: Path) -> None:
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    cache.execute(cache.pipeline_run("p", "r1"), _task(), lambda s: Outputs(parameters={"x": "1"}))
    time.sleep(WAIT)
    lenient = cache.execute(cache.pipeline_run("p", "r2", max_staleness=TINY), _task(staleness=datetime.timedelta(days=1)),
                            lambda s: Outputs(parameters={"x": "2"}))
    assert lenient.state == "CACHED"
    strict = cache.execute(cache.pipeline_run("p", "r3", max_staleness=datetime.timedelta(days=1)), _task(staleness=TINY),
                           lambda s: Outputs(parameters={"x": "3"}))
    assert strict.state == "COMPLETE"


@dsl.pipeline(name="stale-chain")
def stale_chain(x: int = 3):
    made = make_ds(x=x)
    copy_ds(src=made.outputs["out"])


def test_run_pipeline_staleness_per_run_and_per_task_and_explain_says_why(tmp_path: Path) -> None:
    path = compile_to(tmp_path / "chain.yaml", stale_chain)
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    root = str(tmp_path / "root")
    code, out, _ = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", root, "--run-name", "r1")
    assert code == 0
    code, out, _ = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", root, "--run-name", "r2",
                            "--max-cache-staleness", "P7D")
    assert code == 0 and {t["state"] for t in out["tasks"].values() if t["kind"] == "container"} == {"CACHED"}
    time.sleep(WAIT)
    # only copy-ds is held to a tiny limit: make-ds still hits, copy-ds re-executes
    code, out, _ = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", root, "--run-name", "r3",
                            "--max-cache-staleness", "7d", "--task-staleness", "copy-ds=0.5s")
    assert code == 0
    assert out["tasks"]["make-ds"]["state"] == "CACHED" and out["tasks"]["copy-ds"]["state"] == "COMPLETE"
    # a run-wide tiny limit: the producer re-executes, so its consumer's input is new and it misses too
    code, out, _ = cli_json("run-pipeline", path, "--db", db, "--pipeline-root", root, "--run-name", "r4",
                            "--max-cache-staleness", "PT0.5S")
    assert code == 0 and out["tasks"]["make-ds"]["state"] == "COMPLETE"
    result = CliRunner().invoke(lineage_main, ["explain", str(out["tasks"]["make-ds"]["execution_id"]), "--db", db])
    assert result.exit_code == 0, result.output
    assert "older than the maximum cache staleness of 0.5s" in result.stdout


@pytest.mark.parametrize("options, message", [
    (["--max-cache-staleness", "soon"], "--max-cache-staleness 'soon': not a duration"),
    (["--task-staleness", "copy-ds"], "expected NAME=VALUE"),
    (["--task-staleness", "nope=1h"], "has no task 'nope'"),
    (["--task-staleness", "copy-ds=1h", "--task-staleness", "copy-ds=2h"], "given twice"),
])
def test_bad_staleness_options_are_one_line_and_write_nothing(tmp_path: Path, options, message) -> None:
    path = compile_to(tmp_path / "chain.yaml", stale_chain)
    store = tmp_path / "mlmd.sqlite"
    result = CliRunner().invoke(__import__("mlmd_cache.cli", fromlist=["main"]).main,
                                ["run-pipeline", path, "--db", f"sqlite:///{store}", *options])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not store.exists()


def test_durations_read_kfp_v1_iso_and_short_forms() -> None:
    assert parse_duration("P7D") == parse_duration("7d") == datetime.timedelta(days=7)
    assert parse_duration("PT12H") == parse_duration("12h")
    assert parse_task_durations(["a=1h", "b/c=P1D"], "x") == {"a": datetime.timedelta(hours=1),
                                                              "b/c": datetime.timedelta(days=1)}
    with pytest.raises(InvalidArgumentError):
        parse_duration("-1d")


def test_run_pipeline_library_refuses_an_unknown_task_before_writing(tmp_path: Path) -> None:
    path = compile_to(tmp_path / "chain.yaml", stale_chain)
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    with pytest.raises(InvalidArgumentError, match="has no task 'train'"):
        run(db, path, tmp_path, task_staleness={"train": datetime.timedelta(hours=1)})
    assert ExecutionCache(connect(db)).pipeline_names() == []
    report = run(db, path, tmp_path, task_staleness={"copy-ds": datetime.timedelta(hours=1)})
    assert set(states(report).values()) >= {"COMPLETE"}
