"""An MLMD gRPC server: ``ml_metadata.MetadataStoreService`` served by the embedded MLMD C++ core.

Every RPC of the service is handed, as serialized bytes, to the same C++ entry point the
``ml_metadata`` Python package calls for a direct connection, so answers and error codes are the
core's own; the stock ``ml_metadata`` gRPC client sees what it sees against the official
``metadata_store_server``. An RPC the core does not export answers ``UNIMPLEMENTED`` with its name.
Beside it, on the same port, ``mlmd_cache.v1.CacheService`` answers a cache lookup in one round
trip (:mod:`mlmd_cache.server.cache_service`; ``cache_service=False`` leaves it out).

The core's store object is not thread-safe. A SQLite file is served by one store behind a lock
(SQLite serializes writers anyway, and separate connections would only add ``database is locked``
errors). A MySQL or PostgreSQL database gets one store, that is one connection, per worker thread,
opened when the thread first needs it; the one opened at start-up (which checks the URL and the
database, and migrates the schema when asked) goes to the first worker. The core's entry points
hold the GIL while they run, so calls do not overlap inside one server process: the threads keep
each call's transaction on its own connection, they do not add throughput; more processes on one
port do (:class:`mlmd_cache.server.processes.ServerGroup`, ``serve --processes``).

Lost database connections (a database restart, an idle connection closed by the server or a proxy):
MLMD's PostgreSQL store never reconnects, and its MySQL store fails the first call after a loss.
So a worker's connection that has been idle for :data:`IDLE_CHECK_SECONDS` is checked with a cheap
read before it serves a call, and replaced when it is gone; a call that fails with ``INTERNAL``
(how the core reports a lost connection) drops its worker's connection, and a read (``Get*``) is
then retried once on a new one. A write is never retried: it may have been committed before the
connection dropped. When the database cannot be reached, calls answer ``UNAVAILABLE``.

>>> import os, tempfile
>>> from mlmd_cache import connect
>>> server = MetadataStoreServer("sqlite:///" + os.path.join(tempfile.mkdtemp(), "s.sqlite"), port=0)
>>> server.start()
>>> connect(f"grpc://127.0.0.1:{server.port}").get_context_types()
[]
>>> server.stop()
"""
from __future__ import annotations

import os
import re
import ssl
import tempfile
import threading
import time
from concurrent import futures
from typing import Callable, Optional, Sequence

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2
from ml_metadata.metadata_store.pywrap.metadata_store_extension import metadata_store as core
from ml_metadata.proto import metadata_store_pb2, metadata_store_service_pb2

from .._messages import mlmd_stderr_captured
from .._protobuf import is_repeated
from ..errors import StoreConnectionError
from ..store.connection import check_database_url, connect, connection_config, redact_url
from .cache_service import CACHE_SERVICE_NAME, CallCounter, cache_service_handler
from .common import ServerStartError, client_address, host_port, log, stop_on_signals

__all__ = ["IDLE_CHECK_SECONDS", "MetadataStoreServer", "SERVICE_NAME", "ServerStartError", "stop_on_signals"]

SERVICE_NAME = "ml_metadata.MetadataStoreService"
IDLE_CHECK_SECONDS = 1.0
"""A worker's database connection idle for longer is checked before it serves the next call."""

_SERVICE = metadata_store_service_pb2.DESCRIPTOR.services_by_name["MetadataStoreService"]
_VALUE = metadata_store_pb2.Value.DESCRIPTOR
_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]
# An empty GetContextTypesByID still runs a transaction on the database: the cheapest liveness check.
_PROBE = metadata_store_service_pb2.GetContextTypesByIDRequest().SerializeToString()
_BIND_ERROR = re.compile(r"Error in bind for address '[^']*': ([^)]+)\)")


class _Stores:
    """The core store objects of the workers: one behind a lock for SQLite, else one per thread."""

    def __init__(self, url: str, upgrade: bool, log: Callable[[str], None]) -> None:
        self._url, self._log = url, log
        self.shared = connection_config(url).HasField("sqlite")
        self._lock = threading.Lock()
        self._local = threading.local()
        # Opened now, so a wrong URL or an unreachable database fails at start-up, not on first call.
        self._spare: list = [connect(url, upgrade=upgrade)._metadata_store]
        self._shared = self._spare[0] if self.shared else None

    def call(self, entry_point: Callable, request: bytes, read_only: bool) -> tuple[bytes, bytes, int]:
        """``entry_point(store, request)``: (response, error message, status code).
        Raises StoreConnectionError when no connection to the database can be opened."""
        if self._shared is not None:
            with self._lock:
                return entry_point(self._shared, request)
        result = entry_point(self._store(), request)
        if result[2] == _INTERNAL:
            self._drop(result[1])
            if read_only:
                result = entry_point(self._store(), request)
                if result[2] == _INTERNAL:
                    self._drop(result[1])
        self._local.last_used = time.monotonic()
        return result

    def _store(self):
        local = self._local
        store = getattr(local, "store", None)
        if store is not None and time.monotonic() - local.last_used > IDLE_CHECK_SECONDS:
            _, message, code = core.GetContextTypesByID(store, _PROBE)
            if code != 0:
                self._drop(message)
                store = None
        if store is None:
            with self._lock:
                store = self._spare.pop() if self._spare else None
            if store is None:
                store = connect(self._url)._metadata_store
            local.store, local.last_used = store, time.monotonic()
        return store

    def _drop(self, message: bytes) -> None:
        """Close this thread's connection after an error (a new one is opened when needed)."""
        if getattr(self._local, "store", None) is not None:
            self._local.store = None
            reason = " ".join(message.decode("utf-8", "replace").split()) or "no reason given"
            self._log(f"closed a database connection after an error: {reason}")


def _value_holders() -> frozenset[str]:
    """The message types of the service's requests that can contain an ``ml_metadata.Value``, at any depth."""
    types: dict[str, Descriptor] = {}
    pending = [method.input_type for method in _SERVICE.methods]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name not in types:
            types[descriptor.full_name] = descriptor
            pending.extend(field.message_type for field in descriptor.fields if field.message_type is not None)
    holders = {_VALUE.full_name}
    grown = True
    while grown:
        grown = False
        for name, descriptor in types.items():
            if name not in holders and any(field.message_type is not None and field.message_type.full_name in holders
                                           for field in descriptor.fields):
                holders.add(name)
                grown = True
    return frozenset(holders)


_VALUE_HOLDERS = _value_holders()


def _value_problem(value: Message) -> Optional[str]:
    kind = value.WhichOneof("value")
    if kind is None:
        # the core does not answer this with an error: it aborts its whole process
        return "a property value with none of int_value, double_value, string_value, struct_value, proto_value " \
               "or bool_value set"
    if kind == "proto_value" and not value.proto_value.type_url:
        # the core stores it, then fails every read that lists the record
        return "a proto_value without a type_url"
    return None


def _unusable_value(message: Message, path: str = "") -> Optional[str]:
    """Where and why the first ``ml_metadata.Value`` in ``message`` would harm the store, or None."""
    for field, content in message.ListFields():
        if field.message_type is None or field.message_type.full_name not in _VALUE_HOLDERS:
            continue
        if field.message_type.GetOptions().map_entry:
            items = [(f"{path}{field.name}[{key!r}]", item) for key, item in content.items()]
        elif is_repeated(field):
            items = [(f"{path}{field.name}[{index}]", item) for index, item in enumerate(content)]
        else:
            items = [(f"{path}{field.name}", content)]
        for where, item in items:
            if item.DESCRIPTOR.full_name == _VALUE.full_name:
                problem = _value_problem(item)
                if problem:
                    return f"{where}: {problem}"
            else:
                found = _unusable_value(item, where + ".")
                if found:
                    return found
    return None


def _request_checker(method: str) -> Optional[Callable[[bytes], Optional[str]]]:
    """For a method whose request can carry property values: a check of those values. The MLMD core
    aborts its process on a value with no field set, and stores a proto_value without a type
    URL that it then cannot read back, so neither may reach it."""
    descriptor = _SERVICE.methods_by_name[method].input_type
    if descriptor.full_name not in _VALUE_HOLDERS:
        return None
    request_class = getattr(metadata_store_service_pb2, descriptor.name)

    def check(request: bytes) -> Optional[str]:
        try:
            message = request_class.FromString(request)
        except DecodeError:
            return None  # the core answers unparsable requests itself
        return _unusable_value(message)
    return check


def _handler(method: str, stores: _Stores, calls: CallCounter) -> grpc.RpcMethodHandler:
    entry_point = getattr(core, method, None)
    name = f"{SERVICE_NAME}/{method}"
    read_only = method.startswith("Get")
    check = _request_checker(method)

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.add(name)
        if entry_point is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED,
                          f"{SERVICE_NAME}/{method} is not implemented by the MLMD core this server runs on")
        problem = check(request) if check is not None else None
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            response, message, code = stores.call(entry_point, request, read_only)
        except StoreConnectionError as error:  # message: one line, password hidden
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        if code != 0:
            context.abort(_STATUS_BY_CODE.get(code, grpc.StatusCode.UNKNOWN), message.decode("utf-8", "replace"))
        return response

    # No (de)serializers: requests and responses pass through as the bytes the core reads and writes.
    return grpc.unary_unary_rpc_method_handler(call)


def _health_handler(servicer: health.HealthServicer) -> grpc.GenericRpcHandler:
    """``grpc.health.v1.Health`` of ``servicer``, its requests parsed here, as the cache service
    parses its own: a deserializer given to gRPC that raises makes it answer INTERNAL and log a
    traceback for every malformed request; this answers INVALID_ARGUMENT and logs nothing."""

    def parse(data: bytes, context: grpc.ServicerContext) -> health_pb2.HealthCheckRequest:
        try:
            return health_pb2.HealthCheckRequest.FromString(data)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Could not parse proto: not a grpc.health.v1.HealthCheckRequest")

    def check(data: bytes, context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        return servicer.Check(parse(data, context), context)

    def watch(data: bytes, context: grpc.ServicerContext):
        request = parse(data, context)
        yield from servicer.Watch(request, context)

    def serialize(message: Message) -> bytes:
        return message.SerializeToString()

    return grpc.method_handlers_generic_handler(health.SERVICE_NAME, {
        "Check": grpc.unary_unary_rpc_method_handler(check, response_serializer=serialize),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, response_serializer=serialize),
    })


def _check_tls(cert: bytes, key: bytes) -> None:
    """Raise ServerStartError unless ``cert`` and ``key`` are a matching PEM certificate and key
    (gRPC would only log its complaint and fail to open the port)."""
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise ServerStartError("the TLS certificate is not a PEM certificate (-----BEGIN CERTIFICATE-----)")
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", key):
        raise ServerStartError("the TLS key is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    with tempfile.TemporaryDirectory() as directory:  # mode 0700: the key is readable by us only
        cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            with open(path, "wb") as file:
                file.write(data)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        except ssl.SSLError as error:
            if error.reason == "KEY_VALUES_MISMATCH":
                raise ServerStartError("the TLS key does not belong to the TLS certificate") from None
            raise ServerStartError(f"the TLS certificate or key cannot be loaded ({error.reason or error})") from None


class MetadataStoreServer:
    """``ml_metadata.MetadataStoreService`` on ``host:port`` over the store ``url`` (not ``grpc://`` or ``grpcs://``),
    with standard gRPC health checking. ``port=0`` picks a free port (see :attr:`port`).

    Raises :class:`~mlmd_cache.errors.StoreURLError` for a bad URL,
    :class:`~mlmd_cache.errors.StoreConnectionError` when the database cannot be opened, and
    :class:`ServerStartError` when the address cannot be bound or the TLS files are unusable.
    ``options`` are extra gRPC server arguments (name, value). ``cache_service`` also offers
    ``mlmd_cache.v1.CacheService`` (:mod:`mlmd_cache.server.cache_service`) on the port; :attr:`calls`
    counts the RPCs answered, by method.
    """

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
        options: Sequence[tuple[str, object]] = (),
        log: Callable[[str], None] = log,
        shared_port: bool = False,
        cache_service: bool = True,
    ) -> None:
        check_database_url(url)
        if (tls_cert is None) != (tls_key is None):
            raise ServerStartError("TLS needs both a certificate and its key")
        if tls_cert is not None:
            _check_tls(tls_cert, tls_key)
        self.url, self.host = url, host
        self._stores = _Stores(url, upgrade, log)
        # Without SO_REUSEPORT a second server on a taken port fails instead of sharing it silently;
        # the processes of a ServerGroup share theirs on purpose.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlmd"),
                                   options=[("grpc.so_reuseport", int(shared_port)), *options])
        self.calls = CallCounter()
        handlers = {method.name: _handler(method.name, self._stores, self.calls) for method in _SERVICE.methods}
        generic = [grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)]
        if cache_service:
            generic.append(cache_service_handler(self._stores.call, core, self.calls))
        self.services = (SERVICE_NAME, CACHE_SERVICE_NAME) if cache_service else (SERVICE_NAME,)
        self._server.add_generic_rpc_handlers(generic)
        self._health = health.HealthServicer()
        self._server.add_generic_rpc_handlers([_health_handler(self._health)])
        self.port = self._bind(host, port, tls_cert, tls_key)
        self.tls = tls_cert is not None

    def _bind(self, host: str, port: int, tls_cert: Optional[bytes], tls_key: Optional[bytes]) -> int:
        address = host_port(host, port)
        # gRPC logs why a bind failed (on stderr, from C++) and raises or returns 0 without the reason.
        with mlmd_stderr_captured() as stderr:
            try:
                if tls_cert is not None:
                    bound = self._server.add_secure_port(address, grpc.ssl_server_credentials([(tls_key, tls_cert)]))
                else:
                    bound = self._server.add_insecure_port(address)
            except RuntimeError:
                bound = 0
            if not bound:
                stderr.failure = ServerStartError(address)  # drops gRPC's log lines
        if not bound:
            reasons = _BIND_ERROR.findall(stderr.text())
            why = reasons[-1].strip() if reasons else "the address is in use or not available"
            raise ServerStartError(f"cannot listen on {address}: {why}")
        return bound

    @property
    def address(self) -> str:
        """``grpc://host:port`` (``grpcs://`` with TLS), as a client reaches it."""
        return client_address(self.host, self.port, self.tls)

    @property
    def backend(self) -> str:
        """The store URL, password hidden."""
        return redact_url(self.url)

    def start(self) -> None:
        self._server.start()
        for service in ("", *self.services):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop_async(self, grace: Optional[float] = 10.0) -> threading.Event:
        """Stop accepting calls (health checks answer NOT_SERVING); calls in flight may finish
        within ``grace`` seconds (``None``: cancel them now). The event is set once the server
        has stopped (and :meth:`wait` returns)."""
        self._health.enter_graceful_shutdown()
        return self._server.stop(grace)

    def stop(self, grace: Optional[float] = 10.0) -> None:
        self.stop_async(grace).wait()

    def wait(self) -> None:
        """Block until the server has stopped and every call has finished or was cancelled."""
        self._server.wait_for_termination()


