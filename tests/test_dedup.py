"""No duplicate work under concurrency: runs racing on one store execute each cache key once.

Real `run-pipeline` subprocesses (and `ExecutionCache.execute` in subprocesses) race on SQLite,
MariaDB, PostgreSQL and `serve`: each task's process runs once, every other run's execution of it
is CACHED from that one, all runs succeed. A holder killed with SIGKILL (or stopped, so that only
its lease can tell) is taken over by a waiter, and its RUNNING execution is marked FAILED with
the reason. (no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
from kfp import dsl
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
from mlmd_cache.store import records
from mlmd_cache.errors import InvalidArgumentError
from mlmd_cache.cache.leases import LEASE_EXPIRES_AT, MIN_LEASE_SECONDS, RESERVATION_CONTEXT_TYPE
from mlmd_cache.cache.recovery import INTERRUPTED_REASON
from tests.pipelines import IMAGE, RunRecords, cli, compile_to, prop

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

DEADLINE = 90.0  # seconds for anything to happen that should take a few
RUNS = 8


@pytest.fixture(params=["sqlite", "mysql", "postgresql", "serve-sqlite"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:  # SQLite: a file in a new folder
        yield url


@dsl.component(base_image=IMAGE)
def step(directory: str, name: str, seconds: float, x: int) -> int:
    """Appends its PID to ``directory/name.log`` (one line per real execution), then takes a while."""
    import os
    import time

    with open(os.path.join(directory, name + ".log"), "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return x + 1


@dsl.pipeline(name="dedup-race")
def race(directory: str, seconds: float = 0.5):
    prepare = step(directory=directory, name="prepare", seconds=seconds, x=0)
    train = step(directory=directory, name="train", seconds=seconds, x=prepare.output)
    evaluate = step(directory=directory, name="evaluate", seconds=seconds, x=train.output)
    step(directory=directory, name="report", seconds=seconds, x=evaluate.output)


@dsl.component(base_image=IMAGE)
def block(directory: str) -> str:
    """Writes ``directory/started-<pid>``, then waits for ``directory/release``."""
    import os
    import time

    open(os.path.join(directory, f"started-{os.getpid()}"), "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(directory, "release")) and time.time() < deadline:
        time.sleep(0.05)
    return "done"


@dsl.pipeline(name="dedup-block")
def blocking(directory: str):
    block(directory=directory)


def runner(db: str, pipeline: str, tmp_path: Path, run_name: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlmd_cache", "run-pipeline", pipeline, "--db", db, "--pipeline-root",
               str(tmp_path / "root"), "--run-name", run_name, "--json", *args]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finished(process: subprocess.Popen) -> tuple[dict, str]:
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    return json.loads(out), err


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def reservations(db: str) -> list[mlmd.Context]:
    store = connect(db)
    try:
        return store.get_contexts_by_type(RESERVATION_CONTEXT_TYPE)
    except Exception:  # no such type: nothing was ever reserved
        return []


def test_eight_racing_runs_execute_each_task_once_and_all_succeed(db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "race.yaml", race)
    processes = [runner(db, path, tmp_path, f"run-{n}", "--param", f"directory={work}") for n in range(RUNS)]
    reports = [finished(process)[0] for process in processes]

    names = ["prepare", "train", "evaluate", "report"]
    for name in names:  # each task's process ran once in all
        assert len((work / f"{name}.log").read_text().splitlines()) == 1, name
    tasks = ["step", "step-2", "step-3", "step-4"]
    for task in tasks:
        by_state: dict = {}
        for report in reports:
            by_state.setdefault(report["tasks"][task]["state"], []).append(report["tasks"][task])
        assert sorted(by_state) == ["CACHED", "COMPLETE"] and len(by_state["COMPLETE"]) == 1, (task, by_state)
        [source] = by_state["COMPLETE"]
        assert {t["cached_execution_id"] for t in by_state["CACHED"]} == {source["execution_id"]}
    store = connect(db)
    containers = [e for e in store.get_executions_by_type(records.CONTAINER_EXECUTION_TYPE)]
    assert len(containers) == RUNS * len(tasks)
    assert sorted(mlmd.Execution.State.Name(e.last_known_state) for e in containers).count("COMPLETE") == len(tasks)
    assert len(reservations(db)) == len(tasks)  # one generation per key: nobody took over


@pytest.fixture
def cpu_hog() -> Iterator[None]:
    """A busy process per CPU beside the runs: heartbeats and polls come late, as on a loaded machine."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_eight_racing_runs_at_the_shortest_lease_on_a_loaded_machine_all_succeed(backend, backends, cpu_hog,
                                                                                  tmp_path):
    """No holder that is alive and beating loses its key, however short the lease may be."""
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "race.yaml", race)
    with backends.fresh_store(backend, tmp_path / "store") as db:
        lease = f"{MIN_LEASE_SECONDS:g}s"
        processes = [runner(db, path, tmp_path, f"run-{n}", "--param", f"directory={work}", "--param", "seconds=0.2",
                            "--lease", lease) for n in range(RUNS)]
        errors = [process.communicate(timeout=4 * DEADLINE)[1] for process in processes]
        failed = [err for process, err in zip(processes, errors) if process.returncode != 0]
        assert not failed, f"{len(failed)} of {RUNS} runs failed: {failed[0]}"
        for name in ["prepare", "train", "evaluate", "report"]:  # and the work was done once
            assert len((work / f"{name}.log").read_text().splitlines()) == 1, name


def test_a_holder_beating_on_a_skewed_clock_keeps_its_key(sqlite_db, tmp_path):
    """A holder whose clock is an hour behind (another host) writes a lease_expires_at that is always
    past by the waiter's clock: expiry is judged by whether its beats go on, so the waiter waits."""
    cache = ExecutionCache(connect(sqlite_db))
    task = Task("train", CacheKey.build(image="python:3.11", command=["train"]))
    claimed = cache.claim(cache.pipeline_run("p", "holder"), task, lease_seconds=2)
    reservation = claimed.started.reservation
    cache.heartbeats.stop(reservation.id)  # this test beats instead, on the skewed clock

    def beat() -> None:
        reservation.custom_properties[LEASE_EXPIRES_AT].double_value = time.time() - 3600 + 2
        cache.store.put_contexts([reservation])

    script = textwrap.dedent("""
        import sys
        from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
        db, waiting = sys.argv[1:]
        cache = ExecutionCache(connect(db))
        task = Task("train", CacheKey.build(image="python:3.11", command=["train"]))
        done = cache.execute(cache.pipeline_run("p", "waiter"), task, lambda started: Outputs(), lease_seconds=2,
                             on_wait=lambda holder: open(waiting, "w").close())
        print(done.state)
    """)
    waiting = tmp_path / "waiting"
    beat()
    waiter = subprocess.Popen([sys.executable, "-c", script, sqlite_db, str(waiting)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: waiting.exists() or waiter.poll() is not None, "the waiter to look")
        until = time.monotonic() + 3 * 2  # three leases
        while time.monotonic() < until:
            assert waiter.poll() is None, waiter.communicate()  # it took the key over
            beat()
            time.sleep(0.3)
        done = cache.publish(claimed.started, Outputs())
        out, err = waiter.communicate(timeout=DEADLINE)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert (waiter.returncode, out.strip()) == (0, "CACHED"), err
    assert mlmd.Execution.State.Name(done.execution.last_known_state) == "COMPLETE"
    assert len(reservations(sqlite_db)) == 1  # nobody took over


def test_a_bad_lease_through_the_python_api_is_refused(sqlite_db):
    cache = ExecutionCache(connect(sqlite_db))
    task = Task("train", CacheKey.build(image="python:3.11", command=["train"]))
    with pytest.raises(InvalidArgumentError, match=r"^a lease must be at least 2 s \(5 heartbeats of 0.4 s\), "
                                                   r"not 0.0001 s$"):
        cache.execute(cache.pipeline_run("p", "r"), task, lambda started: Outputs(), lease_seconds=0.0001)
    with pytest.raises(InvalidArgumentError, match="^a lease must be at least 2 s"):
        cache.claim(cache.pipeline_run("p", "r"), task, lease_seconds=1.5)
    assert reservations(sqlite_db) == []


def test_two_processes_executing_one_key_do_the_work_once(db, tmp_path):
    """On a new store: MLMD's MySQL and PostgreSQL schemas let two processes make two types of one name."""
    script = textwrap.dedent("""
        import os, sys, time
        from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
        db, run_name, log, gate = sys.argv[1:]
        cache = ExecutionCache(connect(db))
        run = cache.pipeline_run("two", run_name)
        task = Task("train", CacheKey.build(image="python:3.11", command=["train"],
                                            output_parameters={"loss": "NUMBER_DOUBLE"}))
        while not os.path.exists(gate):
            time.sleep(0.01)
        def work(started):
            with open(log, "a") as f:
                f.write(run_name + "\\n")
            time.sleep(1)
            return Outputs(parameters={"loss": 0.5})
        done = cache.execute(run, task, work, on_wait=lambda holder: print("waited for", holder, flush=True))
        print(done.state, done.output_parameters["loss"])
    """)
    log, gate = tmp_path / "work.log", tmp_path / "gate"
    processes = [subprocess.Popen([sys.executable, "-c", script, db, f"run-{n}", str(log), str(gate)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]
    time.sleep(2)  # both have imported and opened the store
    gate.touch()
    outs = []
    for process in processes:
        out, err = process.communicate(timeout=DEADLINE)
        assert process.returncode == 0, err
        outs.append(out.splitlines())
    assert len(log.read_text().splitlines()) == 1
    store = connect(db)  # one type of each name, though both processes made them at once on a new store
    names = [t.name for t in store.get_context_types() + store.get_execution_types()]
    assert len(names) == len(set(names)), names
    assert sorted(out[-1] for out in outs) == ["CACHED 0.5", "COMPLETE 0.5"]
    [waiter] = [out for out in outs if out[-1].startswith("CACHED")]
    assert waiter[0].startswith("waited for ")


def test_a_holder_killed_with_sigkill_is_taken_over_and_marked_failed(db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "block.yaml", blocking)
    holder = runner(db, path, tmp_path, "holder", "--param", f"directory={work}", "--lease", "2s")
    wait_for(lambda: list(work.glob("started-*")) or holder.poll() is not None, "the holder's task to start")
    held = RunRecords(db, "holder").one("block")
    waiter = runner(db, path, tmp_path, "waiter", "--param", f"directory={work}", "--lease", "2s")
    (work / "waiter-started").touch()
    time.sleep(3)  # the waiter is waiting (its report says so below)
    assert waiter.poll() is None
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=DEADLINE)
    wait_for(lambda: len(list(work.glob("started-*"))) == 2 or waiter.poll() is not None, "the waiter to take over")
    (work / "release").touch()
    report, err = finished(waiter)
    assert f"block: waiting for execution {held.id}, which holds its cache key" in err
    assert report["tasks"]["block"]["state"] == "COMPLETE"
    [killed] = connect(db).get_executions_by_id([held.id])
    assert mlmd.Execution.State.Name(killed.last_known_state) == "FAILED"
    reason = prop(killed, INTERRUPTED_REASON)
    assert reason.startswith("its reservation of the cache key was taken over: ") and f"pid {holder.pid}" in reason
    assert len(reservations(db)) == 2  # the holder's generation and the waiter's


def test_a_holder_that_stops_heartbeating_loses_its_key_when_the_lease_runs_out(sqlite_db, tmp_path):
    """A stopped holder (SIGSTOP) is alive as a process: only its lease can tell a waiter to take over."""
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "block.yaml", blocking)
    holder = runner(sqlite_db, path, tmp_path, "holder", "--param", f"directory={work}", "--lease", "2s")
    try:
        wait_for(lambda: list(work.glob("started-*")) or holder.poll() is not None, "the holder's task to start")
        held = RunRecords(sqlite_db, "holder").one("block")
        holder.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        waiter = runner(sqlite_db, path, tmp_path, "waiter", "--param", f"directory={work}", "--lease", "2s")
        wait_for(lambda: len(list(work.glob("started-*"))) == 2 or waiter.poll() is not None, "the waiter to take over")
        assert time.monotonic() - stopped >= 1.0  # not before the lease (2 s, a beat at most 2/3 s before the stop)
        (work / "release").touch()
        report, err = finished(waiter)
        assert report["tasks"]["block"]["state"] == "COMPLETE"
        [taken] = connect(sqlite_db).get_executions_by_id([held.id])
        assert mlmd.Execution.State.Name(taken.last_known_state) == "FAILED"
        assert "its lease expired" in prop(taken, INTERRUPTED_REASON)
        holder.send_signal(signal.SIGCONT)  # its task ends: its publish finds the execution taken over
        out, err = holder.communicate(timeout=DEADLINE)
        assert holder.returncode == 1 and "Traceback" not in err, err
        task = json.loads(out)["tasks"]["block"]
        assert task["state"] == "FAILED" and "was marked FAILED meanwhile by another runner" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=DEADLINE)


def test_no_dedup_and_disabled_caching_reserve_nothing(sqlite_db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "race.yaml", race)
    for run_name, option in (("plain", "--no-dedup"), ("uncached", "--disable-cache")):
        report, _ = finished(runner(sqlite_db, path, tmp_path, run_name, "--param", f"directory={work}", "--param",
                                    "seconds=0", option))
        assert {t["state"] for t in report["tasks"].values()} == {"COMPLETE"}
    assert reservations(sqlite_db) == []
    finished(runner(sqlite_db, path, tmp_path, "cached", "--param", f"directory={work}", "--param", "seconds=0"))
    assert reservations(sqlite_db) == []  # every task hit: nothing to reserve


def test_max_wait_runs_the_task_anyway_while_the_holder_holds_the_key(sqlite_db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    path = compile_to(tmp_path / "block.yaml", blocking)
    holder = runner(sqlite_db, path, tmp_path, "holder", "--param", f"directory={work}")
    try:
        wait_for(lambda: list(work.glob("started-*")) or holder.poll() is not None, "the holder's task to start")
        held = RunRecords(sqlite_db, "holder").one("block")
        waiter = runner(sqlite_db, path, tmp_path, "waiter", "--param", f"directory={work}", "--max-wait", "1s")
        wait_for(lambda: len(list(work.glob("started-*"))) == 2 or waiter.poll() is not None, "the waiter to run")
        (work / "release").touch()
        report, err = finished(waiter)
        assert f"waiting for execution {held.id}" in err
        assert report["tasks"]["block"]["state"] == "COMPLETE"
        ran = RunRecords(sqlite_db, "waiter").one("block")
        assert prop(ran, records.MISS_REASON) == f"waited 1 s for execution {held.id}, which still held the cache key"
        finished(holder)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_retried_holder_keeps_its_key_and_a_failed_one_releases_it(db, tmp_path):
    cache = ExecutionCache(connect(db))
    task = Task("train", CacheKey.build(image="python:3.11", command=["train"]))
    first, second = cache.pipeline_run("p", "run-1"), cache.pipeline_run("p", "run-2")
    claimed = cache.claim(first, task, lease_seconds=MIN_LEASE_SECONDS)
    assert claimed.started is not None and claimed.generation == 1
    assert cache.claim(second, task).held.holder_id == claimed.started.id
    time.sleep(2.5 * MIN_LEASE_SECONDS)  # longer than the lease since that look: the heartbeat keeps it
    assert cache.claim(second, task).held.holder_id == claimed.started.id
    failed = cache.fail(claimed.started, keep_reservation=True)  # another attempt follows
    assert cache.claim(second, task).held is not None
    cache.restart(failed)
    cache.fail(failed)  # the last attempt failed: released at once
    other = ExecutionCache(connect(db))  # another runner
    taken = other.claim(second, task)
    assert taken.started is not None and taken.generation == 2 and taken.taken_over is None
    [context] = [c for c in reservations(db) if c.name.endswith(".1")]
    assert context.custom_properties[LEASE_EXPIRES_AT].double_value == 0
    done = other.publish(taken.started, Outputs())
    late = cache.claim(cache.pipeline_run("p", "run-3"), task)
    assert late.hit is not None and late.hit.source.id == done.id


@pytest.mark.parametrize("option, message", [
    (("--lease", "0s"), "Error: a lease must be at least 2 s (5 heartbeats of 0.4 s), not 0 s"),
    (("--lease", "0.0001s"), "Error: a lease must be at least 2 s (5 heartbeats of 0.4 s), not 0.0001 s"),
    (("--lease", "1.9s"), "Error: a lease must be at least 2 s (5 heartbeats of 0.4 s), not 1.9 s"),
    (("--lease", "soon"), "Error: --lease 'soon': not a duration"),
    (("--max-wait", "-1s"), "Error: --max-wait '-1s': not a duration"),
])
def test_a_bad_lease_or_wait_is_one_line_and_writes_nothing(tmp_path, option, message):
    store = tmp_path / "never.sqlite"
    code, out, err = cli("run-pipeline", compile_to(tmp_path / "race.yaml", race), "--db", f"sqlite:///{store}",
                         "--param", f"directory={tmp_path}", *option)
    assert (code, out) == (2, "") and err.startswith(message) and len(err.splitlines()) == 1, err
    assert not store.exists()
