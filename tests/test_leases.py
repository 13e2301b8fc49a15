"""``mlmd-cache leases``: held and stale reservations of cache keys listed, and ``--prune`` removing the
records of finished keys while runners race for keys, in real processes on real SQLite, MariaDB
and PostgreSQL (issue 26, item 10)."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from mlmd_cache import connect
from mlmd_cache.cache.leases import RESERVATION_CONTEXT_TYPE

DEADLINE = 120.0

# Each runner executes every key of every round; the work appends to the key's log, checks all along
# that its own reservation is still stored, and takes a while, so that other runners wait for it.
RUNNER = textwrap.dedent("""
    import os, sys, time
    from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
    db, name, work, rounds, keys, gate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    # Long enough that no holder's lease runs out on a loaded machine (a stalled heartbeat is taken
    # over by design, and the work then runs twice): what is tested is the prune, not lease expiry.
    LEASE = 30
    cache = ExecutionCache(connect(db))
    check = connect(db)  # the runner's own look at the store, beside the cache's connection
    print("ready", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.01)
    for r in range(rounds):
        run = cache.pipeline_run("leases", f"{name}-{r}")
        for k in range(keys):
            key = f"r{r}k{k}"
            def work_(started, key=key):
                with open(os.path.join(work, key + ".log"), "a") as f:
                    f.write(name + "\\n")
                for _ in range(4):
                    reservation = started.reservation
                    if reservation is not None and not check.get_contexts_by_id([reservation.id]):
                        print(f"REMOVED {key} while held", flush=True)
                        sys.exit(3)
                    time.sleep(0.1)
                return Outputs(parameters={"key": key})
            task = Task("step", CacheKey.build(image="python:3.11", command=["step", key],
                                               output_parameters={"key": "STRING"}))
            done = cache.execute(run, task, work_, lease_seconds=LEASE)
            assert done.output_parameters["key"] == key
    print("ok", flush=True)
""")


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def db(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[str]:
    with backends.fresh_store(request.param, tmp_path / "store") as url:
        yield url


def leases(db: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "leases", "--db", db, "--json", *args],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def reservation_names(db: str) -> list[str]:
    try:
        return sorted(c.name for c in connect(db).get_contexts_by_type(RESERVATION_CONTEXT_TYPE))
    except Exception:  # no such type: nothing was ever reserved
        return []


def test_prune_while_runners_race_removes_only_finished_keys_and_each_key_runs_once(db, tmp_path):
    work, gate = tmp_path / "work", tmp_path / "gate"
    work.mkdir()
    rounds, keys, runners = 4, 3, 5
    processes = [subprocess.Popen([sys.executable, "-c", RUNNER, db, f"runner{n}", str(work), str(rounds), str(keys),
                                   str(gate)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n in range(runners)]
    for process in processes:  # each has opened the store (the first one made its schema)
        assert process.stdout.readline() == "ready\n", process.stderr.read()
    gate.touch()
    prunes = []
    deadline = time.monotonic() + DEADLINE
    while any(p.poll() is None for p in processes):  # prune all along, as soon as a key is done
        assert time.monotonic() < deadline, "the runners did not finish"
        prunes.append(leases(db, "--prune", "--older-than", "0s"))
    for process in processes:
        out, err = process.communicate(timeout=DEADLINE)
        assert process.returncode == 0, out + err
        assert out.strip().endswith("ok")
    removed_while_racing = sum(p["keys_removed"] for p in prunes)
    assert removed_while_racing > 0, prunes  # the prunes ran among the runners, not after them
    for p in prunes:  # what was removed was finished: its holder had completed
        assert all(r["state"] == "done" for r in p["removed"]), p
    # dedup held through the prunes: each key's work ran once, the other runners reused it
    for r in range(rounds):
        for k in range(keys):
            assert len((work / f"r{r}k{k}.log").read_text().splitlines()) == 1, (r, k)
    last = leases(db, "--prune", "--older-than", "0s")
    assert removed_while_racing + last["keys_removed"] >= rounds * keys
    assert reservation_names(db) == []


HOLDER = textwrap.dedent("""
    import os, sys, time
    from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
    db, release = sys.argv[1], sys.argv[2]
    cache = ExecutionCache(connect(db))
    task = Task("slow-train", CacheKey.build(image="python:3.11", command=["train"]))
    def work(started):
        print("holding", started.id, flush=True)
        while not os.path.exists(release):
            time.sleep(0.02)
        return Outputs()
    cache.execute(cache.pipeline_run("nightly", "run-7"), task, work)
""")


def test_leases_lists_the_held_key_with_its_task_run_runner_and_lease_and_stats_counts_it(sqlite_db, tmp_path):
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, sqlite_db, str(release)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line.startswith("holding "), holder.stderr.read()
        execution_id = int(line.split()[1])
        found = leases(sqlite_db)
        [held] = found["reservations"]
        assert held["state"] == "held" and held["task"] == "slow-train" and held["run"] == "run-7"
        assert held["execution_id"] == execution_id and held["pipeline"] == "nightly"
        assert held["runner"]["pid"] == holder.pid and held["runner"]["host"]
        assert 0 < held["lease_left_seconds"] <= 30 and held["since"].endswith("Z")
        text = subprocess.run([sys.executable, "-m", "mlmd_cache", "leases", "--db", sqlite_db],
                              capture_output=True, text=True, timeout=DEADLINE)
        assert text.returncode == 0, text.stderr
        header, row, summary = text.stdout.splitlines()
        assert header.split()[:4] == ["STATE", "PIPELINE", "KEY", "GEN"]
        assert row.split()[:6] == ["held", "nightly", held["fingerprint"][:12], "1", "slow-train", "run-7"]
        assert f"pid {holder.pid} on " in row
        assert summary == "1 held key, 0 stale; 0 finished keys (0 records: --prune removes them)"
        # a held key is never pruned, however old the asked age
        assert leases(sqlite_db, "--prune", "--older-than", "0s")["keys_removed"] == 0
        stats = subprocess.run([sys.executable, "-m", "mlmd_cache", "stats", "--db", sqlite_db],
                               capture_output=True, text=True, timeout=DEADLINE)
        assert "  held keys     1 now; mlmd-cache leases lists them" in stats.stdout.splitlines(), stats.stdout
        stats_json = subprocess.run([sys.executable, "-m", "mlmd_cache", "stats", "--db", sqlite_db, "--json"],
                                    capture_output=True, text=True, timeout=DEADLINE)
        assert json.loads(stats_json.stdout)["held_keys"] == 1
    finally:
        release.touch()
        holder.communicate(timeout=DEADLINE)
    assert holder.returncode == 0
    found = leases(sqlite_db, "--all")
    assert [r["state"] for r in found["reservations"]] == ["done"] and found["counts"]["held"] == 0
    assert leases(sqlite_db, "--prune", "--dry-run", "--older-than", "1h")["keys_removed"] == 0  # finished just now
    assert len(reservation_names(sqlite_db)) == 1
    pruned = leases(sqlite_db, "--prune", "--older-than", "0s")
    assert pruned["keys_removed"] == 1 and pruned["records_removed"] == 1
    assert reservation_names(sqlite_db) == []


def test_prune_over_an_mlmd_server_and_its_options_without_prune_are_one_line_errors(sqlite_db):
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "leases", "--db", "grpc://127.0.0.1:1", "--prune"],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Error: grpc://127.0.0.1:1 is an MLMD server, whose API cannot delete records: run --prune with --db naming "
        "its database (sqlite:///, mysql://, postgresql://)"]
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "leases", "--db", sqlite_db, "--dry-run"],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "--older-than and --dry-run go with --prune" in done.stderr
