"""What the servers of ``mlmd-cache serve`` share: the error of a server that could not start, the
addresses a server listens on and a client reaches it by, the log line, and the stopping on
SIGTERM, SIGINT and SIGHUP of a server or a group of them (:class:`Stoppable`)."""
from __future__ import annotations

import queue
import signal
import sys
import threading
from typing import Callable, Optional, Protocol

from .._entry import leave_a_hung_up_terminal
from ..errors import MlmdCacheError
from ..terminal import printable

__all__ = ["ServerStartError", "Stoppable", "client_address", "host_port", "log", "stop_on_signals"]


class Stoppable(Protocol):
    """A server, or a group of server processes, that can be told to stop."""

    def stop_async(self, grace: Optional[float] = ...) -> object: ...


class ServerStartError(MlmdCacheError):
    """The server could not start: the port is taken, a TLS file is unusable, ..."""


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_address(host: str, port: int, tls: bool) -> str:
    """The ``grpc://`` (``grpcs://`` with TLS) URL a client reaches a server on ``host:port`` by."""
    return f"{'grpcs' if tls else 'grpc'}://{host_port(host, port)}"


def log(message: str) -> None:
    """One line of ``mlmd-cache serve``'s log on stderr, made printable: a message may quote a
    client's or the store's text."""
    print(printable(f"mlmd-cache serve: {message}"), file=sys.stderr, flush=True)


def stop_on_signals(server: Stoppable, grace: float = 10.0,
                    log: Callable[[str], None] = log) -> None:
    """Stop ``server`` on SIGTERM, SIGINT and SIGHUP (call from the main thread; a signal ignored
    from the start, as nohup ignores SIGHUP, stays ignored): the first signal stops it gracefully
    (calls in flight may finish within ``grace`` seconds), a second one at once.

    The handler only hands the signal to a thread that logs and stops: a signal can arrive while the
    main thread is inside a write to stderr (a full pipe, a slow terminal), where a second write from
    the handler is refused ("reentrant call inside BufferedWriter")."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is safe in a signal handler

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:  # a closed terminal: the log lines must not fail on it
            leave_a_hung_up_terminal()
        signals.put(signum)

    def stop() -> None:
        received = 0
        while True:
            signum = signals.get()
            received += 1
            name = signal.Signals(signum).name
            if received == 1:
                log(f"{name}: stopping (calls in flight may finish within {grace:g} s)")
                server.stop_async(grace)
            else:
                log(f"{name}: stopping now (calls in flight are cancelled)")
                server.stop_async(None)

    threading.Thread(target=stop, name="mlmd-cache-serve-stop", daemon=True).start()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, handle)
