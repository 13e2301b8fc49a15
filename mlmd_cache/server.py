"""An MLMD gRPC server: ``ml_metadata.MetadataStoreService`` served by the embedded MLMD C++ core.

Every RPC of the service is handed, as serialized bytes, to the same C++ entry point the
``ml_metadata`` Python package calls for a direct connection, so answers and error codes are the
core's own; the stock ``ml_metadata`` gRPC client sees what it sees against the official
``metadata_store_server``. An RPC the core does not export answers ``UNIMPLEMENTED`` with its name.

The core's store object is not thread-safe: each worker thread opens its own connection to a
MySQL or PostgreSQL database, and a SQLite file is served by one connection behind a lock (SQLite
serializes writers anyway, and separate connections would only add ``database is locked`` errors).

>>> import os, tempfile
>>> from mlmd_cache import connect
>>> server = MetadataStoreServer("sqlite:///" + os.path.join(tempfile.mkdtemp(), "s.sqlite"), port=0)
>>> server.start()
>>> connect(f"grpc://127.0.0.1:{server.port}").get_context_types()
[]
>>> server.stop()
"""
from __future__ import annotations

import contextlib
import signal
import threading
from concurrent import futures
from typing import Iterator, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from ml_metadata.metadata_store.pywrap.metadata_store_extension import metadata_store as core
from ml_metadata.proto import metadata_store_service_pb2

from .connection import connect, connection_config, redact_url
from .errors import MlmdCacheError, StoreURLError

__all__ = ["MetadataStoreServer", "SERVICE_NAME", "ServerStartError", "stop_on_signals"]

SERVICE_NAME = "ml_metadata.MetadataStoreService"
_SERVICE = metadata_store_service_pb2.DESCRIPTOR.services_by_name["MetadataStoreService"]
_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


class ServerStartError(MlmdCacheError):
    """The server could not start: the port is taken, a TLS file is unreadable, ..."""


class _Stores:
    """The core store objects of the workers: one per thread, or one behind a lock for SQLite."""

    def __init__(self, url: str, upgrade: bool) -> None:
        self._url = url
        config = connection_config(url)
        self.shared = hasattr(config, "HasField") and config.HasField("sqlite")
        self._lock = threading.Lock()
        self._local = threading.local()
        # Opened now, so a wrong URL or an unreachable database fails at start-up, not on first call.
        self._first = connect(url, upgrade=upgrade)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[object]:
        if self.shared:
            with self._lock:
                yield self._first._metadata_store
            return
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = connect(self._url)
        yield store._metadata_store


def _handler(method: str, stores: _Stores) -> grpc.RpcMethodHandler:
    entry_point = getattr(core, method, None)

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        if entry_point is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          f"{SERVICE_NAME}/{method} is not implemented by the MLMD core this server runs on")
        with stores.borrow() as store:
            response, message, code = entry_point(store, request)
        if code != 0:
            context.abort(_STATUS_BY_CODE.get(code, grpc.StatusCode.UNKNOWN), message.decode("utf-8", "replace"))
        return response

    # No (de)serializers: requests and responses pass through as the bytes the core reads and writes.
    return grpc.unary_unary_rpc_method_handler(call)


class MetadataStoreServer:
    """``ml_metadata.MetadataStoreService`` on ``host:port`` over the store ``url`` (not ``grpc://``),
    with standard gRPC health checking. ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self,
        url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        workers: int = 8,
        upgrade: bool = False,
        tls_cert: Optional[bytes] = None,
        tls_key: Optional[bytes] = None,
    ) -> None:
        if url.split("://", 1)[0].lower() == "grpc":
            raise StoreURLError("serve needs a database URL (sqlite, mysql, postgresql), not grpc://")
        if (tls_cert is None) != (tls_key is None):
            raise ServerStartError("TLS needs both a certificate and its key")
        self.url, self.host, self.port = url, host, port
        self._stores = _Stores(url, upgrade)
        # Without SO_REUSEPORT a second server on a taken port fails instead of sharing it silently.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlmd"),
                                   options=[("grpc.so_reuseport", 0)])
        handlers = {method.name: _handler(method.name, self._stores) for method in _SERVICE.methods}
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)])
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls_cert is not None:
                credentials = grpc.ssl_server_credentials([(tls_key, tls_cert)])
                bound = self._server.add_secure_port(address, credentials)
            else:
                bound = self._server.add_insecure_port(address)
        except RuntimeError:  # gRPC's own message only points at its debug logs
            bound = 0
        if not bound:
            raise ServerStartError(f"cannot listen on {address}: the address is in use or not available")
        self.port = bound
        self.tls = tls_cert is not None

    @property
    def backend(self) -> str:
        """The store URL, password hidden."""
        return redact_url(self.url)

    def start(self) -> None:
        self._server.start()
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop_async(self, grace: Optional[float] = 10.0) -> threading.Event:
        """Stop accepting calls; calls in flight may finish within ``grace`` seconds. The event is
        set once the server has stopped (and :meth:`wait` returns)."""
        self._health.enter_graceful_shutdown()
        return self._server.stop(grace)

    def stop(self, grace: Optional[float] = 10.0) -> None:
        self.stop_async(grace).wait()

    def wait(self) -> None:
        self._server.wait_for_termination()


def stop_on_signals(server: MetadataStoreServer, grace: float = 10.0) -> None:
    """Stop ``server`` gracefully on SIGTERM and SIGINT (call from the main thread)."""

    def handle(signum: int, frame: object) -> None:
        server.stop_async(grace)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)
