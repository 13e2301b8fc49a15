"""`mlmd-cache stats`: exact numbers on a store built by running real pipelines: the chain twice (the
second run all cached), once with a changed parameter, once with caching off, and another pipeline."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import datetime
import json
import time
from pathlib import Path

import pytest
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect
from mlmd_cache.cache.stats import INVALIDATION_CONTEXT_TYPE, cache_stats
from tests.pipelines import cli, compile_to, run
from tests.test_plan import gated, snapshot
from tests.test_runner import chain_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """The store, and the runs' reports by name."""
    tmp_path = tmp_path_factory.mktemp("stats")
    db = f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"
    chain = compile_to(tmp_path / "chain.yaml", chain_pipeline())
    reports = {"r1": run(db, chain, tmp_path, run_name="r1"),
               "r2": run(db, chain, tmp_path, run_name="r2"),
               "r3": run(db, chain, tmp_path, params={"lr": 0.2}, run_name="r3"),
               "r4": run(db, chain, tmp_path, run_name="r4", enable_caching=False),
               "g1": run(db, compile_to(tmp_path / "gated.yaml", gated), tmp_path, params={"n": 3}, run_name="g1")}
    return db, reports


def durations(db: str, execution_ids) -> float:
    """The summed durations (last update - creation) of executions, in seconds, as recorded."""
    executions = {e.id: e for e in connect(db, read_only=True).get_executions_by_id(sorted(set(execution_ids)))}
    return sum(executions[i].last_update_time_since_epoch - executions[i].create_time_since_epoch
               for i in execution_ids) / 1000.0


def test_counts_hit_rate_time_saved_and_the_tasks_that_miss_most(store):
    db, reports = store
    stats = cache_stats(connect(db, read_only=True), pipeline="chain")
    # r1: 4 ran; r2: 4 cached; r3: make-data and announce cached, train and evaluate ran; r4: 4 ran, caching off
    assert (stats.executed, stats.caching_off, stats.misses, stats.cached) == (10, 4, 6, 6)
    assert stats.hit_rate == 0.5
    sources = [task.cached_execution_id for name in ("r2", "r3") for task in reports[name].tasks.values()
               if task.state == "CACHED"]
    assert len(sources) == 6 and set(sources) <= {task.execution_id for task in reports["r1"].tasks.values()}
    assert stats.time_saved_seconds == pytest.approx(durations(db, sources), abs=1e-9)
    assert stats.time_saved_seconds > 0
    assert [(t.task, t.misses) for t in stats.top_misses] == [("evaluate", 2), ("train", 2), ("announce", 1),
                                                             ("make-data", 1)]
    assert stats.invalidated_sources == 0


def test_every_pipeline_or_one(store):
    db, _ = store
    everything = cache_stats(connect(db, read_only=True), top=2)
    assert everything.pipelines == 2
    # gated with n=3: make-ds and copy-ds ran (the other branch was skipped: no execution of a task)
    assert (everything.executed, everything.misses, everything.cached) == (12, 8, 6)
    assert [(t.pipeline, t.task, t.misses) for t in everything.top_misses] == [("chain", "evaluate", 2),
                                                                               ("chain", "train", 2)]
    gated_only = cache_stats(connect(db, read_only=True), pipeline="gated")
    assert (gated_only.executed, gated_only.cached, gated_only.hit_rate) == (2, 0, 0.0)


def test_since_counts_only_what_was_created_within_it(store):
    db, _ = store
    read = connect(db, read_only=True)
    assert cache_stats(read, pipeline="chain", since=datetime.timedelta(days=1)).executed == 10
    later = cache_stats(read, pipeline="chain", since=datetime.timedelta(days=1), now=time.time() + 2 * 86400)
    assert (later.executed, later.cached, later.hit_rate, later.time_saved_seconds) == (0, 0, None, 0.0)


def test_invalidated_sources_are_the_executions_of_invalidations_not_undone(store, tmp_path):
    db, reports = store
    # a copy of the store, so that the other tests see it as built
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(Path(db[len("sqlite:///"):]).read_bytes())
    writer = connect(f"sqlite:///{copy}")
    type_id = writer.put_context_type(mlmd.ContextType(name=INVALIDATION_CONTEXT_TYPE), can_omit_fields=True)
    live, undone = mlmd.Context(type_id=type_id, name="i1"), mlmd.Context(type_id=type_id, name="i2")
    undone.custom_properties["undone"].bool_value = True
    live.id, undone.id = writer.put_contexts([live, undone])
    r1 = reports["r1"].tasks
    writer.put_attributions_and_associations([], [
        mlmd.Association(context_id=live.id, execution_id=r1["train"].execution_id),
        mlmd.Association(context_id=live.id, execution_id=r1["evaluate"].execution_id),
        mlmd.Association(context_id=undone.id, execution_id=r1["make-data"].execution_id)])
    assert cache_stats(connect(f"sqlite:///{copy}", read_only=True)).invalidated_sources == 2
    assert cache_stats(connect(f"sqlite:///{copy}", read_only=True), pipeline="gated").invalidated_sources == 0


def test_the_command_text_and_json_and_nothing_written(store):
    db, _ = store
    before = snapshot(db)
    code, out, err = cli("stats", "--db", db, "--pipeline", "chain")
    assert code == 0, err
    assert out.splitlines() == [
        "pipeline chain:",
        "  executed      10 (4 with caching off)",
        "  cached        6",
        "  hit rate      50.0% (6 of 12 lookups)",
        out.splitlines()[4],
        "  invalidated   0 cache sources",
        "  held keys     0 now",
        "  tasks that miss most:",
        "    evaluate: 2 misses", "    train: 2 misses", "    announce: 1 miss", "    make-data: 1 miss"]
    assert out.splitlines()[4].startswith("  time saved    ")
    code, out, err = cli("stats", "--db", db, "--since", "P7D", "--json", "--top", "1")
    assert code == 0, err
    document = json.loads(out)
    assert {k: document[k] for k in ("executed", "cached", "misses", "caching_off", "hit_rate", "pipelines")} == {
        "executed": 12, "cached": 6, "misses": 8, "caching_off": 4, "hit_rate": 6 / 14, "pipelines": 2}
    assert document["top_misses"] == [{"pipeline": "chain", "task": "evaluate", "misses": 2}]
    assert snapshot(db) == before


@pytest.mark.parametrize("arguments, message", [
    (["--since", "soon"], "--since 'soon': not a duration"),
    (["--pipeline", "nope"], "no pipeline named 'nope' in the store"),
    (["--top", "-1"], "--top"),
])
def test_bad_input_is_one_line(store, arguments, message):
    db, _ = store
    code, out, err = cli("stats", "--db", db, *arguments)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_missing_store_is_one_line_and_is_not_created(tmp_path):
    code, _, err = cli("stats", "--db", f"sqlite:///{tmp_path / 'none' / 'mlmd.sqlite'}")
    assert code != 0 and err.startswith("Error: no MLMD store") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()
