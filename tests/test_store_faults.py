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

import contextlib
import errno
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from kfp import dsl

from .backends import free_port, fresh_database, run_sql, unavailable
from .pipelines import IMAGE, compile_to, say

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



# -- item 9: a full disk, a read-only and a corrupt store name the cause ----------------------------------

@dsl.pipeline(name="store-faults")
def say_pipeline(message: str = "hello"):
    say(message=message)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path]:
    """(the compiled pipeline, a SQLite store holding one run of it)."""
    directory = tmp_path_factory.mktemp("template")
    pipeline = Path(compile_to(directory / "say.yaml", say_pipeline))
    store = directory / "store.sqlite"
    done = run_pipeline(pipeline, f"sqlite:///{store}", "first", directory / "root")
    assert done.returncode == 0, done
    return pipeline, store


def run_pipeline(pipeline: Path, db: str, run: str, root: Path) -> subprocess.CompletedProcess:
    """A run whose task misses the cache (its message is the run's name): it writes, and executes."""
    return subprocess.run([sys.executable, "-m", "mlmd_cache", "run-pipeline", str(pipeline), "--db", db,
                           "--run-name", run, "--pipeline-root", str(root), "--param", f"message={run}"],
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def assert_plain(line: str, path: Path, *words: str) -> None:
    """A sentence naming the file and the cause, not MLMD's SQL."""
    assert str(path) in line and all(word in line for word in words), line
    assert "query:" not in line and "INSERT" not in line and "Internal" not in line, line


@contextlib.contextmanager
def small_filesystem(directory: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (root only), unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path) -> None:
    """Fill the filesystem of ``directory`` to the last block."""
    with open(directory / "filler", "wb", buffering=0) as file:
        chunk = bytes(4096)
        try:
            while True:
                file.write(chunk)
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    assert os.statvfs(directory).f_bavail == 0


def test_a_store_on_a_full_disk_is_named_in_a_plain_sentence(template, tmp_path):
    pipeline, stored = template
    with small_filesystem(tmp_path / "small") as small:
        store = small / "store.sqlite"
        shutil.copy(stored, store)
        fill(small)
        before = store.read_bytes()
        line = one_error_line(run_pipeline(pipeline, f"sqlite:///{store}", "second", tmp_path / "root"))
        assert_plain(line, store, "disk", "full")
        assert store.read_bytes() == before


def test_a_read_only_store_is_named_in_a_plain_sentence(template, tmp_path):
    pipeline, stored = template
    store = tmp_path / "store" / "store.sqlite"
    store.parent.mkdir()
    shutil.copy(stored, store)
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (root makes a file read-only no other way)")
    try:
        line = one_error_line(run_pipeline(pipeline, f"sqlite:///{store}", "second", tmp_path / "root"))
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    assert_plain(line, store, "read-only")


def _root_page(store: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(store)) as db:
        return db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]


def test_a_store_corrupt_mid_file_is_refused_before_anything_is_written(template, tmp_path):
    pipeline, stored = template
    store = tmp_path / "store.sqlite"
    shutil.copy(stored, store)
    # An index this run never reads (its task has no output, so no event): MLMD alone writes the
    # run into the corrupt file and reports success; the run must be refused before its first write.
    page = _root_page(store, "idx_event_execution_id")
    with open(store, "r+b") as file:
        file.seek((page - 1) * 4096)
        file.write(bytes([0xAB]) * 4096)
    before = store.read_bytes()
    line = one_error_line(run_pipeline(pipeline, f"sqlite:///{store}", "second", tmp_path / "root"))
    assert_plain(line, store, "corrupt", "nothing was written")
    assert store.read_bytes() == before
    assert not (tmp_path / "root").exists()


def test_a_store_locked_by_another_process_is_named_in_a_plain_sentence(template, tmp_path):
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    from mlmd_cache import connect
    from mlmd_cache.errors import StoreFaultError

    _, stored = template
    store_path = tmp_path / "store.sqlite"
    shutil.copy(stored, store_path)
    store = connect(f"sqlite:///{store_path}")
    store.retry_seconds = 1.0  # the default waits 60 s for the other writer
    # Another process: SQLite's locks are not seen between two SQLite libraries of one process.
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], "
                               "isolation_level=None); db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); "
                               "sys.stdin.read()", str(store_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreFaultError) as raised:
            store.put_context_type(mlmd.ContextType(name="while-locked"))
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert_plain(str(raised.value), store_path, "stayed locked")


def test_a_task_that_failed_on_a_full_disk_says_so(template, tmp_path):
    pipeline, stored = template
    store = tmp_path / "store.sqlite"
    shutil.copy(stored, store)
    with small_filesystem(tmp_path / "small") as small:
        fill(small)
        done = run_pipeline(pipeline, f"sqlite:///{store}", "second", small / "root")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    failed = [line for line in done.stdout.splitlines() if "exit code" in line]
    assert len(failed) == 1 and "is full (no space left on device)" in failed[0], done.stdout
    assert str(small / "root") in failed[0], failed


# -- item 10: MLMD's C++ log lines shown only when the run fails ----------------------------------------------

@dsl.component(base_image=IMAGE)
def gated_task(directory: str) -> str:
    """Says it started, waits (at most 120 s) for ``directory/go``, and fails if ``directory/fail`` exists."""
    import os
    import time

    open(os.path.join(directory, "started"), "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(directory, "go")) and time.time() < deadline:
        time.sleep(0.05)
    if os.path.exists(os.path.join(directory, "fail")):
        raise SystemExit("asked to fail")
    return "done"


@dsl.pipeline(name="restart")
def gated_restart(directory: str):
    gated_task(directory=directory)


def _postgresql_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        unavailable("PostgreSQL is not installed (bash scripts/databases.sh start installs it)")
    return found[-1].parent


@contextlib.contextmanager
def private_postgresql() -> Iterator[tuple[str, callable]]:
    """A PostgreSQL server of this test alone (restarting the shared one would disturb other tests),
    trusting loopback logins: yields its postgresql:// URL and a function that stops it, calls a
    function, and starts it again."""
    bindir, port = _postgresql_bin(), free_port()
    # Not under pytest's tmp_path: the server runs as the postgres user, who cannot enter it (as root).
    data = Path(tempfile.mkdtemp(prefix="mlmd-cache-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust",
                    "--no-sync"], check=True, capture_output=True)
    control = [*as_owner, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-t", "60"]

    def start() -> None:
        subprocess.run([*control, "-l", str(data / "log"), "-o", f"-p {port} -h 127.0.0.1 -k {data} -F",
                        "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*control, "-m", "fast", "stop"], check=True, capture_output=True)

    def restart(while_down) -> None:
        stop()
        while_down()
        start()

    start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/mlmd_restart", restart
    finally:
        subprocess.run([*control, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


GLOG_LINE = re.compile(r"^\s*[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ \]]+:\d+\]", re.M)


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_mlmd_log_lines_of_a_postgresql_restart_are_shown_only_when_the_run_fails(tmp_path, outcome):
    pipeline = compile_to(tmp_path / "restart.yaml", gated_restart)
    directory = tmp_path / "gate"
    directory.mkdir()
    if outcome == "fails":
        (directory / "fail").touch()
    with private_postgresql() as (url, restart):
        runner = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", pipeline, "--db", url,
                                   "--run-name", "run-1", "--pipeline-root", str(tmp_path / "root"),
                                   "--param", f"directory={directory}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (directory / "started").exists():
            assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
            time.sleep(0.05)

        def task_ends_while_down() -> None:  # the runner's next calls meet a server that is away
            (directory / "go").touch()
            time.sleep(3)

        restart(task_ends_while_down)
        stdout, stderr = runner.communicate(timeout=180)
    assert "Traceback" not in stderr, stderr
    if outcome == "succeeds":
        assert runner.returncode == 0, stderr
        assert not GLOG_LINE.search(stdout + stderr), stdout + stderr
    else:
        assert runner.returncode == 1, stderr
        assert "asked to fail" in stdout, stdout
        # what MLMD logged while the server was away, under a heading
        assert "MLMD's C++ core logged" in stderr and GLOG_LINE.search(stderr), stderr
