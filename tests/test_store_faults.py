"""Store faults that used to hide their cause or brick a store (issue 23, items 5, 9 and 10).

* ``kill -9`` of a first command while MLMD creates its schema in a new MariaDB database: MySQL
  commits each ``CREATE TABLE``, so the kill leaves some of MLMD's tables and no schema version. Every
  later command must still work (the half-made, empty schema is made anew under the creation lock);
  one that holds rows is refused with the statement that clears it.
* Disk full, read-only and corrupt stores, and a task that fails because the disk under the pipeline
  root is full: one plain sentence naming the cause and the path, never MLMD's SQL; a corrupt store
  gets nothing written.
* MLMD's C++ log lines (a PostgreSQL restart under a runner) stay out of a run's output unless the run
  fails.

Every case is a real ``mlmd-cache`` process against the real MLMD core and real databases.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from .backends import fresh_database, run_sql

MLMD_TABLE_COUNT = 15  # MLMD 1.17's schema on MySQL: 14 tables, then MLMDEnv, then its version row


def mlmd_cache(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlmd_cache", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1, result
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- item 5: kill -9 during first-use schema creation on MariaDB -------------------------------------------

def _mysql(url: str):
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(host=parts.hostname, port=parts.port, user=unquote(parts.username),
                           password=unquote(parts.password or ""), autocommit=True)


def _schema(cursor, database: str) -> tuple[int, bool, int]:
    """(whether the database exists, MLMD tables there, schema version rows)."""
    cursor.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
    if not cursor.fetchone()[0]:
        return False, 0, 0
    cursor.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
    tables = [row[0] for row in cursor.fetchall()]
    versions = 0
    if "MLMDEnv" in tables:
        cursor.execute(f"SELECT COUNT(*) FROM `{database}`.`MLMDEnv`")
        versions = cursor.fetchone()[0]
    return True, len(tables), versions


def _kill_creator_at(url: str, tables: int) -> tuple[bool, int, int]:
    """Start a first command on the new database ``url``; stop it (SIGSTOP, then SIGKILL) as soon
    as the database exists (``tables`` 0) or holds ``tables`` tables. What it left."""
    database = urlsplit(url).path.lstrip("/")
    with _mysql(url) as connection, connection.cursor() as cursor:
        creator = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "--db", url, "index"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while creator.poll() is None:
                exists, count, _ = _schema(cursor, database)
                if exists and count >= tables:
                    creator.send_signal(signal.SIGSTOP)  # at once: the poll above took a moment already
                    break
        finally:
            creator.kill()
            creator.wait()
        return _schema(cursor, database)


def test_kill_9_during_schema_creation_on_mariadb_leaves_a_store_every_later_command_opens():
    left = []
    for tables in range(MLMD_TABLE_COUNT + 1):
        with fresh_database("MLMD_TEST_MYSQL_URL") as url:
            exists, count, versions = _kill_creator_at(url, tables)
            left.append((count, versions))
            for command in (["index"], ["stats"], ["recover"]):
                result = mlmd_cache("--db", url, *command)
                assert result.returncode == 0 and "Error" not in result.stderr, (tables, count, versions, result)
            assert _schema_complete(url), (tables, count)
    # The kills hit the states that bricked a store: some tables and no MLMDEnv, and MLMDEnv without
    # its version (else this test proves nothing).
    assert any(0 < count < MLMD_TABLE_COUNT and not versions for count, versions in left), left
    assert (MLMD_TABLE_COUNT, 0) in left, left


def _schema_complete(url: str) -> bool:
    database = urlsplit(url).path.lstrip("/")
    with _mysql(url) as connection, connection.cursor() as cursor:
        return _schema(cursor, database) == (True, MLMD_TABLE_COUNT, 1)


def test_a_cut_off_schema_that_holds_rows_is_refused_with_the_statement_that_clears_it():
    with fresh_database("MLMD_TEST_MYSQL_URL") as url:
        database = urlsplit(url).path.lstrip("/")
        _, count, _ = _kill_creator_at(url, 5)
        assert 0 < count < MLMD_TABLE_COUNT
        run_sql(url, f"INSERT INTO `{database}`.`Type` (`name`, `type_kind`) VALUES ('somebody''s', 1)")
        for command in (["index"], ["stats"]):
            line = one_error_line(mlmd_cache("--db", url, *command))
            if command == ["index"]:
                assert f"DROP DATABASE `{database}`" in line and "Type" in line, line
        assert run_sql(url, f"SELECT name FROM `{database}`.`Type`").split() == ["somebody's"]  # nothing dropped
        run_sql(url, f"DROP DATABASE `{database}`")  # what the line says to do
        assert mlmd_cache("--db", url, "index").returncode == 0
        assert _schema_complete(url)


def test_a_table_of_an_mlmd_name_but_not_mlmds_is_still_somebody_elses():
    with fresh_database("MLMD_TEST_MYSQL_URL") as url:
        database = urlsplit(url).path.lstrip("/")
        run_sql(url, [f"CREATE DATABASE `{database}`", f"CREATE TABLE `{database}`.`Event` (id INT, what TEXT)"])
        line = one_error_line(mlmd_cache("--db", url, "index"))
        assert "not an MLMD store" in line and "Event" in line, line
        assert run_sql(url, f"SHOW TABLES FROM `{database}`").split() == ["Event"]
