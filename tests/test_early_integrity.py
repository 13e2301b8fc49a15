"""The SQLite store's quick check begun early (mlmd_cache.store.schema.integrity_checked_early, what
run-pipeline starts before its imports): the runner takes its result for the very file it opened, once;
a check left untaken when its block ends is dropped, so that a later run checks the file as it is
then; and run-pipeline still refuses a corrupt store before writing anything (a real store, no mocks;
tests/test_store_faults.py corrupts one mid-file through the CLI)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlmd_cache import connect
from mlmd_cache.store import schema
from mlmd_cache.connection import check_integrity
from mlmd_cache.errors import StoreConnectionError


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    connect(f"sqlite:///{path}")  # MLMD's schema, as a run makes it
    return path


def corrupt(path: Path) -> None:
    """Overwrite the root page of one of MLMD's indexes with garbage: quick_check reports it."""
    with sqlite3.connect(path) as db:
        page, size = db.execute("SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
                                "WHERE name = 'idx_event_execution_id'").fetchone()
    db.close()
    with open(path, "r+b") as file:
        file.seek((page - 1) * size)
        file.write(bytes([0xAB]) * size)


def test_the_check_begun_early_is_the_one_taken_once_for_that_file(store_file: Path, monkeypatch) -> None:
    store = connect(f"sqlite:///{store_file}")
    checked = []
    real = schema.sqlite_integrity
    monkeypatch.setattr(schema, "sqlite_integrity", lambda path, *a: checked.append(path) or real(path, *a))
    monkeypatch.chdir(store_file.parent)
    with schema.integrity_checked_early("sqlite:///store.sqlite"):  # relative: the same file
        assert list(schema._EARLY) == [str(store_file)]
        check_integrity(store)
        assert checked == [str(store_file)] and schema._EARLY == {}  # the early one, taken
        check_integrity(store)  # taken once: the next check reads the file again
        assert checked == [str(store_file)] * 2
    assert schema._EARLY == {}


def test_a_corrupt_store_found_early_is_refused_where_the_run_checks(store_file: Path) -> None:
    store = connect(f"sqlite:///{store_file}")
    corrupt(store_file)
    with schema.integrity_checked_early(f"sqlite:///{store_file}"):
        with pytest.raises(StoreConnectionError, match="is corrupt .*nothing was written"):
            check_integrity(store)


def test_a_check_not_taken_is_dropped_with_its_block(store_file: Path) -> None:
    store = connect(f"sqlite:///{store_file}")
    with schema.integrity_checked_early(f"sqlite:///{store_file}"):  # found sound; the command then failed
        schema._EARLY[str(store_file)].thread.join()
    assert schema._EARLY == {}
    corrupt(store_file)  # the file changed since: a later run must not trust the earlier check
    with pytest.raises(StoreConnectionError, match="is corrupt"):
        check_integrity(store)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "mysql://u:p@localhost:3306/db", "grpc://localhost:8080",
                                 "sqlite://host/x.sqlite", "sqlite:///x.sqlite?mode=ro", "not a url", ""])
def test_no_early_check_for_what_is_not_a_sqlite_file(url: str) -> None:
    with schema.integrity_checked_early(url):
        assert schema._EARLY == {}


def test_a_missing_file_begun_early_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "new" / "store.sqlite"
    with schema.integrity_checked_early(f"sqlite:///{path}"):
        store = connect(f"sqlite:///{path}")  # made after the check began, which found no file
        check_integrity(store)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
