"""``mlmd_cache.v1.CacheService``: a cache lookup in one gRPC round trip, beside ``MetadataStoreService``:
its protocol (the messages) and its client. The server's half is :mod:`mlmd_cache.server.cache_service`.

Over plain MLMD calls a lookup is four round trips (the key's context by name, its executions, their
events, their artifacts). ``mlmd-cache serve`` also offers this small service on the same port, which
makes those reads next to the database (with :func:`mlmd_cache.store.source_records.read_round`, the very
code an embedded lookup runs) and sends back everything the validity rules need; the client then applies
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

``Reservation`` is the read of :func:`mlmd_cache.cache.dedup.claim` (:func:`mlmd_cache.store.lease_records.read_newest`:
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

from typing import Any, Callable, Optional, Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .client import mlmd_error
from .lease_records import read_newest
from .source_records import CandidateRound, assemble_candidates, read_round

__all__ = ["CACHE_SERVICE_NAME", "MAX_LOOKUP_LIMIT", "MAX_RESPONSE_BYTES", "METHODS", "PROTOCOL_VERSION",
           "CacheServiceClient", "messages"]

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
    has the service; when it has not, :meth:`lookup` is :func:`mlmd_cache.store.source_records.read_round`."""

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
                raise mlmd_error(error.code().value[0], error.details() or "") from None

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
        """:func:`mlmd_cache.store.source_records.read_round` in one round trip (``context`` is only used when
        the round is read with plain MLMD calls). A round deeper than the service reads
        (:data:`MAX_LOOKUP_LIMIT`) is read with MLMD's paged calls."""
        if limit > MAX_LOOKUP_LIMIT:
            return read_round(self._store, pipeline, fingerprint, limit, skip, context)
        request = LookupRequest(version=PROTOCOL_VERSION, pipeline=pipeline, fingerprint=fingerprint,
                                limit=limit, skip=skip)
        try:
            response = self._rpc("Lookup", self._lookup, request)
        except mlmd_errors.ResourceExhaustedError:
            response = None  # too many candidates for one answer: MLMD's paged calls read them
        if response is None:
            return read_round(self._store, pipeline, fingerprint, limit, skip, context)
        if not response.found:
            return None
        graph = response.candidates
        candidates = assemble_candidates(response.context, list(graph.executions), list(graph.events),
                                                 list(graph.artifacts))
        facts = (_RuleContexts(self._store, response.rule_context_ids, graph.contexts)
                 if response.rule_context_ids else self._store)
        return CandidateRound(response.context, candidates, response.executions_read, facts)

    def reservation(self, pipeline: str, fingerprint: str, known: int = 0
                    ) -> tuple[int, Optional[mlmd.Context], list[mlmd.Execution]]:
        """:func:`mlmd_cache.store.lease_records.read_newest` in one round trip, or with plain MLMD calls from a
        server without the RPC."""
        response = None
        if self.reservation_offered is not False and self.offered is not False:
            response = self._rpc("Reservation", self._reservation,
                                 ReservationRequest(version=PROTOCOL_VERSION, pipeline=pipeline,
                                                    fingerprint=fingerprint, known=known), probe=False)
            self.reservation_offered = response is not None
        if response is None:
            return read_newest(self._store, pipeline, fingerprint, known, via_service=False)
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
