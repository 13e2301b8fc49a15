"""Several ``mlmd-cache serve`` processes sharing one port: :class:`ServerGroup`.

The MLMD core holds the GIL while it runs a call, so one server process serves one call at a time
however many worker threads it has. A group runs N server processes that listen on the same port
(``SO_REUSEPORT``: the kernel spreads new client connections over them), each with its own worker
threads and database connections. Only for MySQL and PostgreSQL: SQLite lets one writer in at a time,
and separate processes would only meet as ``database is locked`` errors.

The parent process opens the database once first (it checks the URL and migrates the schema when
asked), makes sure the port is free (a port in use fails at once, as it does for one process; port
0 picks one), then starts the processes and waits until each listens. Their log lines are passed on,
marked with the process's number. The group stops as one: a signal to the parent reaches every
process, and a process that dies stops the others (a supervisor then restarts the whole group).
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

from ..store.connection import check_database_url, connect, connection_config, redact_url
from ..errors import InvalidArgumentError
from .common import ServerStartError, client_address, host_port, log

__all__ = ["ServerGroup"]

START_TIMEOUT_SECONDS = 60.0
# The lines a server process writes as it starts and stops: the group writes its own instead.
_LIFECYCLE = ("SIGTERM: stopping", "SIGINT: stopping", "SIGHUP: stopping", "stopped")
_PREFIX = "mlmd-cache serve: "


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port(host: str, port: int) -> int:
    """``port`` (or, for 0, a free one) after checking that nothing listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # no SO_REUSEPORT: any listener makes it fail
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ServerStartError(f"cannot listen on {host_port(host, port)}: {error.strerror or error}") from None
        return probe.getsockname()[1]


class ServerGroup:
    """``processes`` server processes for the MySQL or PostgreSQL store ``url`` on ``host:port``;
    the other arguments are :class:`~mlmd_cache.server.mlmd_service.MetadataStoreServer`'s and ``mlmd-cache
    serve``'s (TLS as file paths, gRPC arguments as the ``--grpc_channel_arguments`` text)."""

    def __init__(
        self,
        url: str,
        *,
        processes: int,
        host: str = "127.0.0.1",
        port: int = 8080,
        workers: int = 8,
        upgrade: bool = False,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        channel_arguments: Optional[str] = None,
        log: Callable[[str], None] = log,
        cache_service: bool = True,
    ) -> None:
        if processes < 2:
            raise InvalidArgumentError(f"a server group needs 2 or more processes, not {processes}")
        check_database_url(url)
        if connection_config(url).HasField("sqlite"):
            raise InvalidArgumentError("several server processes need MySQL or PostgreSQL: "
                                       "SQLite lets one writer in at a time")
        connect(url, upgrade=upgrade)  # checks the URL and the database, migrates when asked; closed again
        self.url, self.host, self.processes, self.workers, self._log = url, host, processes, workers, log
        self.port = _free_port(host, port)
        self.tls = tls_cert is not None
        self._command = [sys.executable, "-m", "mlmd_cache", "serve", "--shared-port", "--host", host,
                         "--port", str(self.port), "--workers", str(workers)]
        if tls_cert is not None:
            self._command += ["--tls-cert", tls_cert, "--tls-key", tls_key or ""]
        if channel_arguments:
            self._command += ["--grpc_channel_arguments", channel_arguments]
        if not cache_service:
            self._command.append("--no-cache-service")
        self._children: list[subprocess.Popen] = []
        self._exited = threading.Event()
        self._stopping = False

    @property
    def address(self) -> str:
        """``grpc://host:port`` (``grpcs://`` with TLS), as a client reaches the group."""
        return client_address(self.host, self.port, self.tls)

    @property
    def backend(self) -> str:
        return redact_url(self.url)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the processes and return once every one listens; :class:`ServerStartError` (and
        none left running) when one does not."""
        environment = dict(os.environ, MLMD_DB=self.url)  # the URL, password and all, stays out of argv
        for _ in range(self.processes):
            self._children.append(subprocess.Popen(
                self._command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment,
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent only, which passes it on once
                preexec_fn=_die_with_parent))
        try:
            deadline = time.monotonic() + timeout
            for number, child in enumerate(self._children, 1):
                self._await_listening(number, child, deadline)
        except BaseException:
            for child in self._children:
                child.kill()
                child.wait()
            raise
        for number, child in enumerate(self._children, 1):
            threading.Thread(target=self._pass_on, args=(number, child), daemon=True).start()

    def _await_listening(self, number: int, child: subprocess.Popen, deadline: float) -> None:
        lines: list[str] = []
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), child.kill)
        timer.start()
        try:
            for line in child.stderr:
                if f" on {self.address.split('://')[0]}://" in line:
                    return
                lines.append(line.strip())
        finally:
            timer.cancel()
        child.wait()
        errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
        why = errors[-1] if errors else (lines[-1] if lines else f"exit code {child.returncode}")
        raise ServerStartError(f"server process {number} did not start: {why}")

    def _pass_on(self, number: int, child: subprocess.Popen) -> None:
        for line in child.stderr:
            text = line.rstrip("\n").removeprefix(_PREFIX)
            if not text.startswith(_LIFECYCLE):
                self._log(f"process {number}: {text}")
        child.wait()
        self._exited.set()

    def stop_async(self, grace: Optional[float] = 10.0) -> None:
        """Ask every process to stop, as :meth:`MetadataStoreServer.stop_async` stops one server
        (so :func:`~mlmd_cache.server.common.stop_on_signals` serves both): each process is signalled, and
        its calls in flight may finish within its grace period (10 s); asked again (``grace=None``
        from a second signal), the processes are signalled again and cancel them."""
        self._stopping = True
        for child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Block until every process has exited: 0 when they were asked to stop and did, else 1
        (a process that exits on its own takes the others with it)."""
        failed = False
        while any(child.poll() is None for child in self._children):
            self._exited.wait()
            self._exited.clear()
            for number, child in enumerate(self._children, 1):
                if child.poll() is not None and not self._stopping:
                    self._log(f"process {number} exited (code {child.returncode}): stopping the others")
                    failed = True
                    self.stop_async()
        return 1 if failed or any(child.returncode != 0 for child in self._children) else 0
