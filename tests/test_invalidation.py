"""`mlmd-cache invalidate`: chosen cache sources stop being reused, with --cascade every source
downstream of them too; --undo, --list, --dry-run, and what `mlmd-lineage explain`/`show` tell.

Pipelines are compiled with the real KFP SDK and run with `run_pipeline`; every record is read back
from MLMD itself. The scenarios run on SQLite, MariaDB, PostgreSQL and `mlmd-cache serve` over
MariaDB (the `db` fixture); the checks of the command line's mistakes on SQLite.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import json
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from kfp import dsl
from kfp.dsl import Dataset

from lineage.cli import main as lineage_main
from mlmd_cache import CacheKey, ExecutionCache, Task, connect
from mlmd_cache.cache import invalidation
from mlmd_cache.store import records
from mlmd_cache.cache.sources import examine_sources
from mlmd_cache.cache.stats import cache_stats
from tests.pipelines import RunRecords, cli, compile_to, consume, copy_ds, count_chars, make_ds, output_ids, produce, prop, run, states

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

COMPLETE, CACHED = "COMPLETE", "CACHED"


@pytest.fixture(params=["sqlite", "mysql", "postgresql", "serve-mysql"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:  # SQLite: a file in a new folder
        yield url


# produce -> copy-ds -> count-chars, and produce -> consume; a side branch make-ds -> count-chars-2
# that depends on nothing of produce's.
@dsl.pipeline(name="inv-branches")
def branches(tag: str = "v1"):
    data = produce(tag=tag)
    copy = copy_ds(src=data.outputs["out"])
    count_chars(data=copy.outputs["out"])
    consume(tag="seen", ds=data.outputs["out"])
    side = make_ds(x=1)
    count_chars(data=side.outputs["out"])


BRANCH_TASKS = ("produce", "copy-ds", "count-chars", "consume", "make-ds", "count-chars-2")


# produce runs every time (caching off) and writes the same bytes: keyed by content, its consumers
# stay CACHED on sources that read another artifact ID.
@dsl.pipeline(name="inv-content")
def rebuilt(tag: str = "v1"):
    data = produce(tag=tag).set_caching_options(False)
    copy = copy_ds(src=data.outputs["out"])
    count_chars(data=copy.outputs["out"])


# A dataset brought in by dsl.importer (reimport=False): every run hands its consumers the same
# artifact ID, so they hit until an invalidation with --cascade says otherwise.
@dsl.pipeline(name="inv-import")
def imported(uri: str):
    data = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
    copy = copy_ds(src=data.output)
    count_chars(data=copy.outputs["out"])
    side = make_ds(x=1)
    count_chars(data=side.outputs["out"])


def invalidate(db: str, *args: str):
    """`mlmd-cache invalidate ... --json`: (exit code, the JSON object, stderr)."""
    code, out, err = cli("invalidate", "--db", db, *args, "--json")
    return code, (json.loads(out) if code == 0 else None), err


def task_states(report) -> dict:
    return {name: state for name, state in states(report).items() if name in BRANCH_TASKS}


def why(db: str, report) -> dict:
    """For an assertion's message: each task's state, and why one that executed missed (`explain`)."""
    found = {}
    for name, task in report.tasks.items():
        found[name] = task.state
        if task.state == COMPLETE and task.execution_id:
            code, out, err = lineage("explain", str(task.execution_id), "--db", db)
            found[name] = (task.state, out.strip().splitlines()[1:] or err)
    return found


def snapshot(db: str) -> tuple:
    """What the store holds, through MLMD: every context, execution and artifact with their
    properties (a dry run must leave it as it is)."""
    store = connect(db)
    return tuple(sorted(str(node) for node in [*store.get_contexts(), *store.get_executions(), *store.get_artifacts()]))


def lineage(*args: str):
    result = CliRunner().invoke(lineage_main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cascade_from_an_artifact_reruns_exactly_what_derives_from_it(db, tmp_path):
    path = compile_to(tmp_path / "branches.yaml", branches)
    first = run(db, path, tmp_path, run_name="r1")
    assert set(task_states(first).values()) == {COMPLETE}, {n: t.error for n, t in first.tasks.items()}
    assert set(task_states(run(db, path, tmp_path, run_name="r2")).values()) == {CACHED}
    r1 = RunRecords(db, "r1")
    copied = output_ids(r1.store, r1.one("copy-ds").id)["out"][0]

    code, result, err = invalidate(db, "--artifact", str(copied), "--cascade", "--reason", "bad labels")
    assert code == 0, err
    # the source of copy-ds (which r2's CACHED copy-ds reused too) is chosen; count-chars is downstream
    assert [(s["execution_id"], s["chosen"]) for s in result["sources"]] == [
        (r1.one("copy-ds").id, True), (r1.one("count-chars").id, False)]
    assert result["count"] == 2 and result["in_force"] and result["target"] == f"artifact {copied}"

    third = run(db, path, tmp_path, run_name="r3")
    assert task_states(third) == {"produce": CACHED, "copy-ds": COMPLETE, "count-chars": COMPLETE,
                                  "consume": CACHED, "make-ds": CACHED, "count-chars-2": CACHED}
    # the next run finds the new sources valid: all of it is taken from the cache again
    assert set(task_states(run(db, path, tmp_path, run_name="r4")).values()) == {CACHED}


def test_keyed_by_content_the_cascade_reaches_the_sources_of_cached_consumers(sqlite_db, tmp_path):
    db = sqlite_db
    path = compile_to(tmp_path / "rebuilt.yaml", rebuilt)
    run(db, path, tmp_path, run_name="r1", key_by_content=True)
    second = run(db, path, tmp_path, run_name="r2", key_by_content=True)
    assert states(second) == {"produce": COMPLETE, "copy-ds": CACHED, "count-chars": CACHED}, why(db, second)
    r1, r2 = RunRecords(db, "r1"), RunRecords(db, "r2")
    rebuilt_data = output_ids(r2.store, r2.one("produce").id)["out"][0]
    assert rebuilt_data not in output_ids(r1.store, r1.one("produce").id)["out"]  # another ID, the same bytes
    # r2's only reader of the new artifact is a CACHED copy-ds: the cascade goes on from its source
    code, result, err = invalidate(db, "--artifact", str(rebuilt_data), "--cascade")
    assert code == 0, err
    # produce ran with caching off: no cache source, so nothing is chosen; everything is downstream
    assert [(s["execution_id"], s["chosen"]) for s in result["sources"]] == [
        (r1.one("copy-ds").id, False), (r1.one("count-chars").id, False)]
    third = run(db, path, tmp_path, run_name="r3", key_by_content=True)
    assert states(third) == {"produce": COMPLETE, "copy-ds": COMPLETE, "count-chars": COMPLETE}, why(db, third)


def test_without_cascade_only_the_chosen_source_stops(db, tmp_path):
    path = compile_to(tmp_path / "branches.yaml", branches)
    first = run(db, path, tmp_path, run_name="r1")
    assert set(task_states(first).values()) == {COMPLETE}, {n: t.error for n, t in first.tasks.items()}
    r1 = RunRecords(db, "r1")
    code, result, err = invalidate(db, "--execution", str(r1.one("count-chars").id))
    assert code == 0, err
    assert [s["execution_id"] for s in result["sources"]] == [r1.one("count-chars").id]
    again = run(db, path, tmp_path, run_name="r2")
    assert task_states(again) == {"produce": CACHED, "copy-ds": CACHED, "count-chars": COMPLETE,
                                  "consume": CACHED, "make-ds": CACHED, "count-chars-2": CACHED}, why(db, again)


def test_an_imported_dataset_stops_its_consumers_only_with_cascade(db, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("labels v1")
    path = compile_to(tmp_path / "imported.yaml", imported)
    params = {"uri": str(data)}
    first = run(db, path, tmp_path, params=params, run_name="r1")
    assert set(states(first).values()) == {COMPLETE}, {n: t.error for n, t in first.tasks.items()}
    r1 = RunRecords(db, "r1")
    [dataset] = output_ids(r1.store, r1.one("importer").id)["artifact"]

    before = snapshot(db)
    code, out, err = cli("invalidate", "--db", db, "--artifact", str(dataset))
    assert code == 0, err
    assert out.startswith(f"nothing to invalidate: artifact {dataset} was made by importer execution "
                          f"{r1.one('importer').id}, which is no cache source; its consumers still hit")
    assert snapshot(db) == before  # nothing recorded
    second = run(db, path, tmp_path, params=params, run_name="r2")
    assert {n: s for n, s in states(second).items() if n != "importer"} == {
        "copy-ds": CACHED, "count-chars": CACHED, "make-ds": CACHED, "count-chars-2": CACHED}, why(db, second)

    code, result, err = invalidate(db, "--artifact", str(dataset), "--cascade", "--reason", "relabelled")
    assert code == 0, err
    assert [(s["task"], s["chosen"]) for s in result["sources"]] == [("copy-ds", False), ("count-chars", False)]
    third = run(db, path, tmp_path, params=params, run_name="r3")
    assert {n: s for n, s in states(third).items() if n != "importer"} == {
        "copy-ds": COMPLETE, "count-chars": COMPLETE, "make-ds": CACHED, "count-chars-2": CACHED}
    r3 = RunRecords(db, "r3")
    assert output_ids(r3.store, r3.one("importer").id)["artifact"] == [dataset]  # the same ID again

    # explain says why copy-ds ran, and by what
    code, out, err = lineage("explain", str(r3.one("copy-ds").id), "--db", db)
    assert code == 0, err
    assert (f"same cache key; its cache source, execution {r1.one('copy-ds').id}, was invalidated by invalidation "
            f"{result['id']} (reason: relabelled) on ") in out
    assert out.rstrip().endswith(f"by cascade from artifact {dataset}")
    code, out, err = lineage("explain", str(r3.one("copy-ds").id), "--db", db, "--json")
    explained = json.loads(out)
    assert explained["outcome"] == "source invalidated" and explained["invalidation"]["id"] == result["id"]
    # show tells the invalidated sources, in a run and alone
    code, out, err = lineage("show", "run", "r1", "--db", db)
    assert code == 0, err
    rows = {line.split()[1]: line for line in out.splitlines()[2:]}
    assert f"EXECUTED (invalidated: {result['id']})" in rows["copy-ds"]
    assert "invalidated" not in rows["make-ds"]
    code, out, err = lineage("show", "execution", str(r1.one("count-chars").id), "--db", db)
    assert f"cache source:      invalidated by invalidation {result['id']} (reason: relabelled)" in out


def test_undo_restores_hits_unless_another_invalidation_covers_them(db, tmp_path):
    path = compile_to(tmp_path / "branches.yaml", branches)
    first = run(db, path, tmp_path, run_name="r1")
    assert set(task_states(first).values()) == {COMPLETE}, {n: t.error for n, t in first.tasks.items()}
    r1 = RunRecords(db, "r1")
    code, whole, err = invalidate(db, "--run", "r1", "--reason", "wrong image")
    assert code == 0, err
    assert sorted(s["execution_id"] for s in whole["sources"]) == sorted(r1.one(t).id for t in BRANCH_TASKS)
    fingerprint = prop(r1.one("make-ds"), records.CACHE_FINGERPRINT)
    code, key, err = invalidate(db, "--pipeline", "inv-branches", "--fingerprint", fingerprint)
    assert code == 0, err
    assert [s["execution_id"] for s in key["sources"]] == [r1.one("make-ds").id]

    assert cache_stats(connect(db)).invalidated_sources == 6  # `mlmd-cache stats` counts them
    code, undone, err = invalidate(db, "--undo", str(whole["id"]))
    assert code == 0, err
    assert undone["undone_at"] and not undone["in_force"]
    assert cache_stats(connect(db)).invalidated_sources == 1
    again = run(db, path, tmp_path, run_name="r2")
    # make-ds is still stopped by the second invalidation; count-chars-2 then reads a new dataset
    assert task_states(again) == {"produce": CACHED, "copy-ds": CACHED, "count-chars": CACHED,
                                  "consume": CACHED, "make-ds": COMPLETE, "count-chars-2": COMPLETE}

    code, listed, err = invalidate(db, "--list")
    assert code == 0, err
    assert [(i["id"], i["target"], i["count"], i["in_force"], i["reason"]) for i in listed["invalidations"]] == [
        (whole["id"], "run r1", 6, False, "wrong image"),
        (key["id"], f"pipeline inv-branches fingerprint {fingerprint}", 1, True, "")]
    code, out, err = cli("invalidate", "--db", db, "--list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "WHEN", "TARGET", "CASCADE", "SOURCES", "STATE", "BY", "REASON"]
    assert "run r1" in lines[1] and "undone" in lines[1] and "wrong image" in lines[1]
    assert "in force" in lines[2]


def test_dry_run_writes_nothing_and_tells_what_would_stop(db, tmp_path):
    path = compile_to(tmp_path / "branches.yaml", branches)
    first = run(db, path, tmp_path, run_name="r1")
    assert set(task_states(first).values()) == {COMPLETE}, {n: t.error for n, t in first.tasks.items()}
    r1 = RunRecords(db, "r1")
    produced = output_ids(r1.store, r1.one("produce").id)["out"][0]
    before = snapshot(db)
    code, out, err = cli("invalidate", "--db", db, "--artifact", str(produced), "--cascade", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == f"dry run (nothing written): artifact {produced} with cascade: would stop 4 cache sources"
    assert sorted(line.split()[1] for line in out.splitlines()[1:]) == sorted(
        str(r1.one(t).id) for t in ("produce", "copy-ds", "count-chars", "consume"))
    code, undo, err = invalidate(db, "--undo", "1", "--dry-run")
    assert code == 2 and "no invalidation with ID 1" in err
    assert snapshot(db) == before
    assert set(task_states(run(db, path, tmp_path, run_name="r2")).values()) == {CACHED}


def test_a_key_never_invalidated_is_looked_up_with_the_same_reads(sqlite_db, tmp_path):
    path = compile_to(tmp_path / "branches.yaml", branches)
    run(sqlite_db, path, tmp_path, run_name="r1")
    store = connect(sqlite_db)
    r1 = RunRecords(sqlite_db, "r1")
    calls: list[str] = []
    original = store._call

    def counting(method_name, *args, **kwargs):
        calls.append(method_name)
        return original(method_name, *args, **kwargs)

    store._call = counting
    side = prop(r1.one("make-ds"), records.CACHE_FINGERPRINT)
    [(candidate, problem)] = list(examine_sources(store, "inv-branches", side))
    assert problem is None
    untouched = list(calls)
    invalidation.invalidate(store, execution=r1.one("produce").id, cascade=True)
    calls.clear()
    assert [p for _, p in examine_sources(store, "inv-branches", side)] == [None]
    assert calls == untouched  # the side branch's key: not one read more
    produced = prop(r1.one("produce"), records.CACHE_FINGERPRINT)
    [(candidate, problem)] = list(examine_sources(store, "inv-branches", produced))
    assert problem.startswith("invalidated by invalidation ") and problem.endswith(f"target execution {r1.one('produce').id}")


def test_targets_name_their_sources_and_mistakes_are_one_line(sqlite_db, tmp_path):
    db = sqlite_db
    path = compile_to(tmp_path / "branches.yaml", branches)
    run(db, path, tmp_path, run_name="r1")
    run(db, path, tmp_path, run_name="r2")
    r1, r2 = RunRecords(db, "r1"), RunRecords(db, "r2")
    before = snapshot(db)
    # a CACHED execution leads to its source; a run's CACHED tasks to theirs
    code, result, err = invalidate(db, "--execution", str(r2.one("consume").id), "--dry-run")
    assert [s["execution_id"] for s in result["sources"]] == [r1.one("consume").id]
    code, result, err = invalidate(db, "--run", "r2", "--dry-run")
    assert sorted(s["execution_id"] for s in result["sources"]) == sorted(r1.one(t).id for t in BRANCH_TASKS)

    def error(*args: str) -> str:
        code, out, err = cli("invalidate", "--db", db, *args)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, (code, out, err)
        return err

    dag = r1.root().id
    assert "is a DAG execution" in error("--execution", str(dag))
    execution = r1.one("produce").id
    assert "give exactly one target" in error()
    assert "give exactly one target" in error("--artifact", "1", "--execution", "2")
    assert "--pipeline and --fingerprint go together" in error("--pipeline", "inv-branches")
    assert "no pipeline named 'nope'" in error("--pipeline", "nope", "--fingerprint", "ab")
    assert "no cache source of fingerprint 'ab'" in error("--pipeline", "inv-branches", "--fingerprint", "ab")
    assert "no pipeline run named 'r9'" in error("--run", "r9")
    assert "no execution with ID 99999" in error("--execution", "99999")
    artifacts = sorted(a.id for a in r1.store.get_artifacts())
    missing = max(artifacts) + 1
    assert f"no artifact with ID {missing}" in error("--artifact", str(missing))
    # an ID of another kind is told as such
    big = max(e.id for e in r1.store.get_executions())
    assert f"(execution {big} exists: use --execution {big})" in error("--artifact", str(big))
    assert "an MLMD ID is a positive integer" in error("--artifact", "0")
    assert "--list takes no target" in error("--list", "--run", "r1")
    assert "no invalidation with ID 5" in error("--undo", "5")
    run_id = r1.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, "r1").id
    assert f"no invalidation with ID {run_id} ({run_id} is a system.PipelineRun context)" in error("--undo", str(run_id))
    assert snapshot(db) == before  # nothing written by any of it

    code, result, err = invalidate(db, "--execution", str(execution))
    assert code == 0, err
    assert invalidate(db, "--undo", str(result["id"]))[0] == 0
    assert f"invalidation {result['id']} was already undone on " in error("--undo", str(result["id"]))
    code, out, err = cli("invalidate", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}", "--run", "r1")
    assert code == 1 and len(err.splitlines()) == 1 and not (tmp_path / "none.sqlite").exists()


def test_a_new_source_of_an_invalidated_key_leaves_the_invalidation_in_force(sqlite_db):
    cache = ExecutionCache(connect(sqlite_db))
    task = Task("hello", CacheKey.build(image="python:3.11", command=["true"]))
    first = cache.execute(cache.pipeline_run("demo", "run-1"), task, lambda started: None)
    done = invalidation.invalidate(cache.store, execution=first.id, reason="flaky disk")
    second = cache.execute(cache.pipeline_run("demo", "run-2"), task, lambda started: None)
    assert second.state == "COMPLETE"  # publishing into the key's CacheSource context keeps its flags
    assert [(c.execution.id, p) for c, p in examine_sources(cache.store, "demo", task.fingerprint)] == [
        (second.id, None), (first.id, f"invalidated by invalidation {done.id} (reason: flaky disk) on "
                                      f"{invalidation.utc_text(done.invalidated_at)}, target execution {first.id}")]
    invalidation.undo(cache.store, done.id)
    assert [p for _, p in examine_sources(cache.store, "demo", task.fingerprint)] == [None, None]
    assert cache.execute(cache.pipeline_run("demo", "run-3"), task, lambda started: None).state == "CACHED"
