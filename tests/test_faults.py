"""Store faults in the middle of a run, and many processes opening a new store at once.

Each run here is a real ``mlmd-cache run-pipeline`` process whose first task waits for a file (``go``)
before it ends, so that a fault can be made while it runs: ``serve`` killed or paused, MariaDB
restarted, PostgreSQL's connections ended. The runner must end with one line (or, over a direct
database connection, reconnect and record the task COMPLETE), and a re-run must recover.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from kfp import dsl
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect
from mlmd_cache.store import records

from .backends import free_port, fresh_database, run_sql, server_url, unavailable
from .pipelines import IMAGE, compile_to, echo_value, say
from .servers import serving


@dsl.component(base_image=IMAGE)
def gated(directory: str) -> str:
    """Says it started, then waits (at most 120 s) for ``directory/go``."""
    import os
    import time

    open(os.path.join(directory, "started"), "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(directory, "go")) and time.time() < deadline:
        time.sleep(0.05)
    return "done"


@dsl.pipeline(name="faults")
def gated_pipeline(directory: str):
    echo_value(x=gated(directory=directory).output)


@dsl.pipeline(name="first-use")
def tiny_pipeline():
    say(message="hello")


def _runner(db: str, pipeline: str, tmp_path: Path, run: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlmd_cache", "run-pipeline", pipeline, "--db", db, "--run-name", run,
               "--pipeline-root", str(tmp_path / "root"), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0]


@pytest.fixture
def gate(tmp_path: Path) -> tuple[str, Path]:
    directory = tmp_path / "gate"
    directory.mkdir()
    return compile_to(tmp_path / "faults.yaml", gated_pipeline), directory


def _states(db: str, run: str) -> dict[str, str]:
    store = connect(db, read_only=True)
    context = store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
    return {records.read_property(e, records.TASK_NAME) or e.name: mlmd.Execution.State.Name(e.last_known_state)
            for e in store.get_executions_by_context(context.id)}


# -- serve killed or paused mid-run -------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["killed", "paused"])
def test_serve_fault_mid_run_ends_in_one_line_within_the_deadline(fault, gate, tmp_path):
    pipeline, directory = gate
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with serving("--db", store) as (server, url):
        runner = _runner(url, pipeline, tmp_path, "run-1", "--param", f"directory={directory}", "--timeout", "3")
        _wait_for(directory / "started", runner)
        server.send_signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        try:
            began = time.monotonic()
            (directory / "go").touch()
            _, stderr = runner.communicate(timeout=60)
            took = time.monotonic() - began
        finally:
            if fault == "paused":
                server.send_signal(signal.SIGCONT)
        assert runner.returncode == 1
        line = _error_line(stderr)
        assert url.removeprefix("grpc://") in line and "mlmd-cache recover" in line, line
        assert took < 3 + 10, took  # the deadline, and the time a task's end takes
    (directory / "go").unlink()
    (directory / "started").unlink()
    with serving("--db", store) as (_, url):  # the store is intact: a re-run completes
        (directory / "go").touch()
        again = _runner(url, pipeline, tmp_path, "run-2", "--param", f"directory={directory}")
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
    assert set(_states(store, "run-2").values()) == {"COMPLETE"}


# -- a direct database connection dropped mid-run -----------------------------------------------------

@contextlib.contextmanager
def private_mariadb(directory: Path) -> Iterator[tuple[str, callable]]:
    """A MariaDB server of this test alone (restarting the shared one would disturb other tests):
    yields its mysql:// URL and a function that stops it, calls a function, and starts it again."""
    install, server = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db"), \
        shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
    if not install or not os.path.exists(server):
        unavailable("MariaDB is not installed (bash scripts/databases.sh start installs it)")
    data, port = directory / "data", free_port()
    subprocess.run([install, "--no-defaults", "--user=root", f"--datadir={data}", "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True)
    command = [server, "--no-defaults", "--user=root", f"--datadir={data}", "--bind-address=127.0.0.1",
               f"--port={port}", f"--socket={directory / 'mysqld.sock'}", "--skip-grant-tables",
               "--skip-log-bin", "--innodb-buffer-pool-size=16M", f"--log-error={directory / 'mysqld.log'}"]
    url = f"mysql://root:pw@127.0.0.1:{port}/mlmd_faults"
    processes = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-e", "SELECT 1"],
                             capture_output=True).returncode:
            assert processes[-1].poll() is None and time.monotonic() < deadline, (directory / "mysqld.log").read_text()
            time.sleep(0.2)

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(60)

    def restart(while_down) -> None:
        stop()
        while_down()
        start()

    start()
    try:
        yield url, restart
    finally:
        stop()


def test_mariadb_restarted_under_a_direct_runner_records_the_task_complete(gate, tmp_path):
    pipeline, directory = gate
    with private_mariadb(tmp_path / "mariadb") as (url, restart):
        runner = _runner(url, pipeline, tmp_path, "run-1", "--param", f"directory={directory}")
        _wait_for(directory / "started", runner)

        def task_ends_while_down() -> None:  # its outputs are published into a store that is away
            (directory / "go").touch()
            time.sleep(3)

        restart(task_ends_while_down)
        stdout, stderr = runner.communicate(timeout=120)
        assert runner.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert set(_states(url, "run-1").values()) == {"COMPLETE"}


@pytest.mark.parametrize("down", [20, 60, "for good"])
def test_mariadb_down_under_a_dedup_runner_never_crashes_it(down, gate, tmp_path):
    """The lease heartbeat (a thread of its own, beating every 1.2 s here) talks to the store while
    it is away: it must reconnect as the runner's calls do, and never call a dead MySQL handle (that
    was exit 139). Down 20 s: the run completes. Down 60 s (as long as a call is retried): it
    completes or ends in one line. Down for good: one line, exit 1. Then the store is recoverable."""
    pipeline, directory = gate
    with private_mariadb(tmp_path / "mariadb") as (url, restart):
        runner = _runner(url, pipeline, tmp_path, "run-1", "--param", f"directory={directory}", "--lease", "6s")
        _wait_for(directory / "started", runner)
        ended: list = []

        def task_ends_while_down() -> None:  # the task ends (its publish meets the fault) 5 s into it
            time.sleep(5)
            (directory / "go").touch()
            if down == "for good":
                ended.append(runner.communicate(timeout=240))
            else:
                time.sleep(down - 5)

        restart(task_ends_while_down)
        stdout, stderr = ended[0] if ended else runner.communicate(timeout=240)
        assert runner.returncode in (0, 1), (runner.returncode, stderr)  # -11: a segfault
        if down == 20:
            assert runner.returncode == 0, stderr
        if runner.returncode == 0:
            assert "Traceback" not in stderr
            assert set(_states(url, "run-1").values()) == {"COMPLETE"}
            return
        assert down != 20 and ("lost the connection" in _error_line(stderr)), stderr
        code, out, err = _recover(url)  # the store is recoverable: what the fault left RUNNING is closed
        assert code == 0, err
        assert "RUNNING" not in set(_states(url, "run-1").values()), out
        (directory / "go").unlink()
        (directory / "started").unlink()
        (directory / "go").touch()
        again = _runner(url, pipeline, tmp_path, "run-2", "--param", f"directory={directory}")
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        assert set(_states(url, "run-2").values()) == {"COMPLETE"}


def _recover(url: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "recover", "--db", url], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def test_postgresql_connections_ended_mid_run_are_reconnected(gate, tmp_path):
    pipeline, directory = gate
    with fresh_database("MLMD_TEST_POSTGRESQL_URL") as url:
        runner = _runner(url, pipeline, tmp_path, "run-1", "--param", f"directory={directory}")
        _wait_for(directory / "started", runner)
        database = url.rsplit("/", 1)[1]
        run_sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     f"WHERE datname = '{database}' AND usename = current_user AND pid <> pg_backend_pid()",
                database="postgres")
        (directory / "go").touch()
        stdout, stderr = runner.communicate(timeout=120)
        assert runner.returncode == 0, stderr
        assert set(_states(url, "run-1").values()) == {"COMPLETE"}


# -- many processes on a new store --------------------------------------------------------------------

def _all_succeed(db: str, tmp_path: Path, count: int) -> None:
    pipeline = compile_to(tmp_path / "tiny.yaml", tiny_pipeline)
    runners = [_runner(db, pipeline, tmp_path, f"run-{n}") for n in range(count)]
    results = [(runner.communicate(timeout=300), runner.returncode) for runner in runners]
    failures = [err for (_, err), code in results if code != 0]
    assert not failures, failures[0]
    store = connect(db, read_only=True)
    assert len(store.get_contexts_by_type(records.RUN_CONTEXT_TYPE)) == count


def test_16_runners_on_a_new_sqlite_file_all_succeed(tmp_path):
    _all_succeed(f"sqlite:///{tmp_path / 'new' / 'store.sqlite'}", tmp_path, 16)


@pytest.mark.parametrize("variable", ["MLMD_TEST_MYSQL_URL", "MLMD_TEST_POSTGRESQL_URL"])
def test_8_runners_on_an_empty_database_all_succeed(variable, tmp_path):
    server_url(variable)
    with fresh_database(variable) as url:
        database = url.rsplit("/", 1)[1]
        quoted = f"`{database}`" if variable == "MLMD_TEST_MYSQL_URL" else f'"{database}"'
        run_sql(url, f"CREATE DATABASE {quoted}", database=None if variable == "MLMD_TEST_MYSQL_URL" else "postgres")
        _all_succeed(url, tmp_path, 8)
