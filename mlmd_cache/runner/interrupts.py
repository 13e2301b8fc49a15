"""Ctrl-C at a safe point: while a run goes, a stop signal is acted on between two steps of its event
loop, never in the middle of a store write.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives: between
the two writes of a task's start, say, which would leave a half-written record. So for the run's
duration the Python handlers of SIGINT, SIGTERM and SIGHUP (``KeyboardInterrupt``'s default one, or the
CLI's that makes SIGTERM and SIGHUP stop a run as Ctrl-C does) only note the signal and wake the loop; the loop then
calls the noted handler itself (:meth:`DeferredStop.check`) where nothing is half done, and stops the
run. Signals left to the system (``SIG_DFL``, ``SIG_IGN``) are left alone, and so is everything when
the run is not on the main thread (where Python delivers no signal anyway).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterator, Optional

from .._entry import leave_a_hung_up_terminal

__all__ = ["DeferredStop", "deferred_stop_signals"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class DeferredStop:
    """The stop signals noted while a run goes; see the module docstring."""

    def __init__(self) -> None:
        self.wake: Optional[Callable[[], None]] = None  # the event loop's: stop waiting for a process
        self._handlers: dict[int, Callable[..., Any]] = {}
        self._noted: list[int] = []

    def note(self, signum: int, frame: Optional[FrameType]) -> None:
        if signum == signal.SIGHUP:  # now, not at the next step: the display writes in between
            leave_a_hung_up_terminal()
        self._noted.append(signum)
        if self.wake is not None:
            self.wake()

    def check(self) -> None:
        """Call the handler of each signal noted since the last check (the first to raise, usually
        ``KeyboardInterrupt``, propagates)."""
        while self._noted:
            signum = self._noted.pop(0)
            self._handlers[signum](signum, None)


@contextlib.contextmanager
def deferred_stop_signals() -> Iterator[DeferredStop]:
    """Defer SIGINT, SIGTERM and SIGHUP to :meth:`DeferredStop.check` for the ``with`` block."""
    stop = DeferredStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            stop._handlers[signum] = handler
            signal.signal(signum, stop.note)
    try:
        yield stop
    finally:
        for signum, handler in stop._handlers.items():
            signal.signal(signum, handler)
