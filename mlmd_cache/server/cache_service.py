"""``mlmd_cache.v1.CacheService``: a cache lookup in one gRPC round trip, beside ``MetadataStoreService``.

Over plain MLMD calls a lookup is four round trips (the key's context by name, its executions, their
events, their artifacts). ``mlmd-cache serve`` also offers this small service on the same port, which
makes those reads next to the database (with :func:`mlmd_cache.cache.sources.read_round`, the very code an
embedded lookup runs) and sends back everything the validity rules need; the client then applies
:func:`mlmd_cache.cache.sources.source_problem` itself, since files and digests must be checked where the
client runs. ``serve --no-cache-service`` leaves the service out.

A ``grpc://`` store opened by :func:`mlmd_cache.connect` has a :class:`CacheServiceClient` as its
``cache_service``. Its first ``Lookup`` is the probe: a server without the service (the stock
``metadata_store_server``, an older ``serve``) answers ``UNIMPLEMENTED``, which is remembered for the
connection, and from then on lookups are plain MLMD calls. The stock MLMD client does not see the
service at all.

The wire format needs no protoc: the messages are built at import time from this description
(package ``mlmd_cache.v1``, file ``mlmd_cache/cache_service.proto``; ``ml_metadata`` types are MLMD's
own)::

    service CacheService {
      rpc Lookup(LookupRequest) returns (LookupResponse);
      rpc Info(InfoRequest) returns (InfoResponse);
      rpc Reservation(ReservationRequest) returns (ReservationResponse);
    }
    message LookupRequest {
      uint32 version = 1;      // PROTOCOL_VERSION of the client (1)
      string pipeline = 2;     // the key: pipeline name and cache fingerprint
      string fingerprint = 3;
      uint32 limit = 4;        // read the newest `limit` executions of the key's CacheSource context
                               // (1 to MAX_LOOKUP_LIMIT; a larger one is read as MAX_LOOKUP_LIMIT),
      uint32 skip = 5;         // and examine those after the first `skip` (read by earlier rounds)
    }
    message LookupResponse {
      uint32 version = 1;
      bool found = 2;                           // the key has a CacheSource context ...
      ml_metadata.Context context = 3;          // ... this one
      uint32 executions_read = 4;               // executions of it read (fewer than `limit`: no more)
      ml_metadata.LineageGraph candidates = 5;  // executions: the candidates (COMPLETE, the fingerprint),
                                                // newest first; events: their OUTPUT events; artifacts:
                                                // the output artifacts that exist; contexts: those
                                                // of rule_context_ids that exist
      repeated int64 rule_context_ids = 6;      // the contexts the validity rules read by ID for this
                                                // key (sources.rule_context_ids), read here too
    }
    message InfoRequest {}
    message InfoResponse {
      uint32 version = 1;
      repeated string methods = 2;              // this service's methods
      repeated MethodCalls calls = 3;           // RPCs this server process answered, by method
    }
    message MethodCalls { string method = 1; uint64 count = 2; }
    message ReservationRequest {
      uint32 version = 1;
      string pipeline = 2;     // the key
      string fingerprint = 3;
      uint32 known = 4;        // a generation of its reservation seen before (0: none)
    }
    message ReservationResponse {
      uint32 version = 1;
      uint32 generation = 2;                      // the newest generation of the key's reservation (0: none) ...
      ml_metadata.Context context = 3;            // ... its context
      repeated ml_metadata.Execution holders = 4; // and the executions associated with it (its holder)
    }

``Reservation`` is the read of :func:`mlmd_cache.cache.dedup.claim` (:func:`mlmd_cache.cache.leases.read_newest`:
a galloping probe by name and the holder, several round trips) in one; what the client makes of it
(is the holder's runner alive? on the client's host only that can be told) and the reserving
write (one ``put_execution``) stay the client's. A heartbeat is one ``put_contexts`` call, one
round trip already, so it has no RPC of its own.

Versions: fields are only ever added (proto3 ignores unknown ones); an incompatible change would
be ``mlmd_cache.v2``. A request's ``version`` tells the server what the client understands.

Errors are MLMD's status codes (the client raises MLMD's exceptions, retried as every call of
:class:`mlmd_cache.store.client.Store` is); an answer too large for one message is ``RESOURCE_EXHAUSTED``,
and the client then makes that round with plain MLMD calls.

Requests are validated as ``MetadataStoreService`` validates its own: bytes that are not the
method's request message answer ``INVALID_ARGUMENT`` (MLMD's core says "Could not parse proto"),
and nothing is logged for them. A ``Lookup`` reads at most :data:`MAX_LOOKUP_LIMIT` executions: a
larger ``limit`` is read as that many, as MLMD clamps a list call's ``max_result_size`` to 100 (and
refuses 0 and below, as ``limit`` 0 is refused here), so that one request cannot make the server read
a whole store. The client never asks for more: a deeper round is read with MLMD's paged calls.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable, Optional, Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..cache import leases, sources
from ..store import records
from ..errors import StoreConnectionError
from ..cache.sources import CandidateRound

__all__ = ["CACHE_SERVICE_NAME", "MAX_LOOKUP_LIMIT", "PROTOCOL_VERSION", "CacheServiceClient", "CallCounter", "CoreStore",
           "cache_service_handler", "messages"]

CACHE_SERVICE_NAME = "mlmd_cache.v1.CacheService"
PROTOCOL_VERSION = 1
METHODS = ("Lookup", "Info", "Reservation")
# Larger answers are refused (RESOURCE_EXHAUSTED) below gRPC's default 4 MiB limit of a message,
# and the client reads that round with MLMD's paged calls instead.
MAX_RESPONSE_BYTES = 3 * 1024 * 1024
# A Lookup's `limit` is clamped to this: the client's rounds grow 4, 16, 64, 256, 1024 executions,
# so the first five rounds of a key are one call each; a deeper one uses MLMD's paged calls.
MAX_LOOKUP_LIMIT = 1024


# ---------------------------------------------------------------- the messages

def _build_messages() -> dict[str, type]:
    T = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="mlmd_cache/cache_service.proto", package="mlmd_cache.v1", syntax="proto3",
        dependency=[mlmd.DESCRIPTOR.name])

    def message(name: str, *fields: tuple[str, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for number, (field_name, kind, type_name) in enumerate(fields, 1):
            label = T.LABEL_REPEATED if field_name.startswith("*") else T.LABEL_OPTIONAL
            field = proto.field.add(name=field_name.lstrip("*"), number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name

    message("LookupRequest", ("version", T.TYPE_UINT32, ""), ("pipeline", T.TYPE_STRING, ""),
            ("fingerprint", T.TYPE_STRING, ""), ("limit", T.TYPE_UINT32, ""), ("skip", T.TYPE_UINT32, ""))
    message("LookupResponse", ("version", T.TYPE_UINT32, ""), ("found", T.TYPE_BOOL, ""),
            ("context", T.TYPE_MESSAGE, ".ml_metadata.Context"), ("executions_read", T.TYPE_UINT32, ""),
            ("candidates", T.TYPE_MESSAGE, ".ml_metadata.LineageGraph"), ("*rule_context_ids", T.TYPE_INT64, ""))
    message("InfoRequest")
    message("MethodCalls", ("method", T.TYPE_STRING, ""), ("count", T.TYPE_UINT64, ""))
    message("InfoResponse", ("version", T.TYPE_UINT32, ""), ("*methods", T.TYPE_STRING, ""),
            ("*calls", T.TYPE_MESSAGE, ".mlmd_cache.v1.MethodCalls"))
    message("ReservationRequest", ("version", T.TYPE_UINT32, ""), ("pipeline", T.TYPE_STRING, ""),
            ("fingerprint", T.TYPE_STRING, ""), ("known", T.TYPE_UINT32, ""))
    message("ReservationResponse", ("version", T.TYPE_UINT32, ""), ("generation", T.TYPE_UINT32, ""),
            ("context", T.TYPE_MESSAGE, ".ml_metadata.Context"),
            ("*holders", T.TYPE_MESSAGE, ".ml_metadata.Execution"))
    service = file.service.add(name="CacheService")
    for method in METHODS:
        service.method.add(name=method, input_type=f".mlmd_cache.v1.{method}Request",
                           output_type=f".mlmd_cache.v1.{method}Response")
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.AddSerializedFile(file.SerializeToString())
    return {proto.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"mlmd_cache.v1.{proto.name}"))
            for proto in file.message_type}


messages = _build_messages()
"""The service's message classes by name (``messages["LookupRequest"]``, ...)."""
LookupRequest, LookupResponse = messages["LookupRequest"], messages["LookupResponse"]
InfoRequest, InfoResponse = messages["InfoRequest"], messages["InfoResponse"]
ReservationRequest, ReservationResponse = messages["ReservationRequest"], messages["ReservationResponse"]


# ---------------------------------------------------------------- the server side

class CallCounter:
    """RPCs a server process answered, by full method name (``Info`` reports them)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, method: str) -> None:
        with self._lock:
            self._counts[method] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class CoreStore(metadata_store.MetadataStore):
    """The MLMD Python API over a server's core stores: every call is ``call(entry_point, request
    bytes, read_only)`` of :class:`mlmd_cache.server.mlmd_service._Stores` (its locking, its connection per
    thread and its retry of a read on a lost connection), so the service reads the database the way
    ``MetadataStoreService`` does, without a round trip."""

    def __init__(self, call: Callable[[Callable, bytes, bool], tuple[bytes, bytes, int]], core: Any) -> None:
        # MetadataStore.__init__ would open a connection of its own: not called.
        self._core_call, self._core = call, core
        self._using_db_connection = True

    def _call(self, method_name: str, request: Any, response: Any, extra_options: Any = None) -> None:
        answer, message, code = self._core_call(getattr(self._core, method_name), request.SerializeToString(),
                                                method_name.startswith("Get"))
        if code != 0:
            try:
                kind = mlmd_errors.exception_type_from_error_code(code)
            except KeyError:
                kind = mlmd_errors.UnknownError
            raise kind(message.decode("utf-8", "replace"))
        response.ParseFromString(answer)


_STATUS_BY_CODE = {status.value[0]: status for status in grpc.StatusCode}


class _SourceContextIds:
    """The IDs of the ``CacheSource`` contexts the server has looked up, by name: reading a context
    by ID costs the core about half of reading it by type and name. A context read by a remembered
    ID is used only if it still has the key's name and type (a store emptied and refilled under the
    server reuses IDs), so a stale entry costs one extra read, never a wrong answer."""

    LIMIT = 100_000  # entries; then it starts again

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def context(self, store: CoreStore, pipeline: str, fingerprint: str) -> Optional[mlmd.Context]:
        name = records.cache_source_context_name(pipeline, fingerprint)
        known = self._ids.get(name)
        if known is not None:
            found = store.get_contexts_by_id([known])
            if found and found[0].name == name and found[0].type == records.CACHE_SOURCE_CONTEXT_TYPE:
                return found[0]
            self._ids.pop(name, None)
        context = sources.source_context(store, pipeline, fingerprint)
        if context is not None:
            if len(self._ids) >= self.LIMIT:
                self._ids.clear()
            self._ids[name] = context.id
        return context


def _lookup(store: CoreStore, contexts: _SourceContextIds, request: Any) -> Any:
    if not request.fingerprint:
        raise ValueError("a Lookup names a fingerprint")
    if request.limit < 1 or request.skip > request.limit:
        raise ValueError(f"a Lookup needs 1 <= limit and skip <= limit (limit {request.limit}, skip {request.skip})")
    response = LookupResponse(version=PROTOCOL_VERSION)
    context = contexts.context(store, request.pipeline, request.fingerprint)
    if context is None:
        return response
    limit = min(request.limit, MAX_LOOKUP_LIMIT)  # clamped, as MLMD clamps a list call's max_result_size
    found = sources.read_round(store, request.pipeline, request.fingerprint, limit, request.skip, context)
    assert found is not None  # given the context, a round always has one
    response.found = True
    response.context.CopyFrom(found.context)
    response.executions_read = found.executions_read
    graph = response.candidates
    seen: set[int] = set()
    for candidate in found.candidates:
        execution_id = candidate.execution.id
        graph.executions.append(candidate.execution)
        # Its OUTPUT events as read_candidates read them, but for what assemble_candidates ignores
        # (a candidate keeps its events as artifacts by output name, and missing ones by ID).
        for name, artifacts in candidate.output_artifacts.items():
            for artifact in artifacts:
                event = graph.events.add(type=mlmd.Event.OUTPUT, execution_id=execution_id, artifact_id=artifact.id)
                event.path.steps.add(key=name)
                if artifact.id not in seen:
                    seen.add(artifact.id)
                    graph.artifacts.append(artifact)
        for artifact_id in candidate.missing_artifact_ids:
            graph.events.add(type=mlmd.Event.OUTPUT, execution_id=execution_id, artifact_id=artifact_id)
    wanted = sorted(set(sources.rule_context_ids(found.context)))
    if wanted:
        response.rule_context_ids.extend(wanted)
        graph.contexts.extend(store.get_contexts_by_id(wanted))
    return response


def _reservation(store: CoreStore, request: Any) -> Any:
    if not request.fingerprint:
        raise ValueError("a Reservation names a fingerprint")
    generation, context, holders = leases.read_newest(store, request.pipeline, request.fingerprint, request.known)
    response = ReservationResponse(version=PROTOCOL_VERSION, generation=generation)
    if context is not None:
        response.context.CopyFrom(context)
        response.holders.extend(holders)
    return response


def cache_service_handler(call: Callable[[Callable, bytes, bool], tuple[bytes, bytes, int]], core: Any,
                          calls: CallCounter) -> grpc.GenericRpcHandler:
    """The service's handler for a gRPC server whose database calls go through ``call`` (see
    :class:`CoreStore`); ``calls`` counts every RPC of the server, and ``Info`` reports it."""
    store, contexts = CoreStore(call, core), _SourceContextIds()

    def answer(method: str, respond: Callable[[Any], Any], request: Any, context: grpc.ServicerContext) -> Any:
        calls.add(f"{CACHE_SERVICE_NAME}/{method}")
        try:
            response = respond(request)
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except StoreConnectionError as error:  # one line, password hidden
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        except mlmd_errors.StatusError as error:
            context.abort(_STATUS_BY_CODE.get(error.error_code, grpc.StatusCode.UNKNOWN), error.message)
        if response.ByteSize() > MAX_RESPONSE_BYTES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the candidates of this round take {response.ByteSize():,} bytes, more than one answer "
                          f"carries ({MAX_RESPONSE_BYTES:,}); read them with MetadataStoreService's calls")
        return response

    def lookup(request: Any, context: grpc.ServicerContext) -> Any:
        return answer("Lookup", lambda request: _lookup(store, contexts, request), request, context)

    def reservation(request: Any, context: grpc.ServicerContext) -> Any:
        return answer("Reservation", lambda request: _reservation(store, request), request, context)

    def info(request: Any, context: grpc.ServicerContext) -> Any:
        calls.add(f"{CACHE_SERVICE_NAME}/Info")
        response = InfoResponse(version=PROTOCOL_VERSION, methods=METHODS)
        for method, count in sorted(calls.snapshot().items()):
            response.calls.add(method=method, count=count)
        return response

    def handler(method: str, function: Callable, request_class: type) -> grpc.RpcMethodHandler:
        # The request is parsed here, not by gRPC: a request_deserializer that raises makes gRPC
        # answer INTERNAL and log a traceback per request; MLMD's own service answers bytes that
        # are not its request INVALID_ARGUMENT and logs nothing, and so does this one.
        def parsed(data: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = request_class.FromString(data)
            except DecodeError:
                calls.add(f"{CACHE_SERVICE_NAME}/{method}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Could not parse proto: not a {request_class.DESCRIPTOR.full_name}")
            return function(request, context)

        return grpc.unary_unary_rpc_method_handler(parsed, response_serializer=lambda message: message.SerializeToString())

    return grpc.method_handlers_generic_handler(CACHE_SERVICE_NAME, {
        "Lookup": handler("Lookup", lookup, LookupRequest),
        "Info": handler("Info", info, InfoRequest),
        "Reservation": handler("Reservation", reservation, ReservationRequest),
    })


# ---------------------------------------------------------------- the client side

class _RuleContexts:
    """A store whose ``get_contexts_by_id`` answers from what the service sent, for the IDs it read
    (``rule_context_ids``); any other call is the store's own."""

    def __init__(self, store: metadata_store.MetadataStore, ids: Sequence[int], contexts: Sequence[mlmd.Context]) -> None:
        self._store, self._ids = store, frozenset(ids)
        self._contexts = {context.id: context for context in contexts}

    def get_contexts_by_id(self, context_ids: Sequence[int]) -> list[mlmd.Context]:
        if not set(context_ids) <= self._ids:
            return self._store.get_contexts_by_id(context_ids)
        return [self._contexts[i] for i in dict.fromkeys(context_ids) if i in self._contexts]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class CacheServiceClient:
    """The cache service of the server behind a ``grpc://`` :class:`~mlmd_cache.store.client.Store`, over
    the store's own channel. :attr:`offered` is None until the first call tells whether the server
    has the service; when it has not, :meth:`lookup` is :func:`mlmd_cache.cache.sources.read_round`."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.offered: Optional[bool] = None
        channel = store.channel
        self._lookup = channel.unary_unary(f"/{CACHE_SERVICE_NAME}/Lookup",
                                           request_serializer=LookupRequest.SerializeToString,
                                           response_deserializer=LookupResponse.FromString,
                                           _registered_method=True)
        self.reservation_offered: Optional[bool] = None  # a server of before the RPC has the rest
        self._reservation = channel.unary_unary(f"/{CACHE_SERVICE_NAME}/Reservation",
                                                request_serializer=ReservationRequest.SerializeToString,
                                                response_deserializer=ReservationResponse.FromString,
                                                _registered_method=True)
        self._info = channel.unary_unary(f"/{CACHE_SERVICE_NAME}/Info",
                                         request_serializer=InfoRequest.SerializeToString,
                                         response_deserializer=InfoResponse.FromString,
                                         _registered_method=True)

    def _rpc(self, method: str, stub: Callable, request: Any, probe: bool = True) -> Optional[Any]:
        """The answer, or None when the server has no cache service (remembered, when ``probe``:
        a method added later tells only of itself). MLMD's errors otherwise, after the store's retries."""
        if self.offered is False:
            return None

        def attempt() -> Any:
            try:
                return stub(request, timeout=self._store._grpc_timeout_sec)
            except grpc.RpcError as error:
                try:
                    kind = mlmd_errors.exception_type_from_error_code(error.code().value[0])
                except KeyError:
                    kind = mlmd_errors.UnknownError
                raise kind(error.details() or "") from None

        try:
            answer = self._store.retrying(f"{CACHE_SERVICE_NAME}/{method}", attempt)
        except mlmd_errors.UnimplementedError:
            if probe:
                self.offered = False
            return None
        self.offered = True
        return answer

    def lookup(self, pipeline: str, fingerprint: str, limit: int, skip: int = 0,
               context: Optional[mlmd.Context] = None) -> Optional[CandidateRound]:
        """:func:`mlmd_cache.cache.sources.read_round` in one round trip (``context`` is only used when
        the round is read with plain MLMD calls). A round deeper than the service reads
        (:data:`MAX_LOOKUP_LIMIT`) is read with MLMD's paged calls."""
        if limit > MAX_LOOKUP_LIMIT:
            return sources.read_round(self._store, pipeline, fingerprint, limit, skip, context)
        request = LookupRequest(version=PROTOCOL_VERSION, pipeline=pipeline, fingerprint=fingerprint,
                                limit=limit, skip=skip)
        try:
            response = self._rpc("Lookup", self._lookup, request)
        except mlmd_errors.ResourceExhaustedError:
            response = None  # too many candidates for one answer: MLMD's paged calls read them
        if response is None:
            return sources.read_round(self._store, pipeline, fingerprint, limit, skip, context)
        if not response.found:
            return None
        graph = response.candidates
        candidates = sources.assemble_candidates(response.context, list(graph.executions), list(graph.events),
                                                 list(graph.artifacts))
        facts = (_RuleContexts(self._store, response.rule_context_ids, graph.contexts)
                 if response.rule_context_ids else self._store)
        return CandidateRound(response.context, candidates, response.executions_read, facts)

    def reservation(self, pipeline: str, fingerprint: str, known: int = 0
                    ) -> tuple[int, Optional[mlmd.Context], list[mlmd.Execution]]:
        """:func:`mlmd_cache.cache.leases.read_newest` in one round trip, or with plain MLMD calls from a
        server without the RPC."""
        response = None
        if self.reservation_offered is not False and self.offered is not False:
            response = self._rpc("Reservation", self._reservation,
                                 ReservationRequest(version=PROTOCOL_VERSION, pipeline=pipeline,
                                                    fingerprint=fingerprint, known=known), probe=False)
            self.reservation_offered = response is not None
        if response is None:
            return leases.read_newest(self._store, pipeline, fingerprint, known, via_service=False)
        if not response.generation:
            return 0, None, []
        return response.generation, response.context, list(response.holders)

    def info(self) -> Optional[dict[str, Any]]:
        """The server's service version, methods and RPC counts by method; None without the service."""
        response = self._rpc("Info", self._info, InfoRequest())
        if response is None:
            return None
        return {"version": response.version, "methods": list(response.methods),
                "calls": {item.method: item.count for item in response.calls}}
