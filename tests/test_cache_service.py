"""``mlmd_cache.v1.CacheService``: lookups over ``mlmd-cache serve`` in one round trip, with the same
answers as the embedded store, and plain MLMD calls against a server without the service.

Every store here is reached three ways at once: embedded (the database URL), through a ``serve``
that offers the cache service, and through a ``serve --no-cache-service`` over the same database.
Each test works in a pipeline of its own, so the servers are shared by the module.
"""
from __future__ import annotations

import contextlib
import datetime
import random
import time
import uuid
from pathlib import Path
from typing import Iterator, NamedTuple, Optional
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
from mlmd_cache.cache import invalidation, sources
from mlmd_cache.store import records
from mlmd_cache.store.cache_service import (CACHE_SERVICE_NAME, MAX_LOOKUP_LIMIT, InfoRequest, LookupRequest,
                                            LookupResponse, ReservationRequest)
from mlmd_cache.cache.leases import RESERVATION_CONTEXT_TYPE
from mlmd_cache.server.mlmd_service import MetadataStoreServer
from tests.backends import MYSQL_VARIABLE, fresh_database
from tests.servers import serving

LOOKUP = f"{CACHE_SERVICE_NAME}/Lookup"
RESERVATION = f"{CACHE_SERVICE_NAME}/Reservation"
PLAIN_LOOKUP = {f"ml_metadata.MetadataStoreService/{method}": 1 for method in (
    "GetContextByTypeAndName", "GetExecutionsByContext", "GetEventsByExecutionIDs", "GetArtifactsByID")}


class Ways(NamedTuple):
    """One store: its database URL, a serve with the cache service, a serve without it."""

    database: str
    service: str
    plain: str


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def ways(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ways]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path_factory.mktemp('cache-service') / 'store.sqlite'}"
        else:
            database = stack.enter_context(fresh_database(MYSQL_VARIABLE))
        connect(database)  # the schema, before two servers open it
        _, service = stack.enter_context(serving("--db", database))
        _, plain = stack.enter_context(serving("--db", database, "--no-cache-service"))
        yield Ways(database, service, plain)


class Key(NamedTuple):
    pipeline: str
    task: Task


def new_key(name: str = "train") -> Key:
    """A task of a pipeline of its own (so that tests sharing the store do not meet)."""
    pipeline = f"p-{uuid.uuid4().hex[:12]}"
    return Key(pipeline, Task(name, CacheKey.build(image="python:3.11", command=["python", "-c", name],
                                                   output_artifacts={"model": "system.Model"},
                                                   output_parameters={"loss": "NUMBER_DOUBLE"})))


def make_source(cache: ExecutionCache, key: Key, path: Path) -> int:
    """A new COMPLETE source of ``key`` whose output is the (new) file ``path``: whatever valid
    source exists must be made invalid first, or execute() hits it."""
    path.write_text("model")
    run = cache.pipeline_run(key.pipeline, f"run-{uuid.uuid4().hex[:8]}")
    result = cache.execute(run, key.task, lambda started: Outputs(artifacts={"model": path.as_uri()},
                                                                  parameters={"loss": 0.5}))
    assert result.state == "COMPLETE"
    return result.id


def answers(url: str, key: Key, via_service: Optional[bool]) -> tuple[list[tuple[int, Optional[str]]], Optional[int]]:
    """(every candidate with its problem, the hit's source) for ``key``, read over ``url``;
    ``via_service``: whether the cache service must have answered (None: an embedded store)."""
    store = connect(url)
    examined = [(candidate.execution.id, problem)
                for candidate, problem in sources.examine_sources(store, key.pipeline, key.task.fingerprint)]
    hit = sources.find_source(store, key.pipeline, key.task.fingerprint)
    if via_service is None:
        assert store.cache_service is None
    else:
        assert store.cache_service.offered is via_service
    return examined, hit and hit.source_execution_id


def assert_same_everywhere(ways: Ways, key: Key) -> tuple[list[tuple[int, Optional[str]]], Optional[int]]:
    embedded = answers(ways.database, key, None)
    assert answers(ways.service, key, True) == embedded
    assert answers(ways.plain, key, False) == embedded
    return embedded


def calls_made(url: str, action) -> dict[str, int]:
    """The RPCs ``action()`` made to the server at ``url``, as its cache service counts them."""
    counter = connect(url).cache_service  # one connection, opened before: connect() makes a call too

    def calls() -> dict[str, int]:
        info = counter.info()
        assert info is not None and info["version"] == 1 and "Lookup" in info["methods"]
        return info["calls"]

    before = calls()
    action()
    after = calls()
    return {method: count - before.get(method, 0) for method, count in after.items()
            if count != before.get(method, 0) and not method.endswith("/Info")}


# ---------------------------------------------------------------- same answers as embedded


def test_a_hit(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    source = make_source(ExecutionCache(connect(ways.service)), key, tmp_path / "model")
    assert assert_same_everywhere(ways, key) == ([(source, None)], source)


def test_a_miss(ways: Ways) -> None:
    assert assert_same_everywhere(ways, new_key()) == ([], None)


def test_a_key_whose_only_run_failed(ways: Ways) -> None:
    key = new_key()
    cache = ExecutionCache(connect(ways.service))
    run = cache.pipeline_run(key.pipeline, "run")
    cache.fail(cache.start(run, key.task))  # RUNNING then FAILED: never a source, and no context of its own
    assert assert_same_everywhere(ways, key) == ([], None)


def test_a_source_whose_file_is_gone(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    source = make_source(ExecutionCache(connect(ways.service)), key, tmp_path / "model")
    (tmp_path / "model").unlink()
    examined, hit = assert_same_everywhere(ways, key)
    assert hit is None and [execution for execution, _ in examined] == [source]
    assert "no longer exists" in examined[0][1]


def test_a_source_whose_artifact_is_deleted(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    store = connect(ways.service)
    source = make_source(ExecutionCache(store), key, tmp_path / "model")
    [event] = [e for e in store.get_events_by_execution_ids([source]) if e.type == mlmd.Event.OUTPUT]
    [artifact] = store.get_artifacts_by_id([event.artifact_id])
    artifact.state = mlmd.Artifact.DELETED
    store.put_artifacts([artifact])
    examined, hit = assert_same_everywhere(ways, key)
    assert hit is None and examined == [(source, f"output artifact {artifact.id} is DELETED")]


def test_several_sources_the_newest_valid_one_wins(ways: Ways, tmp_path: Path) -> None:
    """Seven sources, newest first: the five newest lost their files, the two oldest are valid; the
    first round reads four, so the hit (the sixth) comes from the second round."""
    key = new_key()
    cache = ExecutionCache(connect(ways.service))
    made = []
    for index in range(7):
        made.append(make_source(cache, key, tmp_path / f"model-{index}"))
        (tmp_path / f"model-{index}").unlink()  # so the next execute() misses
    for index in (0, 1):
        (tmp_path / f"model-{index}").write_text("model again")
    examined, hit = assert_same_everywhere(ways, key)
    assert [execution for execution, _ in examined] == made[::-1]
    assert [problem is None for _, problem in examined] == [False] * 5 + [True] * 2
    assert hit == made[1]


def test_an_invalidated_source_costs_one_round_trip_too(ways: Ways, tmp_path: Path) -> None:
    """mlmd-cache invalidate's rule reads the invalidations the key's flags name by ID: the service
    sends them, so the lookup is still one Lookup, with the same answers as embedded."""
    key = new_key()
    store = connect(ways.service)
    older = make_source(ExecutionCache(store), key, tmp_path / "model-0")
    (tmp_path / "model-0").unlink()
    newer = make_source(ExecutionCache(store), key, tmp_path / "model-1")
    (tmp_path / "model-0").write_text("model again")
    invalidation.invalidate(store, execution=newer, reason="bad labels")
    examined, hit = assert_same_everywhere(ways, key)
    assert hit == older and examined[0][0] == newer and "bad labels" in examined[0][1]
    assert calls_made(ways.service, lambda: sources.find_source(store, key.pipeline, key.task.fingerprint)) == \
        {LOOKUP: 1}


def test_a_rule_of_the_client_applies_to_what_the_service_sent(ways: Ways, tmp_path: Path) -> None:
    """Max staleness, decided by the client on the candidates the service sent: the same answers."""
    key = new_key()
    source = make_source(ExecutionCache(connect(ways.service)), key, tmp_path / "model")
    for limit, valid in ((datetime.timedelta(days=1), True), (datetime.timedelta(microseconds=1), False)):
        rules = sources.SourceRules(max_staleness=limit)
        found = {url: sources.look_up(connect(url), key.pipeline, key.task.fingerprint, rules)
                 for url in (ways.database, ways.service, ways.plain)}
        assert {url: (f.hit and f.hit.source_execution_id) for url, f in found.items()} == \
            dict.fromkeys(found, source if valid else None)
        rejected = {f.rejected for f in found.values()}
        assert len(rejected) == 1 and (not valid) == bool(rejected.pop())


def test_the_contexts_a_rule_reads_by_id_come_with_the_candidates(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """When sources.rule_context_ids names contexts for a key (the invalidations of a flagged key,
    say), the service reads them with the candidates, and the rules' get_contexts_by_id is answered
    without a round trip; other IDs are still read from the store. (An in-process server, so that
    the hook can be given IDs.)"""
    server = MetadataStoreServer(f"sqlite:///{tmp_path / 'store.sqlite'}", port=0, log=lambda line: None)
    server.start()
    try:
        key = new_key()
        store = connect(server.address)
        source = make_source(ExecutionCache(store), key, tmp_path / "model")
        context = sources.source_context(store, key.pipeline, key.task.fingerprint)
        [other] = store.put_contexts([mlmd.Context(type_id=context.type_id, name="another")])
        monkeypatch.setattr(sources, "rule_context_ids", lambda c: [other, 10**9] if c.id == context.id else [])
        found = store.cache_service.lookup(key.pipeline, key.task.fingerprint, limit=4)
        assert [c.execution.id for c in found.candidates] == [source]
        before = server.calls.snapshot()
        assert [c.name for c in found.facts.get_contexts_by_id([other, 10**9])] == ["another"]
        assert found.facts.get_contexts_by_id([10**9]) == []
        assert server.calls.snapshot() == before  # answered from what the Lookup sent
        assert [c.id for c in found.facts.get_contexts_by_id([context.id])] == [context.id]  # not sent: a call
        assert server.calls.snapshot() != before
        assert sources.find_source(store, key.pipeline, key.task.fingerprint).source_execution_id == source
    finally:
        server.stop(None)


# ---------------------------------------------------------------- round trips


def test_a_lookup_is_one_round_trip(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    cache = ExecutionCache(connect(ways.service))
    source = make_source(cache, key, tmp_path / "model")
    run = cache.pipeline_run(key.pipeline, "again")
    assert calls_made(ways.service, lambda: cache.lookup(run, key.task)) == {LOOKUP: 1}
    assert calls_made(ways.service, lambda: cache.find_source(key.pipeline, "f" * 64)) == {LOOKUP: 1}  # a miss
    # The same lookup without the service: four MLMD calls.
    plain = ExecutionCache(connect(ways.service))
    plain.store.cache_service = None
    assert calls_made(ways.service, lambda: plain.lookup(run, key.task)) == PLAIN_LOOKUP
    assert cache.lookup(run, key.task).source_execution_id == source


def test_a_server_without_the_service_is_asked_once(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    cache = ExecutionCache(connect(ways.plain))
    assert cache.store.cache_service.offered is None
    source = make_source(cache, key, tmp_path / "model")  # its lookup learnt that the service is not there
    assert cache.store.cache_service.offered is False
    assert cache.store.cache_service.info() is None
    for _ in range(3):
        assert cache.find_source(key.pipeline, key.task.fingerprint).source_execution_id == source


def test_a_bad_request_is_refused(ways: Ways) -> None:
    with grpc.insecure_channel(ways.service.removeprefix("grpc://")) as channel:
        lookup = channel.unary_unary(f"/{LOOKUP}", request_serializer=LookupRequest.SerializeToString)
        for request in (LookupRequest(version=1, pipeline="p", fingerprint="f", limit=0),
                        LookupRequest(version=1, pipeline="p", fingerprint="f", limit=4, skip=5),
                        LookupRequest(version=1, pipeline="p", limit=4)):
            with pytest.raises(grpc.RpcError) as raised:
                lookup(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


def undecodable(request_class: type, count: int, seed: int) -> list[bytes]:
    """Byte strings that are not a ``request_class`` (seeded): a truncated varint, a field of the
    wrong wire type, a string that is not UTF-8, a length beyond the end, and random bytes that
    protobuf refuses too (random bytes are often a valid message of unknown fields)."""
    def refused(data: bytes) -> bool:
        try:
            request_class.FromString(data)
        except Exception:  # DecodeError: what protobuf refuses is what the test wants
            return True
        return False

    made = [data for data in (b"\x08", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x12\x02\xff\xfe",
                              b"\x12\x7f" + b"p" * 10, b"\x0f", b"\xff" * 16) if refused(data)]
    assert len(made) >= 4
    rng = random.Random(seed)
    while len(made) < count:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        if refused(data):
            made.append(data)
    return made


@pytest.mark.parametrize("seed", [23, 2323])
def test_undecodable_requests_are_invalid_argument_and_log_nothing(tmp_path: Path, seed: int) -> None:
    """As MLMD's own service does: raw bytes that are no request (to the cache service, and to the
    health service on the same port) answer INVALID_ARGUMENT, and the server's log gets nothing for
    them (gRPC's deserializer answered INTERNAL and logged a traceback per request)."""
    log: list[str] = []
    with serving("--db", f"sqlite:///{tmp_path / 'store.sqlite'}", log=log) as (process, url):
        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            stock = channel.unary_unary("/ml_metadata.MetadataStoreService/GetContexts")  # raw bytes both ways
            for data in undecodable(LookupRequest, 8, seed):
                with pytest.raises(grpc.RpcError) as raised:
                    stock(data, timeout=10)
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # MLMD's answer, to match
            for method, request_class in (("Lookup", LookupRequest), ("Reservation", ReservationRequest),
                                          ("Info", InfoRequest)):
                call = channel.unary_unary(f"/{CACHE_SERVICE_NAME}/{method}")  # no serializer: the bytes as given
                for data in undecodable(request_class, 12, seed):
                    with pytest.raises(grpc.RpcError) as raised:
                        call(data, timeout=10)
                    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data)
                    assert "Could not parse proto" in raised.value.details(), raised.value.details()
            for method in ("Check", "Watch"):  # the health service on the same port, likewise
                call = (channel.unary_unary if method == "Check" else channel.unary_stream)(f"/grpc.health.v1.Health/{method}")
                for data in undecodable(health_pb2.HealthCheckRequest, 4, seed):
                    with pytest.raises(grpc.RpcError) as raised:
                        list(call(data, timeout=10)) if method == "Watch" else call(data, timeout=10)
                    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data)
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(service=CACHE_SERVICE_NAME), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
            watched = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert next(watched).status == health_pb2.HealthCheckResponse.SERVING
            watched.cancel()
            # and the server still answers well-formed requests
            answer = channel.unary_unary(f"/{CACHE_SERVICE_NAME}/Lookup", request_serializer=LookupRequest.SerializeToString,
                                         response_deserializer=LookupResponse.FromString)(
                LookupRequest(version=1, pipeline="p", fingerprint="f", limit=4), timeout=10)
            assert not answer.found
        time.sleep(0.5)  # what the server would log for the last request has reached the pipe (no assert on time)
        written = list(log)
    assert len(written) == 1 and " on grpc://" in written[0], written  # the start line, nothing per request


def test_a_lookup_limit_is_clamped_as_mlmd_clamps_max_result_size(tmp_path: Path) -> None:
    """A Lookup reads at most MAX_LOOKUP_LIMIT executions whatever ``limit`` asks (2**32 - 1 made
    the server read the whole key); the client still finds a source deeper than that, with MLMD's
    paged calls. MLMD's own list calls clamp max_result_size the same way (and refuse 0, as limit 0 is)."""
    database = f"sqlite:///{tmp_path / 'store.sqlite'}"
    key = new_key()
    cache = ExecutionCache(connect(database))
    source = make_source(cache, key, tmp_path / "model")
    store = connect(database)
    context = store.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE,
                                                 records.cache_source_context_name(key.pipeline, key.task.fingerprint))
    type_id = store.put_execution_type(mlmd.ExecutionType(name="filler"))
    newer = store.put_executions([mlmd.Execution(type_id=type_id) for _ in range(MAX_LOOKUP_LIMIT + 100)])
    store.put_attributions_and_associations([], [mlmd.Association(context_id=context.id, execution_id=execution)
                                                 for execution in newer])
    with serving("--db", database) as (_, url):
        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            lookup = channel.unary_unary(f"/{LOOKUP}", request_serializer=LookupRequest.SerializeToString,
                                         response_deserializer=LookupResponse.FromString)
            for limit in (MAX_LOOKUP_LIMIT + 1, 2 ** 31, 2 ** 32 - 1):
                answer = lookup(LookupRequest(version=1, pipeline=key.pipeline, fingerprint=key.task.fingerprint,
                                              limit=limit), timeout=30)
                assert answer.found and answer.executions_read == MAX_LOOKUP_LIMIT, limit
            answer = lookup(LookupRequest(version=1, pipeline=key.pipeline, fingerprint=key.task.fingerprint,
                                          limit=MAX_LOOKUP_LIMIT), timeout=30)
            assert answer.executions_read == MAX_LOOKUP_LIMIT and len(answer.candidates.executions) == 0
        # the source is older than the newest MAX_LOOKUP_LIMIT executions: found all the same
        over_grpc = connect(url)
        assert sources.find_source(over_grpc, key.pipeline, key.task.fingerprint).source_execution_id == source
        assert over_grpc.cache_service.offered is True


# ---------------------------------------------------------------- the stock client


def test_the_stock_client_works_against_serve_unchanged(ways: Ways, tmp_path: Path) -> None:
    key = new_key()
    source = make_source(ExecutionCache(connect(ways.service)), key, tmp_path / "model")
    parts = urlsplit(ways.service)
    stock = metadata_store.MetadataStore(mlmd.MetadataStoreClientConfig(host=parts.hostname, port=parts.port))
    context = stock.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE,
                                                 records.cache_source_context_name(key.pipeline, key.task.fingerprint))
    assert [e.id for e in stock.get_executions_by_context(context.id)] == [source]
    [new] = stock.put_contexts([mlmd.Context(type_id=context.type_id, name=f"stock-{uuid.uuid4().hex}")])
    assert stock.get_contexts_by_id([new])[0].id == new
    with grpc.insecure_channel(f"{parts.hostname}:{parts.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("ml_metadata.MetadataStoreService", CACHE_SERVICE_NAME):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("flags, offered", [((), True), (("--no-cache-service",), False)])
def test_a_server_group_offers_the_service_unless_told_not_to(flags: tuple[str, ...], offered: bool) -> None:
    with fresh_database(MYSQL_VARIABLE) as database, serving("--db", database, "--processes", "2", *flags) as (_, url):
        store = connect(url)
        assert sources.find_source(store, "p", "f" * 64) is None
        assert store.cache_service.offered is offered


# ---------------------------------------------------------------- reservations (dedup)


def test_a_claim_reads_the_key_s_reservation_in_one_round_trip(ways: Ways) -> None:
    key = new_key()
    holder = ExecutionCache(connect(ways.service))
    claimed = holder.claim(holder.pipeline_run(key.pipeline, "holder"), key.task)
    assert claimed.started is not None and claimed.generation == 1
    try:
        seen = {}
        for name, url in (("embedded", ways.database), ("service", ways.service), ("plain", ways.plain)):
            waiter = ExecutionCache(connect(url))
            run = waiter.pipeline_run(key.pipeline, f"waiter-{name}")
            waiter.types.context_type(RESERVATION_CONTEXT_TYPE)  # registered before the count
            found: dict = {}
            if name == "service":
                calls = calls_made(url, lambda: found.update(claim=waiter.claim(run, key.task)))
                assert calls == {RESERVATION: 1}, calls
                assert waiter.store.cache_service.reservation_offered is True
            else:
                found["claim"] = waiter.claim(run, key.task)
            held = found["claim"].held
            seen[name] = (held.generation, held.holder_id, held.state)
            if name == "service":  # without the RPC: the same probe in plain MLMD calls
                waiter.store.cache_service = None
                calls = calls_made(url, lambda: found.update(claim=waiter.claim(run, key.task)))
                assert calls["ml_metadata.MetadataStoreService/GetExecutionsByContext"] == 1 and RESERVATION not in calls
        assert set(seen.values()) == {(1, claimed.started.id, "held")}, seen
    finally:
        holder.fail(claimed.started)
    taken = ExecutionCache(connect(ways.plain)).claim(holder.pipeline_run(key.pipeline, "taker"), key.task)
    assert taken.started is not None and taken.generation == 2  # released: the next generation
