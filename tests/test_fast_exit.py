"""run-pipeline's process ends without the interpreter's teardown (mlmd_cache._entry.exit_without_teardown,
~70 ms of a cached re-run): what it printed is all there, to a pipe or a file, with the same exit
codes; the atexit functions run; Python's own exit is kept when another thread would be waited for,
for the commands that did not ask, and under click's CliRunner (tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import compiler

from tests.startup_pipeline import startup_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # kfp's, compiling

REPO = Path(__file__).resolve().parent.parent

# The console script's entry, with an atexit function and an object whose __del__ runs only in
# Python's teardown (a module global): it tells whether the process was torn down.
SCRIPT = """
import atexit, os, sys, threading
atexit.register(lambda: os.write(2, b"atexit ran\\n"))
class Teardown:
    def __del__(self):
        os.write(2, b"torn down\\n")
sys.modules["__main__"].marker = Teardown()
if os.environ.get("HOLD_A_THREAD"):  # a non-daemon thread still running when the command ends
    event = threading.Event()
    threading.Thread(target=event.wait, args=(2,)).start()
sys.argv[0] = "mlmd-cache"
from mlmd_cache._entry import mlmd_cache
mlmd_cache()
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fast-exit") / "pipeline.yaml"
    compiler.Compiler().compile(startup_pipeline, str(path))
    return path


def command(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_a_run_ends_at_once_with_all_it_printed(pipeline: Path, tmp_path: Path) -> None:
    run = ["run-pipeline", str(pipeline), "--db", f"sqlite:///{tmp_path / 'mlmd.sqlite'}",
           "--pipeline-root", str(tmp_path / "root")]
    executed = command(*run, "--task-env", "host")
    assert executed.returncode == 0, executed.stderr
    assert ": 8 executed, 1 cached" in executed.stdout and executed.stdout.endswith("\n")
    assert "atexit ran" in executed.stderr and "torn down" not in executed.stderr
    cached = command(*run, "--json")  # a JSON line to a pipe: whole
    assert cached.returncode == 0, cached.stderr
    report = json.loads(cached.stdout)
    states = [task["state"] for task in report["tasks"].values()]
    assert report["succeeded"] and states.count("CACHED") == 9 and "COMPLETE" in states  # (the DAGs)
    assert "atexit ran" in cached.stderr and "torn down" not in cached.stderr
    with open(tmp_path / "out.txt", "w") as out:  # to a file
        done = subprocess.run([sys.executable, "-c", SCRIPT, *run], stdout=out, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and ": 9 cached" in (tmp_path / "out.txt").read_text()
    held = command(*run, HOLD_A_THREAD="1")  # Python's exit: it waits for the thread, then tears down
    assert held.returncode == 0 and ": 9 cached" in held.stdout
    assert "torn down" in held.stderr and "atexit ran" in held.stderr


def test_the_exit_codes_are_the_same(pipeline: Path, tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'mlmd.sqlite'}"]
    usage = command("run-pipeline", str(pipeline), *db, "--param", "nope=1")
    assert usage.returncode == 2 and "has no parameter 'nope'" in usage.stderr
    assert "Traceback" not in usage.stderr and "torn down" not in usage.stderr
    missing = command("run-pipeline", str(tmp_path / "missing.yaml"), *db)
    assert missing.returncode == 2 and "missing.yaml" in missing.stderr and "torn down" not in missing.stderr


def test_other_commands_exit_as_python_does(tmp_path: Path) -> None:
    done = command("--help")
    assert done.returncode == 0 and "run-pipeline" in done.stdout
    assert "torn down" in done.stderr and "atexit ran" in done.stderr
