"""``mlmd-cache serve``, run as a real subprocess on the real MLMD core, used by the stock
``ml_metadata`` gRPC client (``MetadataStoreClientConfig(host, port)``) and by raw gRPC stubs.

MariaDB and PostgreSQL tests need ``eval "$(bash scripts/databases.sh start)"``; without it they are
skipped, except under CI (``CI=true``), where that is a failure. Each gets a new database
``mlmd_test_<random>``, dropped afterwards.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote, urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from ml_metadata.proto import metadata_store_service_pb2 as service_pb2

from mlmd_cache import StoreConnectionError, connect, redact_url
from mlmd_cache.store import mlmd_compat
from mlmd_cache.connection import connection_config
from mlmd_cache.server.mlmd_service import IDLE_CHECK_SECONDS, SERVICE_NAME
from tests.backends import SPECIAL_DATABASE, SPECIAL_PASSWORD, SPECIAL_USER, free_port, fresh_database, server_url
from tests.servers import serving

SERVER_VARIABLES = {"mysql": "MLMD_TEST_MYSQL_URL", "postgresql": "MLMD_TEST_POSTGRESQL_URL"}
MISSING_IN_CORE = ("GetLineageGraph", "GetParentContextsByContexts", "GetChildrenContextsByContexts")
SECRET = "s3cret-Pw"


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def new_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty store: a SQLite file, or a new database on the test server."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'served.sqlite'}"
        return
    with fresh_database(SERVER_VARIABLES[backend]) as url:
        yield url


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    with new_database(request.param, tmp_path) as url:
        yield url


def stock_client(url: str, **config) -> metadata_store.MetadataStore:
    """The stock ml_metadata client, on gRPC, for ``grpc://host:port``."""
    parts = urlsplit(url)
    return metadata_store.MetadataStore(mlmd.MetadataStoreClientConfig(host=parts.hostname, port=parts.port, **config))


def raw_call(url: str, method: str, request: bytes = b"", timeout: float = 10.0) -> bytes:
    """One unary call of MetadataStoreService by name, bytes in and out (so any method can be called)."""
    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        return channel.unary_unary(f"/{SERVICE_NAME}/{method}")(request, timeout=timeout)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlmd_cache", "serve", *args]


@contextlib.contextmanager
def started(*args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``mlmd-cache serve ARGS`` once it listens: (process, its startup line). Killed if still running."""
    process = subprocess.Popen(serve_command(*args), stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert " on grpc" in line, line + process.stderr.read()
        yield process, line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the server; (exit code, the rest of its stderr). Killed if not gone within 30 s."""
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        process.send_signal(signum)
        rest = process.stderr.read()
        return process.wait(), rest
    finally:
        watchdog.cancel()


class Proxy:
    """A TCP proxy in front of a database server, to drop the server's connections (``drop``), or
    to make the database unreachable (``cut``) and reachable again (``restore``)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with self._lock:  # the connection is over: not counted by drop()
            self._sockets = [sock for sock in self._sockets if sock not in (source, target)]
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> int:
        """Close every open proxied connection; how many there were."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(sockets) // 2

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept(): no connection gets through
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop()


def make_types(store) -> tuple[int, int, int]:
    artifact_type = store.put_artifact_type(mlmd.ArtifactType(name="system.Model", properties={"n": mlmd.INT}))
    execution_type = store.put_execution_type(mlmd.ExecutionType(name="system.ContainerExecution",
                                                                 properties={"task": mlmd.STRING}))
    context_type = store.put_context_type(mlmd.ContextType(name="system.PipelineRun"))
    return artifact_type, execution_type, context_type


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


# ---------------------------------------------------------------- the stock client (issue 3, part 4)


def test_stock_client_types_artifacts_executions_events_contexts_filters_lineage(db_url):
    with serving("--db", db_url) as (process, url):
        store = stock_client(url)
        artifact_type, execution_type, context_type = make_types(store)
        dataset_type = store.put_artifact_type(mlmd.ArtifactType(name="system.Dataset"))
        assert [t.name for t in store.get_artifact_types()] == ["system.Model", "system.Dataset"]
        assert store.get_artifact_type("system.Model").properties["n"] == mlmd.INT
        assert store.get_execution_type("system.ContainerExecution").id == execution_type
        assert store.get_context_types_by_id([context_type])[0].name == "system.PipelineRun"

        # A two-step pipeline: ingest -> train, in a run context that is a child of a pipeline context.
        [pipeline, run] = store.put_contexts([mlmd.Context(type_id=context_type, name="pipeline"),
                                              mlmd.Context(type_id=context_type, name="run-1")])
        store.put_parent_contexts([mlmd.ParentContext(child_id=run, parent_id=pipeline)])
        [raw] = store.put_artifacts([mlmd.Artifact(type_id=dataset_type, uri="gs://data/raw",
                                                   state=mlmd.Artifact.LIVE)])
        ingest, [_, dataset], _ = store.put_execution(
            mlmd.Execution(type_id=execution_type, properties={"task": mlmd.Value(string_value="ingest")},
                           last_known_state=mlmd.Execution.COMPLETE),
            [(store.get_artifacts_by_id([raw])[0], mlmd.Event(type=mlmd.Event.INPUT)),
             (mlmd.Artifact(type_id=dataset_type, uri="gs://data/clean"), mlmd.Event(type=mlmd.Event.OUTPUT))],
            [store.get_contexts_by_id([run])[0]])
        [train] = store.put_executions([mlmd.Execution(
            type_id=execution_type, properties={"task": mlmd.Value(string_value="train")},
            custom_properties={"cache_fingerprint": mlmd.Value(string_value="f00d")},
            last_known_state=mlmd.Execution.COMPLETE)])
        [model] = store.put_artifacts([mlmd.Artifact(type_id=artifact_type, uri="gs://models/1",
                                                     properties={"n": mlmd.Value(int_value=7)})])
        store.put_events([mlmd.Event(artifact_id=dataset, execution_id=train, type=mlmd.Event.INPUT),
                          mlmd.Event(artifact_id=model, execution_id=train, type=mlmd.Event.OUTPUT)])
        store.put_attributions_and_associations([mlmd.Attribution(artifact_id=model, context_id=run)],
                                                [mlmd.Association(execution_id=train, context_id=run)])

        # Reads by id, type, URI, context, and events.
        assert store.get_artifacts_by_id([model])[0].properties["n"].int_value == 7
        assert {a.uri for a in store.get_artifacts_by_type("system.Dataset")} == {"gs://data/raw", "gs://data/clean"}
        assert [a.id for a in store.get_artifacts_by_uri("gs://models/1")] == [model]
        assert {e.id for e in store.get_executions_by_context(run)} == {ingest, train}
        assert {a.id for a in store.get_artifacts_by_context(run)} == {raw, dataset, model}
        assert [c.id for c in store.get_contexts_by_execution(train)] == [run]
        assert [c.id for c in store.get_parent_contexts_by_context(run)] == [pipeline]
        assert [c.id for c in store.get_children_contexts_by_context(pipeline)] == [run]
        events = store.get_events_by_execution_ids([train])
        assert {(e.artifact_id, e.type) for e in events} == {(dataset, mlmd.Event.INPUT), (model, mlmd.Event.OUTPUT)}
        assert {e.execution_id for e in store.get_events_by_artifact_ids([dataset])} == {ingest, train}

        # Filter queries, ordering and paging (the stock client follows next_page_token). MLMD 1.21
        # has no filters: the served core answers UNIMPLEMENTED, as MLMD's own server does.
        if mlmd_compat.has_filter_query():
            by_filter = store.get_executions(list_options=metadata_store.ListOptions(
                filter_query="custom_properties.cache_fingerprint.string_value = 'f00d'"))
            assert [e.id for e in by_filter] == [train]
            in_run = store.get_executions(list_options=metadata_store.ListOptions(filter_query="contexts_a.name = 'run-1'"))
            assert {e.id for e in in_run} == {ingest, train}
            assert [a.id for a in store.get_artifacts(list_options=metadata_store.ListOptions(
                filter_query="uri LIKE 'gs://data/%'"))] == [raw, dataset]
        else:
            with pytest.raises(errors.UnimplementedError, match="filter_query is not supported"):
                store.get_executions(list_options=metadata_store.ListOptions(filter_query="contexts_a.name = 'run-1'"))
        newest_first = store.get_artifacts(list_options=metadata_store.ListOptions(
            limit=2, order_by=metadata_store.OrderByField.ID, is_asc=False))
        assert [a.id for a in newest_first] == [model, dataset]

        # get_lineage_subgraph: from the model, upstream through train and ingest to the raw data
        # (MLMD 1.21 takes starting nodes only as a filter: there the same graph is traced by
        # mlmd-cache's own mlmd_compat.lineage_subgraph over the stock client's calls).
        if mlmd_compat.has_filter_query():
            graph = store.get_lineage_subgraph(mlmd.LineageSubgraphQueryOptions(
                starting_artifacts=mlmd.LineageSubgraphQueryOptions.StartingNodes(filter_query="uri = 'gs://models/1'"),
                max_num_hops=4))
        else:
            with pytest.raises(errors.UnimplementedError):
                store.get_lineage_subgraph(mlmd.LineageSubgraphQueryOptions(
                    starting_artifacts=mlmd.LineageSubgraphQueryOptions.StartingNodes(filter_query="uri = 'gs://models/1'"),
                    max_num_hops=4))
            graph = mlmd_compat.lineage_subgraph(store, [model], [], hops=4)
            graph.artifact_types.extend(store.get_artifact_types_by_id(sorted({a.type_id for a in graph.artifacts})))
        assert {a.id for a in graph.artifacts} == {raw, dataset, model}
        assert {e.id for e in graph.executions} == {ingest, train}
        assert len(graph.events) == 4
        assert {t.name for t in graph.artifact_types} == {"system.Model", "system.Dataset"}

        assert process.poll() is None
    # Written to the database itself: an embedded connection reads the same records.
    direct = connect(db_url)
    assert {e.id for e in direct.get_executions_by_context(run)} == {ingest, train}
    assert direct.get_artifacts_by_id([model])[0].uri == "gs://models/1"


# ---------------------------------------------------------------- status codes and every RPC


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory) -> Iterator[str]:
    with serving("--db", f"sqlite:///{tmp_path_factory.mktemp('served') / 'm.sqlite'}") as (_, url):
        yield url


FAILING_CALLS = {
    "type exists with other properties": (
        errors.AlreadyExistsError, lambda s, ids: s.put_artifact_type(
            mlmd.ArtifactType(name="system.Model", properties={"other": mlmd.DOUBLE}))),
    "context name taken": (
        errors.AlreadyExistsError, lambda s, ids: s.put_contexts([mlmd.Context(type_id=ids[2], name="run")])),
    "unknown type name": (errors.NotFoundError, lambda s, ids: s.get_artifact_type("no.such.Type")),
    "unknown type id": (
        errors.NotFoundError, lambda s, ids: s.put_artifacts([mlmd.Artifact(type_id=ids[0] + 999, uri="x")])),
    "malformed filter": (  # MLMD 1.21 evaluates no filter at all
        errors.InvalidArgumentError if mlmd_compat.has_filter_query() else errors.UnimplementedError,
        lambda s, ids: s.get_artifacts(list_options=metadata_store.ListOptions(filter_query="uri ="))),
    "type without a name": (errors.InvalidArgumentError, lambda s, ids: s.put_artifact_type(mlmd.ArtifactType())),
    "event without an execution": (
        errors.InvalidArgumentError, lambda s, ids: s.put_events([mlmd.Event(artifact_id=1, type=mlmd.Event.INPUT)])),
}


@pytest.fixture(scope="module")
def served_and_embedded(tmp_path_factory) -> Iterator[list]:
    """The same records in a store behind serve (stock gRPC client) and in an embedded store."""
    directory = tmp_path_factory.mktemp("errors")
    with serving("--db", f"sqlite:///{directory / 'served.sqlite'}") as (_, url):
        stores = [stock_client(url), connect(f"sqlite:///{directory / 'embedded.sqlite'}")]
        for store in stores:
            store.put_contexts([mlmd.Context(type_id=make_types(store)[2], name="run")])
        yield stores


@pytest.mark.parametrize("case", FAILING_CALLS)
def test_errors_keep_their_status_codes(case, served_and_embedded):
    """The stock client raises, over gRPC, the same exception with the same message as on an
    embedded connection to the same core."""
    expected, call = FAILING_CALLS[case]
    outcomes = []
    for store in served_and_embedded:
        ids = (store.get_artifact_type("system.Model").id, store.get_execution_type("system.ContainerExecution").id,
               store.get_context_type("system.PipelineRun").id)
        with pytest.raises(errors.StatusError) as caught:
            call(store, ids)
        # timestamps; protobuf 6's debug strings start with a marker and a random count of spaces per process
        message = re.sub(r"goo\.gle/debug\w+ +", "", re.sub(r"\d{13}", "<time>", str(caught.value)))
        outcomes.append((type(caught.value), message))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is expected


@pytest.mark.parametrize("method", MISSING_IN_CORE)
def test_rpc_the_core_lacks_is_unimplemented_with_its_name(sqlite_server, method):
    with pytest.raises(grpc.RpcError) as caught:
        raw_call(sqlite_server, method)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"{SERVICE_NAME}/{method}" in caught.value.details()
    assert stock_client(sqlite_server).get_context_types() is not None  # still serving


def test_every_rpc_of_the_service_answers(sqlite_server):
    """Each of the service's RPCs, called with an empty request, answers: a response, an MLMD error,
    or UNIMPLEMENTED for the three the core lacks; never a crash (UNKNOWN) or a dead server."""
    methods = service_pb2.DESCRIPTOR.services_by_name["MetadataStoreService"].methods
    assert len(methods) == 52
    codes = {}
    for method in methods:
        try:
            raw_call(sqlite_server, method.name)
            codes[method.name] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            codes[method.name] = error.code()
    assert {name for name, code in codes.items() if code == grpc.StatusCode.UNIMPLEMENTED} == set(MISSING_IN_CORE)
    assert grpc.StatusCode.UNKNOWN not in codes.values() and grpc.StatusCode.INTERNAL not in codes.values()
    assert codes["GetArtifactTypes"] == grpc.StatusCode.OK
    assert codes["PutArtifactType"] == grpc.StatusCode.INVALID_ARGUMENT  # no type name


def _without_a_value(message):
    message.custom_properties["note"].Clear()  # present, but none of the Value's fields set
    return message


def _proto_without_type_url(message):
    message.custom_properties["note"].proto_value.value = b"\x08\x01"
    return message


@pytest.mark.parametrize("method, call, where", [
    ("PutExecutions", lambda s, ids: s.put_executions([_without_a_value(mlmd.Execution(type_id=ids[1]))]),
     "executions[0].custom_properties['note']: a property value with none of"),
    ("PutArtifacts", lambda s, ids: s.put_artifacts([_proto_without_type_url(mlmd.Artifact(type_id=ids[0]))]),
     "artifacts[0].custom_properties['note']: a proto_value without a type_url"),
    ("PutExecution", lambda s, ids: s.put_execution(
        mlmd.Execution(type_id=ids[1]), [(_without_a_value(mlmd.Artifact(type_id=ids[0])), mlmd.Event(type=mlmd.Event.OUTPUT))],
        []), "artifact_event_pairs[0].artifact.custom_properties['note']: a property value with none of"),
    ("PutContexts", lambda s, ids: s.put_contexts([_without_a_value(mlmd.Context(type_id=ids[2], name="c"))]),
     "contexts[0].custom_properties['note']: a property value with none of"),
])
def test_property_values_that_harm_the_core_are_refused(sqlite_server, method, call, where):
    """The MLMD core aborts its whole process on a property value with no field set (a check
    failure, not an error), and stores a proto_value without a type URL that then fails every
    listing read: the server refuses both before the core sees them."""
    store = stock_client(sqlite_server)
    ids = make_types(store)
    before = len(store.get_executions()), len(store.get_artifacts()), len(store.get_contexts())
    with pytest.raises(errors.InvalidArgumentError, match=re.escape(where)):
        call(store, ids)
    assert (len(store.get_executions()), len(store.get_artifacts()), len(store.get_contexts())) == before


def test_health_check(sqlite_server):
    with grpc.insecure_channel(sqlite_server.removeprefix("grpc://")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- concurrency and lost connections

CLIENTS = 8
ROUNDS = 12


def run_client(url: str, n: int, ids: tuple[int, int, int], rounds: int = ROUNDS) -> list[int]:
    """One client's writes and reads, checked as it goes: its executions' IDs."""
    artifact_type, execution_type, context_type = ids
    store = stock_client(url)
    [run] = store.put_contexts([mlmd.Context(type_id=context_type, name=f"run-{n}-{uuid.uuid4().hex[:6]}")])
    run_context = store.get_contexts_by_id([run])[0]
    executions = []
    for i in range(rounds):
        [given] = store.put_artifacts([mlmd.Artifact(type_id=artifact_type, uri=f"mem://{n}/{i}/in",
                                                     properties={"n": mlmd.Value(int_value=n)})])
        execution, [_, made], _ = store.put_execution(
            mlmd.Execution(type_id=execution_type, properties={"task": mlmd.Value(string_value=f"{n}/{i}")},
                           last_known_state=mlmd.Execution.COMPLETE),
            [(store.get_artifacts_by_id([given])[0], mlmd.Event(type=mlmd.Event.INPUT)),
             (mlmd.Artifact(type_id=artifact_type, uri=f"mem://{n}/{i}/out"), mlmd.Event(type=mlmd.Event.OUTPUT))],
            [run_context])
        events = store.get_events_by_execution_ids([execution])
        assert {(e.artifact_id, e.type) for e in events} == {(given, mlmd.Event.INPUT), (made, mlmd.Event.OUTPUT)}
        assert {a.id: a.uri for a in store.get_artifacts_by_id([given, made])} == {
            given: f"mem://{n}/{i}/in", made: f"mem://{n}/{i}/out"}
        executions.append(execution)
    in_run = store.get_executions_by_context(run)
    assert sorted((e.id, e.properties["task"].string_value) for e in in_run) == [
        (execution, f"{n}/{i}") for i, execution in enumerate(executions)]
    return executions


def test_concurrent_clients(db_url):
    with serving("--db", db_url) as (process, url):
        ids = make_types(stock_client(url))
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda n: run_client(url, n, ids), range(CLIENTS)))
        assert process.poll() is None
    executions = [e for result in results for e in result]
    assert len(set(executions)) == CLIENTS * ROUNDS
    direct = connect(db_url)
    assert len(direct.get_executions()) == CLIENTS * ROUNDS
    assert len(direct.get_artifacts()) == 2 * CLIENTS * ROUNDS
    assert len(direct.get_events_by_execution_ids(executions)) == 2 * CLIENTS * ROUNDS


# ---------------------------------------------------------------- several server processes


def server_processes(parent: int) -> list[int]:
    """The process IDs whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return sorted(found)


def established_connections(pid: int, port: int) -> int:
    """How many TCP connections to local ``port`` the process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_processes_share_the_port_and_stop_together(backend, tmp_path):
    with new_database(backend, tmp_path) as db_url:
        with started("--db", db_url, "--port", "0", "--processes", "2") as (process, line):
            assert line.rstrip().endswith("(2 processes, 8 workers each; local connections only)") and "***" in line
            address = re.search(r"grpc://(\S+):(\d+)", line)
            url, port = f"grpc://{address[1]}:{address[2]}", int(address[2])
            children = server_processes(process.pid)
            assert len(children) == 2
            ids = make_types(stock_client(url))
            with ThreadPoolExecutor(CLIENTS) as pool:
                results = list(pool.map(lambda n: run_client(url, n, ids), range(CLIENTS)))
            # the kernel spreads connections over the processes: of 24 connections, both get some
            # (channels of one process share a connection unless each has its own subchannel pool)
            channels = [grpc.insecure_channel(f"{address[1]}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                        for _ in range(24)]
            request = service_pb2.GetArtifactTypesRequest().SerializeToString()
            for channel in channels:
                answer = service_pb2.GetArtifactTypesResponse.FromString(
                    channel.unary_unary(f"/{SERVICE_NAME}/GetArtifactTypes")(request, timeout=10))
                assert [t.name for t in answer.artifact_types] == ["system.Model"]
            assert all(established_connections(child, port) > 0 for child in children)
            for channel in channels:
                channel.close()
            code, rest = stop(process)
        assert code == 0 and rest.splitlines()[-1] == "mlmd-cache serve: stopped", rest
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
        direct = connect(db_url)
        assert len(direct.get_executions()) == CLIENTS * ROUNDS == len({e for r in results for e in r})


def test_a_process_that_dies_stops_the_group(tmp_path):
    with new_database("mysql", tmp_path) as db_url:
        with started("--db", db_url, "--port", "0", "--processes", "2") as (process, _):
            first, second = server_processes(process.pid)
            os.kill(first, signal.SIGKILL)
            watchdog = threading.Timer(30, process.kill)
            watchdog.start()
            rest = process.stderr.read()
            watchdog.cancel()
            assert process.wait() == 1
        assert "mlmd-cache serve: process 1 exited (code -9): stopping the others" in rest
        assert not Path(f"/proc/{second}").exists() or Path(f"/proc/{second}/stat").read_text().split()[2] == "Z"


def test_processes_need_a_database_server(tmp_path):
    done = subprocess.run(serve_command("--db", f"sqlite:///{tmp_path / 'm.sqlite'}", "--processes", "2"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("Error: several server processes need MySQL or PostgreSQL: "
                           "SQLite lets one writer in at a time\n")


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_lost_database_connections(backend, tmp_path):
    """Connections the database drops are replaced (MLMD's PostgreSQL store never reconnects by
    itself); while the database is unreachable calls answer UNAVAILABLE, and the server recovers."""
    with new_database(backend, tmp_path) as db_url:
        parts = urlsplit(db_url)
        proxy = Proxy((parts.hostname, parts.port))
        try:
            proxied = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}").geturl()
            with serving("--db", proxied) as (process, url):
                ids = make_types(stock_client(url))
                with ThreadPoolExecutor(CLIENTS) as pool:  # every worker opens its connection
                    list(pool.map(lambda n: run_client(url, n, ids, rounds=1), range(CLIENTS)))
                    assert proxy.drop() >= 2
                    # Reads right after the loss: retried on a new connection.
                    assert all(pool.map(lambda n: stock_client(url).get_artifact_types(), range(CLIENTS)))
                    time.sleep(IDLE_CHECK_SECONDS + 0.3)
                    assert proxy.drop() >= 1
                    # Writes after an idle while: the dead connection is found before the write.
                    list(pool.map(lambda n: run_client(url, 100 + n, ids, rounds=1), range(CLIENTS)))

                proxy.cut()  # the database is down: reads and writes answer UNAVAILABLE, saying why
                with pytest.raises(errors.UnavailableError) as caught:
                    stock_client(url).get_artifact_types()
                assert "refused" in str(caught.value) and parts.password not in str(caught.value)
                time.sleep(IDLE_CHECK_SECONDS + 0.3)  # (an outage lasts longer than the idle check)
                with pytest.raises(errors.UnavailableError):
                    stock_client(url).put_context_type(mlmd.ContextType(name="Down"))
                proxy.restore()
                run_client(url, 200, ids, rounds=1)
                assert process.poll() is None
        finally:
            proxy.cut()
        assert len(connect(db_url).get_executions()) == 2 * CLIENTS + 1


# ---------------------------------------------------------------- shutdown, startup line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_lets_the_call_in_flight_finish(signum, tmp_path):
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    with started("--db", db, "--port", "0") as (process, line):
        url = "grpc://" + line.split("grpc://")[1].split()[0]
        type_id = stock_client(url).put_artifact_type(mlmd.ArtifactType(name="Big", properties={"n": mlmd.INT}))
        request = service_pb2.PutArtifactsRequest(artifacts=[
            mlmd.Artifact(type_id=type_id, uri=f"/data/{i}", properties={"n": mlmd.Value(int_value=i)})
            for i in range(40_000)]).SerializeToString()  # about 1 MB, about a second of work on SQLite
        with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
            call = channel.unary_unary(f"/{SERVICE_NAME}/PutArtifacts").future(request, timeout=30)
            time.sleep(0.3)
            assert not call.done()
            code, rest = stop(process, signum)
            response = service_pb2.PutArtifactsResponse.FromString(call.result())
    assert len(response.artifact_ids) == 40_000
    assert code == 0, rest
    assert f"{signal.Signals(signum).name}: stopping" in rest and rest.rstrip().endswith("mlmd-cache serve: stopped")
    assert "Traceback" not in rest
    assert len(connect(db).get_artifacts_by_type("Big")) == 40_000


def test_startup_line_hides_the_password(tmp_path):
    with new_database("mysql", tmp_path) as db_url:
        password = urlsplit(db_url).password
        with started("--db", db_url, "--port", "0", "--workers", "3") as (process, line):
            port = int(line.split("grpc://127.0.0.1:")[1].split()[0])
            assert line.rstrip() == (f"mlmd-cache serve: {SERVICE_NAME} on grpc://127.0.0.1:{port} over "
                                     f"{db_url.replace(':' + password + '@', ':***@')} (3 workers; local connections only)")
            assert stock_client(f"grpc://127.0.0.1:{port}").get_artifact_types() == []
            code, rest = stop(process)
        assert code == 0 and password not in line + rest


def official_flags(url: str, port: int) -> list[str]:
    """The official server's flags (as in KFP's metadata-grpc-deployment) for a mysql:// URL."""
    parts = urlsplit(url)
    return [f"--grpc_port={port}", f"--mysql_config_host={parts.hostname}", f"--mysql_config_port={parts.port}",
            f"--mysql_config_database={parts.path.lstrip('/')}", f"--mysql_config_user={unquote(parts.username)}",
            f"--mysql_config_password={unquote(parts.password)}"]


def serve_official(url: str, upgrade_flag: str) -> None:
    """Serve ``url`` with the official flags: --grpc_port listens on 127.0.0.1 (not on every interface,
    as the official server does); the startup line hides the password; records land in the database."""
    port = free_port()
    with started(*official_flags(url, port), upgrade_flag) as (process, line):
        assert f"on grpc://127.0.0.1:{port} over {redact_url(url)} (8 workers; local connections only)" in line
        marker = f"Probe_{uuid.uuid4().hex}"
        stock_client(f"grpc://127.0.0.1:{port}").put_context_type(mlmd.ContextType(name=marker))
        code, rest = stop(process)
    assert code == 0 and unquote(urlsplit(url).password) not in line + rest
    assert connect(url).get_context_type(marker).name == marker


def test_official_flags_upgrade_an_old_schema(tmp_path):
    with new_database("mysql", tmp_path) as url:
        connect(url)
        metadata_store.downgrade_schema(connection_config(url), downgrade_to_schema_version=7)
        done = subprocess.run(serve_command(*official_flags(url, free_port())), capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 1
        assert "MLMD database version 7 is older than library version" in one_line_error(done.stderr)
        serve_official(url, "--enable_database_upgrade=true")


def test_official_flags_special_password_and_bare_upgrade_flag():
    # scripts/databases.sh makes the user mlmd_special, whose password has characters a URL encodes.
    parts = urlsplit(server_url(SERVER_VARIABLES["mysql"]))
    url = parts._replace(netloc=f"{SPECIAL_USER}:{quote(SPECIAL_PASSWORD, safe='')}@{parts.hostname}:{parts.port}",
                         path=f"/{SPECIAL_DATABASE}").geturl()
    serve_official(url, "--enable_database_upgrade")


# ---------------------------------------------------------------- TLS


def self_signed(directory: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    with started("--db", f"sqlite:///{tmp_path / 'm.sqlite'}", "--port", "0",
                 "--tls-cert", str(cert), "--tls-key", str(key)) as (process, line):
        port = int(line.split("grpcs://127.0.0.1:")[1].split()[0])
        ssl_config = mlmd.MetadataStoreClientConfig.SSLConfig(custom_ca=cert.read_text())
        store = stock_client(f"grpc://localhost:{port}", ssl_config=ssl_config)
        type_id = store.put_artifact_type(mlmd.ArtifactType(name="Secret"))
        assert [t.id for t in store.get_artifact_types()] == [type_id]
        with pytest.raises((errors.UnavailableError, errors.DeadlineExceededError)):  # plaintext is refused
            stock_client(f"grpc://127.0.0.1:{port}", client_timeout_sec=5).get_artifact_types()
        (tmp_path / "other").mkdir()
        other, _ = self_signed(tmp_path / "other")
        # mlmd-cache's own clients: grpcs:// with the CA file
        ours = connect(f"grpcs://localhost:{port}?ca={quote(str(cert))}")
        assert [t.name for t in ours.get_artifact_types()] == ["Secret"]
        result = subprocess.run([sys.executable, "-m", "mlmd_cache", "index", "--json", "--db",
                                 f"grpcs://127.0.0.1:{port}?ca={quote(str(cert))}"], capture_output=True, text=True)
        assert result.returncode == 0 and json.loads(result.stdout)["pipelines"] == [], result.stderr
        for url, message in [
            (f"grpc://127.0.0.1:{port}", "the server closed the connection (does it speak TLS? then use grpcs://)"),
            (f"grpcs://127.0.0.1:{port}", "CERTIFICATE_VERIFY_FAILED"),
            (f"grpcs://127.0.0.1:{port}?ca={quote(str(other))}", "signed by the CA file given?"),
        ]:
            started_at = time.monotonic()
            with pytest.raises(StoreConnectionError, match=re.escape(message)):
                connect(url)
            assert time.monotonic() - started_at < 3  # at once, not after the connect timeout
        with pytest.raises((errors.UnavailableError, errors.DeadlineExceededError)):  # an unknown CA too
            stock_client(f"grpc://localhost:{port}", client_timeout_sec=5,
                         ssl_config=mlmd.MetadataStoreClientConfig.SSLConfig(custom_ca=other.read_text())
                         ).get_artifact_types()
        code, rest = stop(process)
    assert code == 0, rest


# ---------------------------------------------------------------- start-up errors


def test_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(serve_command("--db", f"sqlite:///{tmp_path / 'm.sqlite'}", "--port", str(port)),
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert one_line_error(done.stderr) == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"


START_UP_ERRORS = {  # (arguments, exit code, in the message); {port}: a closed port, {tmp}: tmp_path
    "database unreachable": (["--db", f"mysql://u:{SECRET}@127.0.0.1:{{port}}/mlmd_test"], 1,
                             "connection to 127.0.0.1:{port} refused"),
    "gRPC URL": (["--db", "grpc://127.0.0.1:{port}"], 2, "not grpc://"),
    "unknown flag": (["--bogus"], 2, "No such option '--bogus'"),
    "bad port": (["--port", "eighty"], 2, "Invalid value for '--port'"),
    "two ports": (["--grpc_port=1", "--port=2"], 2, "either --port or --grpc_port"),
    "MySQL host alone": (["--mysql_config_host=db.example"], 2,
                         "--mysql_config_host and --mysql_config_database go together"),
    "TLS cert alone": (["--tls-cert", "{tmp}/junk.pem"], 2, "--tls-cert and --tls-key go together"),
    "TLS file missing": (["--tls-cert", "{tmp}/nope.pem", "--tls-key", "{tmp}/nope.pem"], 2,
                         "nope.pem: No such file or directory"),
    "TLS file not PEM": (["--tls-cert", "{tmp}/junk.pem", "--tls-key", "{tmp}/junk.pem"], 1, "not a PEM certificate"),
}


@pytest.mark.parametrize("case", START_UP_ERRORS)
def test_start_up_errors_are_one_line(case, tmp_path):
    args, code, expected = START_UP_ERRORS[case]
    (tmp_path / "junk.pem").write_text("junk\n")
    port = free_port()
    args = [arg.format(port=port, tmp=tmp_path) for arg in args]
    if not any(arg.startswith("--db") or arg.startswith("--mysql") for arg in args):
        args = ["--db", f"sqlite:///{tmp_path / 'm.sqlite'}", *args]
    done = subprocess.run(serve_command(*args), capture_output=True, text=True, timeout=30)
    assert done.returncode == code, done.stderr
    line = one_line_error(done.stderr)
    assert expected.format(port=port) in line and SECRET not in line
    assert done.stdout == ""


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp shows them) that listen on ``port``."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                addresses.add(local.rsplit(":", 1)[0])
    return addresses


_LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, also as ::ffff:127.0.0.1
_ANY = {"00000000", "0" * 32, "0000000000000000FFFF000000000000"}


@pytest.mark.parametrize("flag", ["--port", "--grpc_port"])
def test_serve_listens_on_loopback_only_unless_host_says_otherwise(flag, tmp_path):
    port = free_port()
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with started("--db", store, f"{flag}={port}") as (process, line):
        assert f"on grpc://127.0.0.1:{port} " in line and line.rstrip().endswith("; local connections only)")
        assert _listening_addresses(port) <= _LOOPBACK, _listening_addresses(port)
        stop(process)
    with started("--db", store, f"{flag}={port}", "--host", "0.0.0.0") as (process, line):
        assert f"on grpc://0.0.0.0:{port} " in line and "open to other hosts, without authentication" in line
        assert _listening_addresses(port) & _ANY, _listening_addresses(port)
        stop(process)
