"""A task process never outlives its runner.

Each task runs in its own session and process group (so that stopping it stops its children), which
also means that nothing stops it when the runner is killed: ``kill -9`` of ``run-pipeline`` left
tasks running for ever. Two guards, because neither covers everything alone:

* the task's first process gets ``PR_SET_PDEATHSIG(SIGKILL)`` (:func:`with_death_signal`, Linux):
  the kernel kills it when the thread that started it ends. util-linux's ``setpriv --pdeathsig``
  arms it between fork and exec, so that no Python code runs in the child of a threaded process
  (a ``preexec_fn`` runs the interpreter's fork handlers there, and gRPC's abort the child now and
  then, exit -6); ``preexec_fn`` is the fallback where ``setpriv`` is missing. The runner starts each task from the
  worker thread that then waits for it, so that thread lives exactly as long as the task;
* a watchdog process per run (this file, run as a script: it imports nothing of the package, so it
  starts in milliseconds) reads a pipe whose other end only the runner holds. The runner writes
  ``+PGID`` when a task's process group starts and ``-PGID`` when it has ended. When the pipe
  closes without ``-`` for every group, the runner is gone: the watchdog sends SIGTERM to each
  remaining group, and SIGKILL to what is still there 2 s later. That reaches the task's children
  too (a lightweight component is ``sh`` running ``python``), which the death signal does not.

A task of ``--task-env docker`` (:mod:`.docker`) is a container, which neither guard reaches: killing
its ``docker run`` client leaves it running in the daemon. The runner writes ``+c NAME`` before the
container can exist and ``-c NAME`` once it has removed it; the watchdog runs ``docker rm -f`` for
the names left when the pipe closes (the ``docker`` of the runner's ``PATH``), before it stops the
process groups, in parallel with them.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

__all__ = ["Watchdog", "die_with_parent", "with_death_signal"]

_GRACE_SECONDS = 2.0
_REMOVE_SECONDS = 60.0  # `docker rm -f` of the containers left: a daemon that takes longer is not answering
# A Docker container name; anything else on a `+c` line is ignored (it becomes an argument of docker).
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PR_SET_PDEATHSIG = 1


def _prctl() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread that forked it ends,
    or None where there is no ``prctl`` (not Linux). Resolved here, in the parent: the child of a
    threaded process should do as little as possible between fork and exec."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before the death signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_death_signal(command: Sequence[str]) -> tuple[list[str], Optional[Callable[[], None]]]:
    """``command`` made to die with the thread that starts it, and the ``preexec_fn`` that needs
    (None with ``setpriv``, which execs the command itself: its PID and exit code are the command's;
    a program that cannot start exits 127 with setpriv's message on its standard error)."""
    if _SETPRIV:
        return [_SETPRIV, "--pdeathsig", "KILL", "--", *command], None
    return list(command), die_with_parent()


class Watchdog:
    """The runner's end of the watchdog: started at the first :meth:`register`, stopped by :meth:`close`.
    Every method may be called from any thread; none raises (a watchdog that cannot start or has died
    leaves the death signal as the only guard)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._failed = False

    def _start(self) -> None:
        try:
            # -I -S: nothing from the environment or site-packages; the script needs only the stdlib.
            # Its own session: a Ctrl-C or hang-up aimed at the runner's terminal does not stop it.
            self._process = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, cwd="/", start_new_session=True)
        except OSError:
            self._failed = True

    def _send(self, line: str) -> None:
        with self._lock:
            if self._process is None and not self._failed:
                self._start()
            if self._process is None or self._process.stdin is None:
                return
            try:
                self._process.stdin.write(line.encode() + b"\n")
                self._process.stdin.flush()
            except (OSError, ValueError):  # the watchdog is gone (killed); the death signal still holds
                self._failed = True

    def register(self, pgid: int) -> None:
        """A task's process group has started."""
        self._send(f"+{pgid}")

    def unregister(self, pgid: int) -> None:
        """A task's process group has ended (or was stopped)."""
        if self._process is not None:
            self._send(f"-{pgid}")

    def register_container(self, name: str) -> None:
        """A task's container may come to exist (removed with ``docker rm -f`` if the runner dies)."""
        self._send(f"+c {name}")

    def unregister_container(self, name: str) -> None:
        """A task's container has been removed."""
        if self._process is not None:
            self._send(f"-c {name}")

    def close(self) -> None:
        """The run has ended: the watchdog exits (stopping any group and removing any container still
        registered)."""
        with self._lock:
            process, self._process = self._process, None
            self._failed = True
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=_GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop(groups: set[int]) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline and any(_alive(pgid) for pgid in groups):
        time.sleep(0.05)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def _remove_containers(names: set[str]) -> Optional[subprocess.Popen]:
    """``docker rm -f`` of ``names``, started (not waited for), or None when there is no docker."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        return subprocess.Popen([docker, "rm", "--force", *sorted(names)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end tells this process to act
    groups: set[int] = set()
    containers: set[str] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip().decode("ascii", "replace")
        if line[:3] in ("+c ", "-c ") and _CONTAINER_NAME.match(line[3:]):
            (containers.add if line[0] == "+" else containers.discard)(line[3:])
        elif line[:1] in ("+", "-") and line[1:].isdigit() and int(line[1:]) > 1:
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    # The containers first: their `docker run` clients are in the groups, and killing a client
    # leaves its container running.
    removing = _remove_containers(containers) if containers else None
    if groups:
        _stop(groups)
    if removing is not None:
        try:
            removing.wait(timeout=_REMOVE_SECONDS)
        except subprocess.TimeoutExpired:
            removing.kill()


if __name__ == "__main__":
    _main()
