"""Stop signals end every command in one line, whatever the moment (issue 23, items 7 and 8).

The console scripts (``mlmd-cache``, ``mlmd-lineage``, as installed) are run as real processes:

* SIGINT (and SIGTERM, SIGHUP) at seeded moments from the first instant the scripts' handling is
  in place (:mod:`mlmd_cache._entry`, before the CLI and its heavy imports): one line, exit 130, no
  traceback. The moment is taken from the process itself (its caught signals in /proc), not from a
  clock, so each delay lands at the same stage of start-up on a fast or a loaded machine; Python's
  own start-up before that (the interpreter and ``site``) is not the package's to handle.
* SIGHUP (a closed terminal, a dropped ssh) to ``run-pipeline`` in the middle of a task: the task
  process is stopped and nothing is left RUNNING in the store, as for SIGTERM and Ctrl-C.
* SIGHUP to ``serve``: it stops as on SIGTERM.
"""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest
from kfp import compiler, dsl
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import connect

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

BIN = Path(sys.executable).parent
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)  # in /proc/PID/status SigCgt: a handler is installed for it


def handling_installed(pid: int) -> bool:
    """Whether the process catches SIGTERM: Python does not by itself, mlmd_cache._entry does."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    except FileNotFoundError:
        pass
    return False


def signalled(command: List[str], signum: int, delay: float, stdin: Optional[int] = None) -> tuple[int, str, bool]:
    """Run ``command``, send ``signum`` ``delay`` seconds after the process installed its handling:
    (exit code, stdout and stderr together, whether the handling was ever seen installed)."""
    process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = False
    deadline = time.monotonic() + 30  # only a guard against a hang: no moment here is asserted
    while process.poll() is None and time.monotonic() < deadline:
        if handling_installed(process.pid):
            seen = True
            break
        time.sleep(0.0002)
    if seen:
        time.sleep(delay)
        process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    return process.returncode, out.decode("utf-8", "replace"), seen


@pytest.fixture(scope="module")
def silent_server() -> str:
    """A TCP port that accepts connections and never answers: a grpc:// store that keeps a command waiting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"grpc://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def commands(silent: str) -> dict[str, tuple[List[str], Optional[int]]]:
    """Commands that are still busy when the signal comes (so that the one line must be the
    interruption's): reading a key from a standard input that never ends, or waiting for a store
    that never answers. Each imports the CLI, then the modules it uses (ml_metadata, grpc)."""
    return {
        "lookup": ([str(BIN / "mlmd-cache"), "lookup", "--pipeline", "p", "--db", silent], subprocess.PIPE),
        "stats": ([str(BIN / "mlmd-cache"), "--db", silent, "stats"], subprocess.DEVNULL),
        "lineage runs": ([str(BIN / "mlmd-lineage"), "runs", "--db", silent], subprocess.DEVNULL),
        "python -m": ([sys.executable, "-m", "mlmd_cache", "fingerprint"], subprocess.PIPE),
    }


# Every 10 ms over the first 150 ms after the handling is in place (the CLI's import, the
# command's own imports, its work), each shifted by a seeded fraction of the step.
_RANDOM = random.Random(23)
EARLY = [step * 0.010 + _RANDOM.uniform(0, 0.010) for step in range(15)]


@pytest.mark.parametrize("name", ["lookup", "stats", "lineage runs", "python -m"])
def test_ctrl_c_at_any_early_moment_is_one_line(silent_server: str, name: str) -> None:
    command, stdin = commands(silent_server)[name]
    prog = "mlmd-lineage" if name.startswith("lineage") else "mlmd-cache"
    for delay in [0.0] + EARLY + [0.5, 1.0]:  # and surely in the command's own wait
        code, out, seen = signalled(command, signal.SIGINT, delay, stdin)
        assert seen, f"{name}: the stop signals' handling was never installed; output: {out}"
        assert "Traceback" not in out and "Aborted" not in out, (delay, out)
        assert out == f"{prog}: interrupted\n", (delay, out)
        assert code == 130, (delay, code, out)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_at_early_moments_are_one_line(silent_server: str, signum: int) -> None:
    command, stdin = commands(silent_server)["lookup"]
    for delay in [0.0] + EARLY[::3] + [1.0]:
        code, out, seen = signalled(command, signum, delay, stdin)
        assert seen and out == f"mlmd-cache: interrupted by {signal.Signals(signum).name}\n", (delay, out)
        assert code == 130, (delay, code, out)


def test_an_ignored_sighup_stays_ignored(silent_server: str) -> None:
    """nohup: SIGHUP ignored from the start is left so; SIGTERM still ends the command in one line."""
    command, stdin = commands(silent_server)["lookup"]
    process = subprocess.Popen(["nohup", *command], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not handling_installed(process.pid) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.001)
    time.sleep(1.0)  # the command is waiting for its input by now (no assert rests on it)
    process.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)  # still running: SIGHUP ignored
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert out.decode().splitlines()[-1:] == ["mlmd-cache: interrupted by SIGTERM"] and process.returncode == 130, out


# ---------------------------------------------------------------- SIGHUP to a run


@dsl.container_component
def sleeper(pid_file: str):
    # the task's shell writes its PID, then becomes the sleep: the process the runner must stop
    return dsl.ContainerSpec(image="alpine:3.19", command=["sh", "-c", 'echo $$ > "$0.tmp"; mv "$0.tmp" "$0"; '
                                                                      "exec sleep 60", pid_file])


@dsl.pipeline(name="hangup")
def hangup_pipeline(pid_file: str):
    sleeper(pid_file=pid_file)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not running
        return stat.read().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_sighup_stops_a_run_as_sigterm_does(tmp_path: Path, signum: int) -> None:
    pipeline = tmp_path / "hangup.yaml"
    compiler.Compiler().compile(hangup_pipeline, str(pipeline))
    db, pid_file = f"sqlite:///{tmp_path / 'store.sqlite'}", tmp_path / "task.pid"
    process = subprocess.Popen([str(BIN / "mlmd-cache"), "run-pipeline", str(pipeline), "--db", db, "--task-env", "host",
                                "--pipeline-root", str(tmp_path / "root"), "--param", f"pid_file={pid_file}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert pid_file.exists(), process.communicate(timeout=30)
    task_pid = int(pid_file.read_text())
    assert alive(task_pid)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err
    assert err.splitlines()[-1] == "run-pipeline: interrupted; running tasks marked FAILED", err
    store = connect(db, read_only=True)
    states = [execution.last_known_state for execution in store.get_executions()]
    assert states and mlmd.Execution.RUNNING not in states, states  # the DAG and the task: FAILED
    assert states.count(mlmd.Execution.FAILED) == 2, states
    deadline = time.monotonic() + 10
    while alive(task_pid) and time.monotonic() < deadline:  # stopped by the runner (SIGTERM, then SIGKILL)
        time.sleep(0.05)
    assert not alive(task_pid)


def test_sighup_stops_serve_as_sigterm_does(tmp_path: Path) -> None:
    process = subprocess.Popen([str(BIN / "mlmd-cache"), "serve", "--port", "0", "--db",
                                f"sqlite:///{tmp_path / 'store.sqlite'}"], stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert " on grpc://" in first, first
    process.send_signal(signal.SIGHUP)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 0, rest
    assert rest.splitlines() == ["mlmd-cache serve: SIGHUP: stopping (calls in flight may finish within 10 s)",
                                 "mlmd-cache serve: stopped"], rest


def test_a_signal_while_serve_writes_its_log_stops_it(tmp_path: Path) -> None:
    """A signal that arrives while serve's main thread is inside a write to stderr (a full pipe, a
    slow terminal): the stop is still logged and done, not "reentrant call inside BufferedWriter"
    (a handler that wrote the log line itself failed so, 1 CI run in many)."""
    import fcntl

    reader, writer = os.pipe()
    fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
    filler = b"x" * (4095) + b"\n"
    os.write(writer, filler)  # full: serve's first log line waits in write() until it is read
    process = subprocess.Popen([str(BIN / "mlmd-cache"), "serve", "--port", "0", "--db",
                                f"sqlite:///{tmp_path / 'store.sqlite'}"], stderr=writer)
    os.close(writer)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(f"/proc/{process.pid}/wchan") as wchan:
                if "pipe_write" in wchan.read():  # (anon_pipe_write on newer kernels)
                    break
            assert process.poll() is None
            time.sleep(0.01)
        else:
            pytest.fail("serve never wrote its first line")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # the handler runs while the write is still blocked
        with os.fdopen(reader, "rb") as pipe:
            reader = -1
            output = pipe.read()
    finally:
        if reader != -1:
            os.close(reader)
        process.kill() if process.poll() is None else None
    lines = output.decode()[len(filler):].splitlines()
    assert process.wait(timeout=30) == 0, lines
    assert " on grpc://" in lines[0], lines
    assert lines[1:] == ["mlmd-cache serve: SIGHUP: stopping (calls in flight may finish within 10 s)",
                         "mlmd-cache serve: stopped"], lines


def test_a_closed_terminal_stops_a_run_as_sigterm_does(tmp_path: Path) -> None:
    """The real SIGHUP: the run's controlling terminal goes away (an ssh session dropped): the kernel
    hangs it up, so that every write to it fails (EIO), and sends SIGHUP. The run still stops its
    task and marks it FAILED, and exits 130 (it used to fail with an internal error on its summary)."""
    import fcntl
    import select
    import termios

    pipeline = tmp_path / "hangup.yaml"
    compiler.Compiler().compile(hangup_pipeline, str(pipeline))
    db, pid_file = f"sqlite:///{tmp_path / 'store.sqlite'}", tmp_path / "task.pid"
    master, slave = os.openpty()
    process = subprocess.Popen([str(BIN / "mlmd-cache"), "run-pipeline", str(pipeline), "--db", db, "--task-env", "host",
                                "--pipeline-root", str(tmp_path / "root"), "--param", f"pid_file={pid_file}"],
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # its controlling terminal
    os.close(slave)
    shown = bytearray()
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline and process.poll() is None:
        if select.select([master], [], [], 0.05)[0]:  # the terminal's reader (a full pty would block the run)
            try:
                shown.extend(os.read(master, 65536))
            except OSError:
                break
    assert pid_file.exists(), bytes(shown)
    task_pid = int(pid_file.read_text())
    os.close(master)  # the terminal is gone: the kernel hangs it up and sends SIGHUP to the run
    assert process.wait(timeout=60) == 130, bytes(shown)
    states = [execution.last_known_state for execution in connect(db, read_only=True).get_executions()]
    assert states and mlmd.Execution.RUNNING not in states, states
    assert states.count(mlmd.Execution.FAILED) == 2, states
    deadline = time.monotonic() + 10
    while alive(task_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(task_pid)


# A command module whose main() has SIGINT raised inside a weakref callback (as importlib's
# module-lock callbacks are, while a command imports what it uses), where Python can only print the
# KeyboardInterrupt as "Exception ignored" with a traceback and go on; AFTER is the rest of main().
CALLBACK_INTERRUPT = (
    "import os, signal, time, weakref\n"
    "class Node: pass\n"
    "def main():\n"
    "    node = Node()\n"
    "    def callback(_):\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "        for _ in range(1000): pass  # the handler runs here, inside the callback\n"
    "    ref = weakref.ref(node, callback)\n"
    "    del node\n"
    "AFTER")


def run_entry(tmp_path: Path, main_module: str, python_m: bool = False, **modules: str) -> tuple[int, str, str]:
    """Run ``main_module`` (its source) as the console scripts' entry point runs a CLI (as
    ``python -m`` does with ``python_m``), ``modules`` (name=source) beside it: (exit code, stdout,
    stderr)."""
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "some_cli.py").write_text(main_module)
    (tmp_path / "some_main.py").write_text("from mlmd_cache._entry import _run\n_run('mlmd-cache', 'some_cli')\n")
    done = subprocess.run(
        [sys.executable, *(["-m", "some_main"] if python_m else [str(tmp_path / "some_main.py")])],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
        capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_a_stop_signal_python_cannot_pass_on_still_ends_the_command_in_one_line(tmp_path: Path) -> None:
    # The interruption is raised again where it propagates, while the command would go on.
    main_module = CALLBACK_INTERRUPT.replace("AFTER", "    time.sleep(5)\n    print('the command went on')\n")
    assert run_entry(tmp_path, main_module) == (130, "", "mlmd-cache: interrupted\n")


def test_an_interrupt_handled_inside_a_string_exec_still_exits_130_under_python_m(tmp_path: Path) -> None:
    # CPython marks the interpreter when a string exec (namedtuple, dataclasses and Cython module
    # set-up use them while a command imports what it uses) ends in KeyboardInterrupt, even if it is
    # handled; `python -m` then ends the process by SIGINT (-2) whatever exit code the command chose
    # (seen once in ~400 early Ctrl-Cs of `python -m mlmd_cache`). Deterministically here: the
    # command's SIGINT is raised inside such an exec.
    main_module = ("def main():\n"
                   "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(1000): pass', {})\n")
    assert run_entry(tmp_path, main_module, python_m=True) == (130, "", "mlmd-cache: interrupted\n")


def test_a_command_that_ends_before_its_held_up_interruption_ends_quietly(tmp_path: Path) -> None:
    # The interruption is raised where Python cannot pass it on and the command ends by itself
    # before it is raised again: a late signal, so exit 130 without a word, never SIGALRM (the
    # re-raise's timer) killing the process as Python resets its handlers at exit.
    main_module = CALLBACK_INTERRUPT.replace("AFTER", "    print('done')\n    raise SystemExit(0)\n")
    assert run_entry(tmp_path, main_module) == (130, "done\n", "")


def test_a_stop_signal_during_an_import_that_clears_exceptions_still_ends_the_command(tmp_path: Path) -> None:
    # The C code of an extension module being imported may clear a pending exception without a
    # trace (Ctrl-C while networkx imported xml.etree's C accelerator was lost: the command went on
    # waiting 5 s for its store, 1 in ~20 at that moment). A module that swallows everything while
    # it is imported stands for it, deterministically.
    swallowing = ("import os, signal\n"
                  "try:\n"
                  "    os.kill(os.getpid(), signal.SIGINT)\n"
                  "    for _ in range(1000): pass  # the handler runs here, inside the import\n"
                  "except BaseException:\n"
                  "    pass\n")
    main_module = ("import time\n"
                   "def main():\n"
                   "    import swallowing\n"
                   "    time.sleep(5)\n"
                   "    print('the command went on')\n")
    assert run_entry(tmp_path, main_module, swallowing=swallowing) == (130, "", "mlmd-cache: interrupted\n")
