"""A killed runner leaves no task process behind, and what it left RUNNING is told and recovered.

`kill -9` of `mlmd-cache run-pipeline` (a real subprocess) while its task runs: the task's processes
(its whole process group, children included) end within seconds; `mlmd-lineage runs`/`show` call
the run and the task interrupted; `mlmd-cache recover` marks the task and the run's DAGs FAILED with
the reason; a re-run executes the task anew. Records of other hosts and live runners are made
through the library (ExecutionCache) and left alone unless --older-than says otherwise.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from kfp import dsl
from ml_metadata.proto import metadata_store_pb2 as mlmd

from lineage.cli import main as lineage_main
from mlmd_cache import CacheKey, ExecutionCache, Task, connect
from mlmd_cache.store import records
from mlmd_cache.cache.recovery import INTERRUPTED_REASON, RECOVERED_AT, RUNNER, parse_duration, runner_identity
from tests.pipelines import IMAGE, RunRecords, cli, cli_json, compile_to, prop

from click.testing import CliRunner

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

DEADLINE = 60.0  # seconds for anything to happen that should take well under one


@dsl.component(base_image=IMAGE)
def hold(info: str, release: str) -> str:
    """Starts a child process, writes its process IDs to ``info``, and waits until ``release`` exists."""
    import json
    import os
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(info + ".tmp", "w") as f:
        json.dump({"pid": os.getpid(), "leader": os.getpgid(0), "child": child.pid}, f)
    os.replace(info + ".tmp", info)
    deadline = time.time() + 120
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.05)
    child.kill()
    return "released"


@dsl.pipeline(name="inner-hold")
def inner_hold(info: str, release: str) -> str:
    return hold(info=info, release=release).output


@dsl.pipeline(name="held")
def held(info: str, release: str):
    inner_hold(info=info, release=release)


@dsl.pipeline(name="held-in-a-loop")
def held_in_a_loop(info: str, release: str):
    with dsl.ParallelFor(["a", "b"]) as item:
        hold(info=f"{info}.{item}", release=release)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:  # SQLite: a file in a new folder
        yield url


def lineage(*args: str):
    result = CliRunner().invoke(lineage_main, list(args))
    return result.exit_code, result.stdout, result.stderr


def gone(pid: int) -> bool:
    """The process has ended (a zombie, dead but not yet reaped by whoever adopted it, has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def start_runner(db: str, tmp_path: Path, run_name: str) -> tuple[subprocess.Popen, dict]:
    """`run-pipeline` of `held` as a subprocess, once its task process runs: (the runner, the task's PIDs)."""
    path = compile_to(tmp_path / "held.yaml", held)
    info = tmp_path / f"{run_name}.json"
    log = open(tmp_path / f"{run_name}.log", "wb")
    runner = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", db,
                               "--pipeline-root", str(tmp_path / "root"), "--run-name", run_name,
                               "--param", f"info={info}", "--param", f"release={tmp_path / 'release'}"],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_for(lambda: info.exists() or runner.poll() is not None, "the task to start")
    assert runner.poll() is None, (tmp_path / f"{run_name}.log").read_text()
    return runner, json.loads(info.read_text())


def kill(runner: subprocess.Popen) -> None:
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=DEADLINE)


def watchdog_of(runner: subprocess.Popen) -> int:
    """The PID of the runner's watchdog process (its child running mlmd_cache/runner/watchdog.py)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == runner.pid and b"watchdog.py" in command:
            return int(entry)
    raise AssertionError("the runner has no watchdog process")


def states(db: str, run_name: str) -> dict:
    """task_name -> (type, state name) of the run's executions ("" is the root DAG)."""
    mlmd_run = RunRecords(db, run_name)
    return {prop(e, records.TASK_NAME): (mlmd_run.type_of(e), mlmd.Execution.State.Name(e.last_known_state))
            for e in mlmd_run.executions}


def test_kill_9_of_the_runner_stops_its_task_and_recover_marks_the_run_failed(db, tmp_path):
    runner, pids = start_runner(db, tmp_path, "r1")
    assert states(db, "r1") == {"": ("system.DAGExecution", "RUNNING"),
                                "inner-hold": ("system.DAGExecution", "RUNNING"),
                                "hold": ("system.ContainerExecution", "RUNNING")}
    task = RunRecords(db, "r1").one("hold")
    assert prop(task, RUNNER) == runner_identity(runner.pid)
    kill(runner)
    # the task's process, its child and its group leader (the component's `sh`), all in the task's own session
    wait_for(lambda: all(gone(pid) for pid in pids.values()), f"the task's processes {pids} to end")

    code, out, err = lineage("runs", "--db", db, "--json")
    assert code == 0, err
    [summary] = json.loads(out)["runs"]
    assert (summary["state"], summary["interrupted"], summary["failed"]) == ("interrupted", 1, 0)
    code, out, err = lineage("runs", "--db", db)
    assert out.splitlines()[1].split()[-1] == "interrupted"
    code, out, err = lineage("show", "run", "r1", "--db", db)
    assert code == 0, err
    assert [line.split()[2] for line in out.splitlines()[2:]] == ["INTERRUPTED"]
    code, out, err = lineage("show", "execution", str(task.id), "--db", db)
    assert code == 0, err
    assert "interrupted: its runner is gone" in out and f"pid:{runner.pid}" in out

    before = Path(db[len("sqlite:///"):]).read_bytes() if db.startswith("sqlite") else None
    code, out, err = cli("recover", "--dry-run", "--db", db)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and all(": would mark FAILED: " in line for line in lines[:3]), out
    assert lines[3] == "would mark 3 interrupted executions FAILED in 1 run"
    assert f"execution {task.id} (task 'inner-hold/hold' of run 'r1'): would mark FAILED: its runner (pid {runner.pid} " in out
    assert set(states(db, "r1").values()) == {("system.DAGExecution", "RUNNING"),
                                              ("system.ContainerExecution", "RUNNING")}
    if before is not None:
        assert Path(db[len("sqlite:///"):]).read_bytes() == before  # --dry-run writes nothing

    code, out, err = cli("recover", "--db", db, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["runs"] == ["r1"] and result["dry_run"] is False
    assert [(i["task"], i["type"]) for i in result["interrupted"]] == [
        ("", "system.DAGExecution"), ("inner-hold", "system.DAGExecution"),
        ("inner-hold/hold", "system.ContainerExecution")]
    assert set(states(db, "r1").values()) == {("system.DAGExecution", "FAILED"), ("system.ContainerExecution", "FAILED")}
    task = RunRecords(db, "r1").one("hold")
    assert prop(task, INTERRUPTED_REASON) == f"its runner (pid {runner.pid} on {socket.gethostname()}) has ended"
    assert prop(task, RECOVERED_AT).endswith("Z")
    code, out, _ = cli("recover", "--db", db)
    assert (code, out) == (0, "no interrupted executions\n")
    code, out, _ = lineage("runs", "--db", db, "--json")
    [summary] = json.loads(out)["runs"]
    assert (summary["state"], summary["interrupted"], summary["failed"]) == ("failed", 0, 1)

    # a re-run executes the task anew (its key is the same: nothing of r1 is a cache source), and the next reuses that
    (tmp_path / "release").touch()
    code, report, err = cli_json("run-pipeline", str(tmp_path / "held.yaml"), "--db", db, "--pipeline-root",
                                 str(tmp_path / "root"), "--run-name", "r2", "--param", f"info={tmp_path / 'r1.json'}",
                                 "--param", f"release={tmp_path / 'release'}")
    assert code == 0, err
    executed = report["tasks"]["inner-hold/hold"]
    assert executed["state"] == "COMPLETE" and executed["fingerprint"] == prop(task, records.CACHE_FINGERPRINT)
    code, report, err = cli_json("run-pipeline", str(tmp_path / "held.yaml"), "--db", db, "--pipeline-root",
                                 str(tmp_path / "root"), "--run-name", "r3", "--param", f"info={tmp_path / 'r1.json'}",
                                 "--param", f"release={tmp_path / 'release'}")
    assert code == 0, err
    assert report["tasks"]["inner-hold/hold"]["cached_execution_id"] == executed["execution_id"]


def test_the_task_dies_with_its_runner_even_without_the_watchdog(tmp_path):
    """PR_SET_PDEATHSIG: the task's first process is killed by the kernel when the runner dies."""
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    runner, pids = start_runner(db, tmp_path, "r1")
    watchdog = watchdog_of(runner)
    os.kill(watchdog, signal.SIGKILL)
    wait_for(lambda: gone(watchdog), "the watchdog to end")
    kill(runner)
    wait_for(lambda: gone(pids["leader"]), "the task's first process to end")
    for pid in (pids["pid"], pids["child"]):  # what it started is beyond the death signal: ended here by hand
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_run_that_ends_leaves_no_watchdog_behind(tmp_path):
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    runner, pids = start_runner(db, tmp_path, "r1")
    watchdog = watchdog_of(runner)
    (tmp_path / "release").touch()
    assert runner.wait(timeout=DEADLINE) == 0
    wait_for(lambda: gone(watchdog), "the watchdog to end")
    assert all(gone(pid) for pid in pids.values())
    code, out, _ = cli("recover", "--db", db)
    assert (code, out) == (0, "no interrupted executions\n")


def _running_execution(cache: ExecutionCache, run_name: str, runner: str = "") -> int:
    run = cache.pipeline_run("p", run_name)
    started = cache.start(run, Task("t-" + run_name, CacheKey.build(image="python:3.11", command=["true"])))
    if runner:  # as if another process had started it
        execution = cache.store.get_executions_by_id([started.id])[0]
        execution.custom_properties[RUNNER].string_value = runner
        cache.store.put_executions([execution])
    return started.id


@pytest.mark.parametrize("backend", ["sqlite", "mysql", "postgresql"])
def test_live_runners_are_left_alone_and_other_hosts_only_with_older_than(backend, backends, tmp_path):
    with backends.fresh_store(backend, tmp_path) as url:
        cache = ExecutionCache(connect(url))
        live = _running_execution(cache, "live")  # this process: alive
        elsewhere = _running_execution(cache, "elsewhere", "host:another-host boot:x pid:1 start:1")
        rebooted = _running_execution(cache, "rebooted", runner_identity().replace("boot:", "boot:old-"))
        code, out, err = cli("recover", "--db", url)
        assert code == 0, err
        assert out.splitlines() == [
            f"execution {rebooted} (task 't-rebooted' of run 'rebooted'): marked FAILED: host "
            f"{socket.gethostname()} restarted since its runner (pid {os.getpid()}) started",
            "marked 1 interrupted execution FAILED in 1 run; left RUNNING: 1 with a live runner, "
            "1 whose runner cannot be checked from this host (see --older-than)"]
        code, out, err = cli("recover", "--db", url, "--older-than", "7d", "--json")
        assert json.loads(out)["interrupted"] == [] and json.loads(out)["left_running"] == {"alive": 1, "unknown": 1}
        code, out, err = cli("recover", "--db", url, "--older-than", "0s", "--json")
        [taken] = json.loads(out)["interrupted"]
        assert taken["execution_id"] == elsewhere and taken["reason"].startswith("RUNNING on another host for ")
        state = {e.id: e.last_known_state for e in cache.store.get_executions()}
        assert state == {live: mlmd.Execution.RUNNING, elsewhere: mlmd.Execution.FAILED,
                         rebooted: mlmd.Execution.FAILED}


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("2h", 7200), ("7d", 604800), ("1h30m", 5400),
                                          ("PT2H", 7200), ("P7D", 604800), ("P1DT12H", 129600), ("PT0.5S", 0.5)])
def test_older_than_takes_short_and_iso_8601_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "P", "PT", "P1DT", "1e400h", "9" * 400 + "s",
                                  "2h\nrm -rf", "\x1b[31m2h"])
def test_a_bad_older_than_is_one_line_exit_2_and_creates_nothing(text, tmp_path):
    store = tmp_path / "missing" / "mlmd.sqlite"
    code, out, err = cli("recover", "--older-than", text, "--db", f"sqlite:///{store}")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("Error: --older-than ") and "not a duration" in err
    assert not store.parent.exists()


def test_recover_names_each_loop_iteration_by_its_index(tmp_path):
    """Every iteration's DAG is KFP's task_name of its loop: recover tells them apart by the task path
    run-pipeline reports (for-loop-2/0), not "DAG 'for-loop-2'" twice."""
    db = f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"
    path = compile_to(tmp_path / "loop.yaml", held_in_a_loop)
    info = tmp_path / "info"
    runner = subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", db,
                               "--pipeline-root", str(tmp_path / "root"), "--run-name", "looped", "--task-env", "host",
                               "--param", f"info={info}", "--param", f"release={tmp_path / 'release'}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: all(Path(f"{info}.{item}").exists() for item in "ab") or runner.poll() is not None,
             "both iterations' tasks to start")
    assert runner.poll() is None
    kill(runner)
    code, out, err = cli("recover", "--db", db, "--json")
    assert code == 0, err
    assert sorted(item["task"] for item in json.loads(out)["interrupted"]) == [
        "", "for-loop-2", "for-loop-2/0", "for-loop-2/0/hold", "for-loop-2/1", "for-loop-2/1/hold"]
    (tmp_path / "release").touch()


def test_recover_on_a_missing_store_is_one_line_and_creates_nothing(tmp_path):
    store = tmp_path / "missing" / "mlmd.sqlite"
    code, out, err = cli("recover", "--db", f"sqlite:///{store}")
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("Error: no MLMD store at ")
    assert not store.parent.exists()


# -- PID namespaces (containers, CI jobs, unshare): a PID seen from elsewhere proves nothing ------------

def _unshare() -> list[str]:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                                                         capture_output=True).returncode:
        pytest.skip("unshare --pid needs root (or user namespaces) and util-linux")
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def _recover_json(db: str, *prefix: str) -> dict:
    done = subprocess.run([*prefix, sys.executable, "-m", "mlmd_cache", "recover", "--db", db, "--json"],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_recover_from_another_pid_namespace_leaves_a_live_run_alone(tmp_path):
    """The runner's PID is not visible from the new namespace: unknown there, not gone."""
    namespace = _unshare()
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    runner, _ = start_runner(db, tmp_path, "r1")
    found = _recover_json(db, *namespace)
    assert found["interrupted"] == [] and found["left_running"]["alive"] == 0, found
    assert found["left_running"]["unknown"] == len(states(db, "r1")) >= 2, found  # the task and its DAGs
    assert {state for _, state in states(db, "r1").values()} == {"RUNNING"}
    assert _recover_json(db)["left_running"]["alive"] >= 2  # from the runner's own namespace: alive
    (tmp_path / "release").touch()
    assert runner.wait(timeout=DEADLINE) == 0, (tmp_path / "r1.log").read_text()
    assert {state for _, state in states(db, "r1").values()} == {"COMPLETE"}


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def test_a_dead_runner_in_another_pid_namespace_is_closed_only_after_its_lease_ran_out(tmp_path):
    """Killed in its namespace, the runner cannot be checked from here: its lease (10 s) decides,
    a whole lease after it ran out (at the earliest 18 s after the kill, its last beat at most 2 s
    before it): recover right after the kill leaves it alone, recover later closes it and its run."""
    namespace = _unshare()
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    path = compile_to(tmp_path / "held.yaml", held)
    info = tmp_path / "r1.json"
    log = open(tmp_path / "r1.log", "wb")
    outer = subprocess.Popen([*namespace, sys.executable, "-m", "mlmd_cache", "run-pipeline", path, "--db", db,
                              "--pipeline-root", str(tmp_path / "root"), "--run-name", "r1", "--lease", "10s",
                              "--param", f"info={info}", "--param", f"release={tmp_path / 'release'}"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: info.exists() or outer.poll() is not None, "the task to start")
        assert outer.poll() is None, (tmp_path / "r1.log").read_text()
        [runner] = _children(outer.pid)  # PID 1 of the new namespace: killing it ends everything in it
        os.kill(runner, signal.SIGKILL)
        killed = time.monotonic()
        outer.wait(timeout=DEADLINE)
    finally:
        if outer.poll() is None:
            outer.kill()
    task = RunRecords(db, "r1").one("hold")
    found = _recover_json(db)
    if time.monotonic() - killed < 18:  # else this machine is too slow to tell: the lease may be over
        assert found["interrupted"] == [] and found["left_running"]["unknown"] >= 3, found
    time.sleep(max(0.0, killed + 21 - time.monotonic()))  # the lease ran out a whole lease ago
    found = _recover_json(db)
    taken = {item["execution_id"]: item["reason"] for item in found["interrupted"]}
    assert taken[task.id].startswith("its lease of a cache key ran out ") and "no heartbeat from its runner (pid 1" \
        in taken[task.id], taken
    assert {state for _, state in states(db, "r1").values()} == {"FAILED"}  # the task and its run's DAGs
    assert _recover_json(db)["interrupted"] == []


def test_records_of_older_versions_without_a_pid_namespace_are_read_sensibly(tmp_path):
    """An older runner record (no ``pidns``) is alive when its very process (PID and start time) is
    visible here; a PID that is not visible is unknown: it may be a live runner in a container."""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as ended:
        pass
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    legacy = " ".join(part for part in runner_identity().split() if not part.startswith("pidns:"))
    live = _running_execution(cache, "live", legacy)
    unseen = _running_execution(cache, "unseen", legacy.replace(f"pid:{os.getpid()}", f"pid:{ended.pid}"))
    found = _recover_json(f"sqlite:///{tmp_path / 'mlmd.sqlite'}")
    assert found["interrupted"] == [] and found["left_running"] == {"alive": 1, "unknown": 1}, found
    state = {e.id: e.last_known_state for e in cache.store.get_executions()}
    assert state == {live: mlmd.Execution.RUNNING, unseen: mlmd.Execution.RUNNING}
