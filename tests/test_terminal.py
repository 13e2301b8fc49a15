"""What `mlmd-cache run-pipeline` shows: on a terminal (a pseudo-terminal of 60 columns here) a live
table of the running tasks fitted to its width, Ctrl-C ending in FAILED and NOT_RUN lines and a
summary; elsewhere plain lines without escape codes; and the summary (text and --json) naming the
store, the pipeline's outputs and its metrics. Tasks wait for files the test writes, never for time.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kfp import compiler
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect
from mlmd_cache.store import records
from mlmd_cache.connection import redact_url
from mlmd_cache.runner.interrupts import deferred_stop_signals

from .pipelines import cli, example_pipelines

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

COLUMNS = 60
LONG_NAME = "wait-for-go-with-a-name-far-too-long-for-a-narrow-terminal"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


waits = example_pipelines().waits  # a long-named task waiting for a file, then score (the docs' Ctrl-C example)


@pytest.fixture
def workplace(tmp_path: Path) -> dict:
    path = tmp_path / "waits.yaml"
    compiler.Compiler().compile(waits, str(path))
    db = f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"
    go, started = tmp_path / "go", tmp_path / "started"
    args = ["run-pipeline", str(path), "--db", db, "--pipeline-root", str(tmp_path / "root"), "--run-name", "r1",
            "--param", f"go={go}", "--param", f"started={started}"]
    return {"args": args, "db": db, "go": go, "started": started}


class Terminal:
    """`mlmd-cache ARGS` on a pseudo-terminal of COLUMNS columns (its controlling terminal, so that
    \\x03 is Ctrl-C), everything it draws kept."""

    def __init__(self, args: list) -> None:
        primary, secondary = os.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env["TERM"] = "xterm"

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", *args], stdin=secondary,
                                        stdout=secondary, stderr=secondary, env=env,
                                        preexec_fn=controlling_terminal)
        os.close(secondary)
        self.primary, self.drawn = primary, ""

    def read_until(self, pattern: str, timeout: float = 120.0) -> None:
        """Read what is drawn until its text (escape codes taken out) matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text) and time.monotonic() < deadline:
            if not self._read(0.2):
                break
        assert re.search(pattern, self.text), f"{pattern!r} never drawn; drawn: {self.text[-2000:]!r}"

    def finish(self, timeout: float = 120.0) -> int:
        """Read to the end; the exit code (a run still going then is killed: the test failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            pass
        os.close(self.primary)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def send(self, data: bytes) -> None:
        os.write(self.primary, data)

    def _read(self, wait: float) -> bool:
        """False at the end (the program closed the terminal)."""
        ready, _, _ = select.select([self.primary], [], [], wait)
        if not ready:
            return self.process.poll() is None or self._read_now()
        return self._read_now()

    def _read_now(self) -> bool:
        try:
            chunk = os.read(self.primary, 65536)
        except OSError:  # EIO: the other end is closed and everything was read
            return False
        self.drawn += chunk.decode("utf-8", errors="replace")
        return bool(chunk)

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.drawn).replace("^C", "")  # the terminal echoes Ctrl-C as ^C

    @property
    def lines(self) -> list:
        """Every line drawn, redrawn ones included (each cursor return starts a line)."""
        return re.split(r"\r\n|\r|\n", self.text)


def wait_for(path: Path, process=None, timeout: float = 120.0) -> None:
    """Until the task has written ``path`` (it runs), or its run has ended."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and (process is None or process.poll() is None):
        time.sleep(0.05)
    assert path.exists()


def test_a_terminal_shows_a_live_table_of_the_running_tasks_fitted_to_its_width(workplace):
    terminal = Terminal(workplace["args"])
    try:
        terminal.read_until(r"0/2 tasks done, 1 running")
        wait_for(workplace["started"])
        live_rows = [line for line in terminal.lines if line.startswith("wait-for-go")]
        # the long name is cut with an ellipsis, and the row keeps its columns: state, elapsed time
        assert live_rows and all(re.fullmatch(r"wait-for-go-with-a-name-far-\S*… +running +\d+:\d\d *", row)
                                 for row in live_rows), live_rows
        workplace["go"].touch()
        terminal.read_until(r"run r1 of pipeline waits")
    finally:
        workplace["go"].touch()  # the run ends, whatever failed
        code = terminal.finish()
    assert code == 0, terminal.text
    assert max(len(line) for line in terminal.lines) <= COLUMNS, [l for l in terminal.lines if len(l) > COLUMNS]
    assert "2/2 tasks done, 0 running" in terminal.text
    # each finished task is a line in the same columns; the long name folds within its column
    assert re.search(r"wait-for-go-with-a\S* +EXECUTED +\d+\.\d\ds +execution 2", terminal.text)
    assert re.search(r"score +EXECUTED +\d+\.\d\ds +execution 3", terminal.text)
    after_table = terminal.text.rsplit("run r1 of pipeline waits", 1)[1]
    assert "running" not in after_table and "tasks done" not in after_table  # the table was taken away
    assert "output   Output = 0.5" in after_table and "accuracy = 0.75" in after_table


def test_ctrl_c_on_a_terminal_fails_the_running_task_and_tells_what_never_ran(workplace):
    terminal = Terminal(workplace["args"])
    try:
        terminal.read_until(r"0/2 tasks done, 1 running")
        wait_for(workplace["started"])
        terminal.send(b"\x03")
        terminal.read_until(r"run-pipeline: interrupted")
    finally:
        code = terminal.finish()
    assert code == 130, terminal.text
    after = terminal.text
    assert re.search(r"wait-for-go-with-a\S* +FAILED +\d+\.\d\ds +execution 2", after)
    assert "| the run was interrupted: its process was stopped" in after
    assert re.search(r"score +NOT_RUN +0\.00s +no execution", after)
    assert "(the run was interrupted before it started)" in after
    summary = terminal.text.rsplit("run r1 of pipeline waits", 1)[1]
    assert summary.startswith(": interrupted; 1 failed, 1 not_run")
    assert "store" in summary and "running" not in summary.replace("running tasks marked", "")
    assert max(len(line) for line in terminal.lines) <= COLUMNS
    executions = connect(workplace["db"]).get_executions()
    assert not [e for e in executions if e.last_known_state == mlmd.Execution.RUNNING]
    by_task = {records.read_property(e, "task_name"): e.last_known_state for e in executions}
    assert by_task == {"": mlmd.Execution.FAILED, LONG_NAME: mlmd.Execution.FAILED}  # score: no execution


def screen(drawn: str, rows: int = 24) -> list[str]:
    """The terminal's screen as a terminal emulator (pyte) draws ``drawn``: what a user sees, not
    the stream (a row rewritten in place, or erased, is not there)."""
    import pyte

    display = pyte.Screen(COLUMNS, rows)
    pyte.Stream(display).feed(drawn.replace("\n", "\r\n"))  # the tty's ONLCR, as the terminal gets it
    return [row.rstrip() for row in display.display]


def test_ctrl_c_on_a_terminal_leaves_no_stale_live_row_on_the_screen(workplace):
    """The live table is taken away before the final lines, also after the terminal echoed ^C."""
    terminal = Terminal(workplace["args"])
    try:
        terminal.read_until(r"0/2 tasks done, 1 running")
        wait_for(workplace["started"])
        terminal.read_until(r"running +0:0[1-9]")  # the live row has been drawn (and redrawn) a while
        terminal.send(b"\x03")
        terminal.read_until(r"run-pipeline: interrupted")
    finally:
        code = terminal.finish()
    assert code == 130, terminal.text
    shown = [row for row in screen(terminal.drawn) if row]
    assert not [row for row in shown if re.search(r"running +\d+:\d\d|tasks done", row)], shown
    assert shown[-1] == "run-pipeline: interrupted; running tasks marked FAILED", shown
    assert any(re.match(r"wait-for-go-with-a\S* +FAILED", row) for row in shown), shown


def test_ctrl_c_with_json_prints_the_interrupted_report(workplace):
    process = subprocess.Popen([sys.executable, "-m", "mlmd_cache", *workplace["args"], "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(workplace["started"], process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True and report["succeeded"] is False
    assert {name: task["state"] for name, task in report["tasks"].items()} == {LONG_NAME: "FAILED",
                                                                                "score": "NOT_RUN"}
    assert "\x1b" not in out + err


def test_output_that_is_not_a_terminal_is_plain_lines_and_a_summary(workplace):
    workplace["go"].touch()
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", *workplace["args"]], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(rf"{LONG_NAME} EXECUTED +\d+\.\d\ds  execution 2", lines[0])
    assert re.fullmatch(r"score {19} EXECUTED +\d+\.\d\ds  execution 3", lines[1])
    store = workplace["db"]
    environments = os.environ["MLMD_CACHE_ENV_DIR"]
    root = workplace["args"][workplace["args"].index("--pipeline-root") + 1]
    assert lines[2:] == ["run r1 of pipeline waits: 2 executed", f"  store    {store}", f"  outputs  {root}",
                         f"  tasks    --task-env venv ({environments})", "  output   Output = 0.5", lines[7]]
    assert re.fullmatch(r"  metrics  score/metrics \(artifact \d+\): accuracy = 0\.75", lines[7])


def test_with_a_server_store_the_summary_says_where_outputs_went(workplace, tmp_path):
    """A grpc:// store has no folder to put outputs beside: they go beside the default store, and the
    summary says where (it said nothing, and the help promised "beside the SQLite store")."""
    from .servers import serving

    workplace["go"].touch()
    args = workplace["args"]
    args = args[:args.index("--pipeline-root")] + args[args.index("--pipeline-root") + 2:]
    environment = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    with serving("--db", workplace["db"]) as (_, url):
        args[args.index("--db") + 1] = url
        done = subprocess.run([sys.executable, "-m", "mlmd_cache", *args], capture_output=True, text=True,
                              timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "data" / "mlmd-cache" / "pipeline-root"
    assert f"  outputs  {root}" in done.stdout.splitlines(), done.stdout
    assert (root / "r1").is_dir()


def test_json_has_the_store_the_pipelines_outputs_and_its_metrics(workplace):
    workplace["go"].touch()
    code, out, err = cli(*workplace["args"], "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["store"] == workplace["db"] and report["interrupted"] is False
    assert report["pipeline_root"] == workplace["args"][workplace["args"].index("--pipeline-root") + 1]
    assert report["outputs"] == {"parameters": {"Output": 0.5}, "artifacts": {}}
    [metrics] = report["metrics"]
    assert metrics["task"] == "score" and metrics["output"] == "metrics" and metrics["values"] == {"accuracy": 0.75}
    artifact = connect(workplace["db"]).get_artifacts_by_id([metrics["artifact_id"]])[0]
    assert records.read_property(artifact, "accuracy") == 0.75
    # a second run reuses everything: its outputs and metrics are the first run's
    code, out, err = cli(*[arg if arg != "r1" else "r2" for arg in workplace["args"]], "--json")
    again = json.loads(out)
    assert code == 0 and {t["state"] for t in again["tasks"].values()} == {"CACHED"}
    assert again["outputs"] == report["outputs"] and again["metrics"] == report["metrics"]


def test_the_summary_names_a_server_store_without_its_password(workplace, backends, tmp_path):
    """Against MySQL: the summary names the store, its password masked."""
    workplace["go"].touch()
    args = list(workplace["args"])
    with backends.fresh_store("mysql", tmp_path) as url:
        password = urlsplit(url).password
        args[args.index(workplace["db"])] = url
        code, out, err = cli(*args)
        assert code == 0, err
        code, report, err = cli(*[a if a != "r1" else "r2" for a in args], "--json")
    assert password and password not in out + report and f"  store    {redact_url(url)}" in out.splitlines()
    assert json.loads(report)["store"] == redact_url(url) and ":***@" in redact_url(url)


def test_a_stop_signal_waits_for_the_runs_next_safe_point():
    with deferred_stop_signals() as stop:
        woken = []
        stop.wake = lambda: woken.append(True)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here, amid a store write, say
        assert woken == [True]
        with pytest.raises(KeyboardInterrupt):
            stop.check()  # but here
        stop.check()  # once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
