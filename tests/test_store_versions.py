"""A store written by one end of the stack (ML Metadata 1.17.1 on older glibc, 1.21 on newer) is
read and extended by the other, migrated only when asked; one that this ML Metadata cannot read is
refused in one line, untouched. The stores are committed (tests/data/stores, made by
scripts/make_store_fixture.py on each end): each holds a run of tests/data/stores/params.yaml,
whose tasks have parameter outputs only, so the store alone is the cache."""
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import ml_metadata
import pytest
from click.testing import CliRunner

from lineage.cli import main as lineage_main
from mlmd_cache import ExecutionCache, StoreConnectionError, connect
from mlmd_cache.cli import main
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline

STORES = Path(__file__).resolve().parent / "data" / "stores"
FIXTURES = sorted(STORES.glob("mlmd-*.sqlite"))
WRITTEN_BY_THE_OTHER_END = "written-by-the-other-end"


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        [(version,)] = db.execute("SELECT schema_version FROM MLMDEnv").fetchall()
    return int(version)


@pytest.fixture(scope="module")
def our_schema(tmp_path_factory: pytest.TempPathFactory) -> int:
    """The schema version this ML Metadata writes."""
    path = tmp_path_factory.mktemp("ours") / "new.sqlite"
    connect(f"sqlite:///{path}")
    return schema_version(path)


def test_there_is_a_store_of_this_end() -> None:
    """scripts/make_store_fixture.py was run with the installed ML Metadata, and its store committed."""
    assert STORES / f"mlmd-{ml_metadata.__version__}.sqlite" in FIXTURES


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
def test_a_store_of_either_end_is_extended_or_refused_in_one_line(fixture: Path, our_schema: int,
                                                                   tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    shutil.copyfile(fixture, store)
    url = f"sqlite:///{store}"
    theirs = schema_version(store)
    if theirs > our_schema:  # written by a newer ML Metadata than this one
        before = hashlib.sha256(store.read_bytes()).hexdigest()
        result = CliRunner().invoke(main, ["stats", "--db", url])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before
        return
    if theirs < our_schema:  # older: migrated only when asked
        with pytest.raises(StoreConnectionError, match="upgrade"):
            connect(url)
        assert schema_version(store) == theirs
        connect(url, upgrade=True)
        assert schema_version(store) == our_schema
    cache = ExecutionCache(connect(url))
    [earlier] = [context for context in cache.store.get_contexts() if context.name == WRITTEN_BY_THE_OTHER_END]
    sources = {execution.id for execution in cache.store.get_executions_by_context(earlier.id)}
    report = run_pipeline(cache, load_pipeline(str(STORES / "params.yaml")), run_name="this-end",
                          pipeline_root=tmp_path / "root")
    tasks = [task for task in report.tasks.values() if task.kind == "container"]
    assert tasks and {task.state for task in tasks} == {"CACHED"}
    assert {task.cached_execution_id for task in tasks} <= sources
    assert report.output_parameters == {"Output": 25}
    listed = CliRunner().invoke(lineage_main, ["runs", "--db", url, "--json"])
    assert listed.exit_code == 0, listed.stderr
    assert {(run["run"], run["executed"], run["cached"]) for run in json.loads(listed.stdout)["runs"]} == {
        (WRITTEN_BY_THE_OTHER_END, 2, 0), ("this-end", 0, 2)}
