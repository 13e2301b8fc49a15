"""``mlmd-lineage explain`` on a FAILED execution names its ``stderr.log`` and shows its last lines,
in text (made printable) and ``--json`` (issue 26, item 8). (no ``from __future__ import
annotations``: KFP reads the components' annotations as types)"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl

from mlmd_cache import connect
from mlmd_cache.store import records
from tests.pipelines import IMAGE, compile_to

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice


@dsl.component(base_image=IMAGE)
def crash(rows: int) -> str:
    import sys

    for n in range(rows):
        print(f"loading shard {n}", file=sys.stderr)
    print("bad byte \x1b[31m in red", file=sys.stderr)
    raise SystemExit("out of patience")


@dsl.pipeline(name="crashing")
def crashing(rows: int = 15):
    crash(rows=rows)


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


def test_explain_of_a_failed_task_prints_its_stderr_log_and_last_lines(sqlite_db, tmp_path):
    path = compile_to(tmp_path / "crashing.yaml", crashing)
    run = command("-m", "mlmd_cache", "run-pipeline", path, "--db", sqlite_db, "--pipeline-root", str(tmp_path / "root"),
                  "--run-name", "run-1", "--json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)["tasks"]["crash"]
    assert report["state"] == "FAILED"
    [log] = (tmp_path / "root").rglob("stderr.log")  # the task's directory under the run's pipeline root
    [execution] = connect(sqlite_db).get_executions_by_id([report["execution_id"]])
    assert records.read_property(execution, records.STDERR_LOG) == str(log)  # recorded with FAILED

    explained = command("-m", "lineage", "explain", str(report["execution_id"]), "--db", sqlite_db)
    assert explained.returncode == 0, explained.stderr
    lines = explained.stdout.splitlines()
    expected_tail = log.read_text().splitlines()[-10:]
    assert lines[:3] == [f"execution {report['execution_id']} (task crash, run run-1): FAILED",
                         "  the execution is FAILED", f"  its stderr, {log}, ends:"]
    shown = lines[3:13]
    assert [line[4:] for line in shown if "\\x1b" not in line] == [t for t in expected_tail if "\x1b" not in t]
    assert "    bad byte \\x1b[31m in red" in shown  # escaped, never sent to the terminal
    assert "\x1b" not in explained.stdout and shown[-1] == "    out of patience"

    as_json = command("-m", "lineage", "explain", str(report["execution_id"]), "--db", sqlite_db, "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["outcome"] == "failed"
    assert document["stderr_log"] == {"path": str(log), "last_lines": expected_tail}

    log.unlink()  # the pipeline root was cleaned up: the path is still told
    gone = command("-m", "lineage", "explain", str(report["execution_id"]), "--db", sqlite_db)
    assert f"  its stderr was {log} (no longer readable here)" in gone.stdout.splitlines()
