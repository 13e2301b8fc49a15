"""The console scripts ``mlmd-cache`` and ``mlmd-lineage`` (and ``python -m``): SIGINT, SIGTERM and
SIGHUP end any command in one line, from the first moment on.

Importing a CLI takes a tenth of a second (click and the commands' modules) and a command then
imports what it uses (ml_metadata, grpc, the KFP SDK: most of a second). Python's own SIGINT handler
raises ``KeyboardInterrupt`` wherever that is, a traceback of fifteen lines; SIGTERM and SIGHUP (a
closed terminal, a dropped ssh) would kill the process where it stands, leaving a run's executions
RUNNING as ``kill -9`` does. So this module, which imports only ``os``, ``signal`` and ``sys``,
installs the handling before anything else is imported:

* while the CLI is imported, a stop signal ends the process at once with one line (exit 130):
  nothing has been done yet;
* while the command runs, it raises ``KeyboardInterrupt`` (SIGTERM and SIGHUP as Ctrl-C does), which
  a command that opened something handles (run-pipeline stops its tasks and marks them FAILED,
  serve stops serving), and which else ends the command with one line and exit code 130
  (:func:`exit_interrupted`, called by the command groups); inside an import, or where Python cannot
  pass an exception on, it is raised a moment later, where it propagates;
* once the command is done, a late one ends the process without a word.

A signal that was ignored when the process started (``nohup`` ignores SIGHUP) stays ignored. The
only moment left to Python is its own start-up, before this module runs (the interpreter and
``site``, a few milliseconds): there Python's handler still answers Ctrl-C.
"""
from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Callable, NoReturn, Optional

__all__ = ["STOP_SIGNALS", "exit_interrupted", "exit_without_teardown", "interrupt_pending", "interrupted_line",
           "leave_a_hung_up_terminal", "mlmd_cache", "mlmd_lineage", "stop_signals_raise"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODE = 130  # as for Ctrl-C, whichever signal it was (run-pipeline has always said 130 for SIGTERM too)

_received: list[int] = []
_active = False  # the handlers of this module are the process's (not so under click's CliRunner, say)
_interrupting = False  # a stop signal raises KeyboardInterrupt (while a command runs)
_prog = ""  # the command's name as the console script has it (click's is "python -m mlmd_cache" under -m)
_pending = False  # a stop signal's KeyboardInterrupt was raised where it could not propagate (see _unraisable)
_without_teardown = False  # the command asked to end without the interpreter's teardown (exit_without_teardown)


def stop_signals_raise() -> bool:
    """Whether the console scripts' handling is in place for the command now running: SIGTERM and
    SIGHUP raise ``KeyboardInterrupt`` as Ctrl-C does (a moment later inside an import)."""
    return _active and _interrupting


def interrupt_pending() -> bool:
    """Whether a stop signal came during the command and its ``KeyboardInterrupt`` has not reached
    the command yet: it was raised inside a C extension's callback, where Python can only report it
    (grpc's blocking calls check for signals there every 0.2 s, and go on waiting until their
    deadline). A command about to report a failure reports the interruption instead."""
    return _pending


def interrupted_line(prog: str) -> str:
    """``PROG: interrupted``, naming the signal unless it was SIGINT (Ctrl-C)."""
    signum = _received[-1] if _received else signal.SIGINT
    return f"{prog}: interrupted" + ("" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}")


def _write_line(text: str) -> None:
    try:  # straight to the file descriptor: no buffer to flush; a hung-up terminal (EIO) is no reason to fail
        os.write(2, (text + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def leave_a_hung_up_terminal() -> None:
    """Point standard output and error at /dev/null where they are a terminal that has gone away
    (SIGHUP's usual cause: every write to it fails with EIO), so that what a command does as it
    stops (a run stops its tasks and marks its executions) does not fail on telling it."""
    import errno
    import termios

    for fd in (1, 2):
        try:  # (not os.isatty first: it says False for a hung-up terminal too)
            termios.tcgetattr(fd)
        except (OSError, termios.error) as error:  # ENOTTY: not a terminal, left as it is
            if error.args and error.args[0] == errno.EIO:
                try:
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, fd)
                    os.close(null)
                except OSError:
                    pass


def _install(handler: Callable[[int, Optional[FrameType]], None]) -> None:
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP, a background job's SIGINT
            signal.signal(signum, handler)


def _quiet_exit(signum: int, frame: Optional[FrameType]) -> None:
    """After the command (or after its one line was written): end now, without another word."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe or a hung-up terminal: nothing more to say anyway
            pass
    os._exit(EXIT_CODE)


def exit_interrupted(prog: str) -> NoReturn:
    """End a command that a stop signal interrupted: one line on stderr, exit code 130; a further
    signal while the command unwinds ends the process at once, without another line."""
    global _interrupting, _pending
    _interrupting = _pending = False
    if _active:
        signal.setitimer(signal.ITIMER_REAL, 0)  # a re-raise still due (see _raise_later)
        prog = _prog
        _install(_quiet_exit)
    try:
        sys.stdout.flush()
    except Exception:  # a closed pipe: the line below still goes to stderr
        pass
    _write_line(interrupted_line(prog))
    sys.exit(EXIT_CODE)


def _importing(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` runs inside an import (the import machinery is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib."):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """While the command runs: a stop signal raises ``KeyboardInterrupt``, except inside an import,
    where the C code of an extension module being set up may clear it without a trace (seen: Ctrl-C
    while networkx imported xml.etree's C accelerator was lost, and the command went on waiting for
    its store); there it is raised as soon as no import runs (:func:`_raise_later`)."""
    if not _interrupting:  # the command is over, its handlers not yet all swapped for _quiet_exit
        _quiet_exit(signum, frame)
    _received.append(signum)
    if signum == signal.SIGHUP:
        leave_a_hung_up_terminal()
    if _importing(frame):
        _raise_later()
        return
    raise KeyboardInterrupt


def _raise_later() -> None:
    """Raise the stop signal's ``KeyboardInterrupt`` 5 ms from now, where it can propagate; until it
    is raised, :func:`interrupt_pending` says so."""
    global _pending
    _pending = True
    signal.signal(signal.SIGALRM, _raise_pending)
    signal.setitimer(signal.ITIMER_REAL, 0.005)


def _raise_pending(signum: int, frame: Optional[FrameType]) -> None:
    global _pending
    if not (_interrupting and _pending):  # the command is unwinding or done
        return
    current = signal.getsignal(signal.SIGINT)
    if current is not _interrupt and callable(current):  # a run now defers stop signals to a safe point
        _pending = False
        current(signal.SIGINT, frame)
        return
    if _importing(frame):
        _raise_later()
        return
    _pending = False
    raise KeyboardInterrupt


def _unraisable(report: "sys.UnraisableHookArgs", default: Callable = sys.__unraisablehook__) -> None:
    """A stop signal's ``KeyboardInterrupt`` raised where Python cannot pass it on (a weakref callback
    of the import machinery, a ``__del__``, a callback of grpc's wait) would be printed as "Exception
    ignored" with a traceback, and the command would go on: it is raised again, where it can
    propagate (:func:`_raise_later`)."""
    if issubclass(report.exc_type, KeyboardInterrupt) and _interrupting:
        _raise_later()
        return
    default(report)


def _run(prog: str, module: str) -> NoReturn:
    def exit_now(signum: int, frame: Optional[FrameType]) -> None:  # while the CLI is imported
        _received.append(signum)
        if signum == signal.SIGHUP:
            leave_a_hung_up_terminal()
        _write_line(interrupted_line(prog))
        os._exit(EXIT_CODE)

    _install(exit_now)
    import importlib

    main = importlib.import_module(module).main
    global _active, _prog, _interrupting
    _active, _prog, _interrupting = True, prog, True
    sys.unraisablehook = _unraisable
    try:
        try:
            _install(_interrupt)  # (in the try: the first handler swapped in may be called before the last is)
            main()  # click's standalone mode: always ends in SystemExit
        except KeyboardInterrupt:  # one that came before or after the command groups' own handling
            exit_interrupted(prog)
        finally:
            _interrupting = False
            _install(_quiet_exit)
            signal.setitimer(signal.ITIMER_REAL, 0)  # (its SIGALRM would end the process once Python resets handlers)
            _forget_interrupts_that_were_handled()
            if _pending:  # the command ended before its interruption could reach it: a late signal
                _quiet_exit(signal.SIGINT, None)
        sys.exit(0)
    except SystemExit as done:
        _exit_now(done)  # when the command asked for it and nothing is left to Python's exit
        raise


def exit_without_teardown() -> None:
    """Called by a command (run-pipeline) whose process has nothing left for Python's teardown when it
    is done: the console script then ends it at once (:func:`_exit_now`). No effect elsewhere (a
    command called in a process of its own, as tests call them)."""
    global _without_teardown
    _without_teardown = True


def _exit_now(done: SystemExit) -> None:
    """End the process with ``done``'s exit code without the interpreter's teardown, which frees every
    object and module one by one: with ML Metadata, grpc and protobuf loaded, ~70 ms after a run
    that took ~300 ms. What Python's exit does that matters is done first: the standard streams are
    flushed and the ``atexit`` functions run (logging's flush, ``weakref.finalize`` clean-ups).
    Returns, and Python exits as usual, unless the command asked for it (:func:`exit_without_teardown`),
    or when the code is no number, another thread that Python would wait for still runs, or a stream
    cannot be flushed (a closed pipe: Python's exit then tells it, as always). Every file the command
    wrote is closed by then (``with`` blocks); the store's connection is dropped as a killed process's
    is, every transaction committed."""
    code = 0 if done.code is None else done.code
    if not (_without_teardown and _active and isinstance(code, int) and -2**31 <= code < 2**31):
        return
    import threading

    if any(thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
           for thread in threading.enumerate()):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:
        return
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # an atexit function's last words to a closed pipe: nothing to add
            pass
    os._exit(int(code))


def _forget_interrupts_that_were_handled() -> None:
    """CPython marks an interpreter whose string ``exec`` (namedtuple, dataclasses, Cython's module
    set-up) ended in ``KeyboardInterrupt``, even when a caller handled it; under ``python -m`` it then
    ends by SIGINT (exit status -2) instead of with the exit code the command chose. The mark is
    cleared when a string ``exec`` starts, so one that does nothing clears it."""
    exec("pass", {})


def mlmd_cache() -> NoReturn:
    """The ``mlmd-cache`` command (:mod:`mlmd_cache.cli`)."""
    _run("mlmd-cache", "mlmd_cache.cli")


def mlmd_lineage() -> NoReturn:
    """The ``mlmd-lineage`` command (:mod:`lineage.cli`)."""
    _run("mlmd-lineage", "lineage.cli")
