"""One output-format option set for every list command of both CLIs (issue 26, item 9): --table (the
default text), --csv, --tsv, --nl (JSON lines) and --json, at most one (a one-line usage error
otherwise); `mlmd-lineage runs --pipeline/--since/--state`; shell completion; and the metric values
`mlmd-lineage show` prints (item 5). On a real SQLite store written by the runner, through the CLIs.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Metrics, Output

from lineage.cli import main as lineage_main
from mlmd_cache import ExecutionCache, connect
from mlmd_cache.cli import main as cache_main
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

MSE = 0.08572984938173277  # SQLite's MLMD keeps 0.08573 of it as a double


@dsl.component(base_image="python:3.11")
def score(n: int, metrics: Output[Metrics]):
    metrics.log_metric("mse", 0.08572984938173277)
    metrics.log_metric("n", n)


@dsl.component(base_image="python:3.11")
def refuse(n: int):
    raise SystemExit(f"refused {n}")


@dsl.pipeline(name="scores")
def scores(n: int = 3):
    score(n=n)


@dsl.pipeline(name="refusals")
def refusals(n: int = 3):
    refuse(n=n)


class Store:
    """scores ran twice (s-1 executes, s-2 CACHED), refusals once (r-1 FAILED)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "mlmd.sqlite"
        self.db = f"sqlite:///{self.path}"
        cache = ExecutionCache(connect(self.db))
        self.reports = {}
        for function, runs in ((scores, ("s-1", "s-2")), (refusals, ("r-1",))):
            compiled = root / f"{function.name}.yaml"
            compiler.Compiler().compile(function, str(compiled))
            pipeline = load_pipeline(str(compiled))
            for run in runs:
                self.reports[run] = run_pipeline(cache, pipeline, run_name=run, pipeline_root=root / "root")
        self.pipeline_file = root / "scores.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("formats"))


def invoke(command, *args: str):
    result = CliRunner().invoke(command, list(args))
    return result.exit_code, result.stdout, result.stderr


def lineage(*args: str):
    return invoke(lineage_main, *args)


def rows_of(text: str, delimiter: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def list_commands(store: Store) -> list[tuple[object, list[str]]]:
    s = store
    score_execution = s.reports["s-1"].tasks["score"].execution_id
    return [
        (lineage_main, ["runs", "--db", s.db]),
        (lineage_main, ["show", "run", "s-1", "--db", s.db]),
        (lineage_main, ["show", f"e:{score_execution}", "--db", s.db]),
        (lineage_main, ["upstream", f"e:{score_execution}", "--db", s.db]),
        (lineage_main, ["downstream", f"e:{score_execution}", "--db", s.db]),
        (cache_main, ["stats", "--db", s.db]),
        (cache_main, ["index", "--dry-run", "--db", s.db]),
        (cache_main, ["recover", "--dry-run", "--db", s.db]),
        (cache_main, ["invalidate", "--list", "--db", s.db]),
        (cache_main, ["plan", str(s.pipeline_file), "--db", s.db]),
        (cache_main, ["envs", "--env-dir", str(s.path.parent / "no-envs")]),
        (cache_main, ["leases", "--all", "--db", s.db]),
        (cache_main, ["leases", "--prune", "--dry-run", "--older-than", "0s", "--db", s.db]),
    ]


def test_every_list_command_takes_every_format(store):
    for command, args in list_commands(store):
        code, table, err = invoke(command, *args)
        assert code == 0, (args, err)
        assert invoke(command, *args, "--table")[1] == table, args  # --table is the default
        code, json_text, err = invoke(command, *args, "--json")
        assert code == 0 and isinstance(json.loads(json_text), dict), (args, err)
        code, comma, err = invoke(command, *args, "--csv")
        assert code == 0, (args, err)
        code, tab, _ = invoke(command, *args, "--tsv")
        code, lines, _ = invoke(command, *args, "--nl")
        header = comma.splitlines()[0].split(",")
        assert tab.splitlines()[0].split("\t") == header, args
        by_comma, by_tab = rows_of(comma, ","), rows_of(tab, "\t")
        assert by_comma == by_tab, args
        objects = [json.loads(line) for line in lines.splitlines()]
        assert len(objects) == len(by_comma), args
        for row, obj in zip(by_comma, objects):  # the same rows: each CSV cell is the JSON line's field
            for column, cell in row.items():
                value = obj.get(column)
                expected = "" if value is None else (json.dumps(value, sort_keys=True) if isinstance(
                    value, (list, dict, bool)) else str(value))
                assert cell == expected, (args, column)


@pytest.mark.parametrize("command, args", [
    (lineage_main, ["runs", "--csv", "--json"]),
    (lineage_main, ["upstream", "1", "--nl", "--tsv"]),
    (cache_main, ["stats", "--table", "--csv"]),
    (cache_main, ["envs", "--json", "--nl"]),
])
def test_two_formats_are_one_usage_line(command, args):
    code, out, err = invoke(command, *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("Error: give one output format, not --"), err


def test_the_rows_of_runs_show_and_trees(store):
    s = store
    code, out, _ = lineage("runs", "--db", s.db, "--csv")
    runs = rows_of(out, ",")
    assert [(r["run"], r["pipeline"], r["state"]) for r in runs] == [
        ("r-1", "refusals", "failed"), ("s-2", "scores", "complete"), ("s-1", "scores", "complete")]
    assert (runs[1]["executed"], runs[1]["cached"]) == ("0", "1")
    code, out, _ = lineage("show", "run", "s-2", "--db", s.db, "--nl")
    [execution] = [json.loads(line) for line in out.splitlines()]
    assert (execution["task"], execution["state"]) == ("score", "CACHED")
    assert execution["cached_from"] == s.reports["s-1"].tasks["score"].execution_id
    score_execution = s.reports["s-1"].tasks["score"].execution_id
    [metrics] = json.loads(lineage("show", "run", "s-1", "--db", s.db, "--json")[1])["artifacts"]
    code, out, _ = lineage("upstream", f"a:{metrics['id']}", "--db", s.db, "--tsv")
    tree = rows_of(out, "\t")
    assert [(r["level"], r["kind"]) for r in tree] == [("0", "artifact"), ("1", "execution"), ("1", "execution")]
    assert {r["node"] for r in tree[1:]} == {f"e:{score_execution}", f"e:{s.reports['s-2'].tasks['score'].execution_id}"}


def test_runs_are_chosen_by_pipeline_since_and_state(store, tmp_path):
    s = store
    code, out, _ = lineage("runs", "--db", s.db, "--pipeline", "scores", "--nl")
    assert [json.loads(line)["run"] for line in out.splitlines()] == ["s-2", "s-1"]
    code, out, _ = lineage("runs", "--db", s.db, "--state", "FAILED", "--csv")
    assert [r["run"] for r in rows_of(out, ",")] == ["r-1"]
    code, out, _ = lineage("runs", "--db", s.db, "--pipeline", "scores", "-n", "1", "--csv")
    assert [r["run"] for r in rows_of(out, ",")] == ["s-2"]  # the newest of those chosen
    code, out, _ = lineage("runs", "--db", s.db, "--pipeline", "nope")
    assert code == 0 and out == "no pipeline runs chosen by --pipeline, --since or --state\n"

    # A copy of the store where s-1 was made 30 days ago (its context's creation time, in MLMD's table)
    old = tmp_path / "old.sqlite"
    old.write_bytes(s.path.read_bytes())
    with sqlite3.connect(old) as db:
        db.execute("UPDATE Context SET create_time_since_epoch = ? WHERE name = 's-1'",
                   (int((time.time() - 30 * 86400) * 1000),))
    code, out, _ = lineage("runs", "--db", f"sqlite:///{old}", "--since", "7d", "--csv")
    assert [r["run"] for r in rows_of(out, ",")] == ["r-1", "s-2"]
    code, out, _ = lineage("runs", "--db", f"sqlite:///{old}", "--since", "P60D", "--pipeline", "scores", "--csv")
    assert [r["run"] for r in rows_of(out, ",")] == ["s-2", "s-1"]


@pytest.mark.parametrize("args, message", [
    (["--since", "7x"], "Error: --since '7x': not a duration"),
    (["--state", "broken"], "Error: Invalid value for '--state': 'broken' is not one of"),
])
def test_bad_run_filters_are_one_line(args, message, tmp_path):
    code, out, err = lineage("runs", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}", *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith(message), err
    assert not (tmp_path / "none.sqlite").exists()  # told before the store is opened


def test_show_prints_the_exact_metric_values(store):
    s = store
    code, out, err = lineage("show", "run", "s-2", "--db", s.db)
    assert code == 0, err
    metrics = [line for line in out.splitlines() if line.startswith("  metrics  ")]
    assert metrics == [f"  metrics  score/metrics (#{metrics[0].split('#')[1].split(')')[0]}): mse = {MSE!r}, n = 3"]
    code, out, _ = lineage("show", f"e:{s.reports['s-1'].tasks['score'].execution_id}", "--db", s.db)
    assert f"metrics: mse = {MSE!r}, n = 3" in out


def test_csv_on_a_terminal_shows_control_characters_escaped():
    """CSV into a pipe is exact; on a terminal, stored text does not act on it (as every table)."""
    import pty

    script = ("from mlmd_cache.cli.output import write_rows\n"
              "write_rows('csv', ('name',), [{'name': 'a\\x1b[31mred'}])\n")
    piped = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert piped.stdout == "name\na\x1b[31mred\n"
    leader, follower = pty.openpty()
    done = subprocess.run([sys.executable, "-c", script], stdout=follower, stderr=subprocess.PIPE, check=True)
    os.close(follower)
    shown = os.read(leader, 1000).decode()
    os.close(leader)
    assert "\x1b" not in shown and "a\\x1b[31mred" in shown, (shown, done.stderr)


@pytest.mark.parametrize("program, variable", [("mlmd-cache", "_MLMD_CACHE_COMPLETE"),
                                               ("mlmd-lineage", "_MLMD_LINEAGE_COMPLETE")])
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_are_produced(program, variable, shell):
    script = Path(sys.executable).parent / program
    if not script.exists():
        pytest.skip(f"the {program} console script is not installed (pip install -e .)")
    done = subprocess.run([str(script)], env={**os.environ, variable: f"{shell}_source"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{variable}={shell}_complete" in done.stdout, done.stdout[:500]
    # and what it asks for: the options and choices of a list command
    asked = subprocess.run([str(script)], env={**os.environ, variable: "bash_complete",
                                                 "COMP_WORDS": f"{program} {'runs' if 'lineage' in program else 'stats'} --c",
                                                 "COMP_CWORD": "2"}, capture_output=True, text=True, timeout=60)
    assert "plain,--csv" in asked.stdout.splitlines(), asked.stdout
