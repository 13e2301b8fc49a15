"""The server's half of ``mlmd_cache.v1.CacheService`` (its protocol and client:
:mod:`mlmd_cache.store.cache_service`): a ``Lookup`` or a ``Reservation`` read next to the database by
the very code an embedded store runs (:func:`mlmd_cache.store.source_records.read_round`,
:func:`mlmd_cache.store.lease_records.read_newest`), through the server's own core stores
(:class:`CoreStore`), and ``Info``: the service's version, methods and the RPCs answered.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable, Optional

import grpc
from google.protobuf.message import DecodeError
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..cache import sources
from ..errors import StoreConnectionError
from ..store import records
from ..store.cache_service import (CACHE_SERVICE_NAME, MAX_LOOKUP_LIMIT, MAX_RESPONSE_BYTES, METHODS, PROTOCOL_VERSION,
                                   InfoRequest, InfoResponse, LookupRequest, LookupResponse, ReservationRequest,
                                   ReservationResponse)
from ..store.client import mlmd_error
from ..store.lease_records import read_newest
from ..store.source_records import read_round, source_context

__all__ = ["CACHE_SERVICE_NAME", "CallCounter", "CoreStore", "cache_service_handler"]


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
            raise mlmd_error(code, message.decode("utf-8", "replace"))
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
        context = source_context(store, pipeline, fingerprint)
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
    found = read_round(store, request.pipeline, request.fingerprint, limit, request.skip, context)
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
    generation, context, holders = read_newest(store, request.pipeline, request.fingerprint, request.known)
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
