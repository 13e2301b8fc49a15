"""docker-compose.yml: an MLMD server started as KFP starts it, behind MySQL 8.0, brought up with
pytest-docker (tests/compose.py). The cache suite itself runs on it as the ``compose`` backend of
``store_url`` (tests/test_cache.py ``[compose]``); these tests check the stack.

Images: ``MLMD_MYSQL_IMAGE``/``MLMD_SERVER_IMAGE``, else the official images; without a registry,
``eval "$(bash scripts/build_local_images.sh)"`` builds stand-ins (scripts/test.sh does). Without
Docker these tests skip with the reason, except under CI (``CI=true``), where that is a failure.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.connection import mysql_url
from tests.compose import COMPOSE_FILE, DEFAULT_IMAGES, PORTS, ROOT, ComposeStack, images, port_free
from tests.conftest import Chain

# KFP's manifest for the server: command and the flags it passes (values are the compose file's).
KFP_FLAGS = ("--grpc_port", "--mysql_config_host", "--mysql_config_port", "--mysql_config_database",
             "--mysql_config_user", "--mysql_config_password", "--enable_database_upgrade")


def _flags(stack: ComposeStack) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in stack.server_args)


def test_compose_file_defaults_to_the_official_images_kfp_deploys() -> None:
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    services = config["services"]
    assert services["mysql"]["image"] == "${MLMD_MYSQL_IMAGE:-mysql:8.0}"
    assert services["mlmd-server"]["image"] == (
        "${MLMD_SERVER_IMAGE:-gcr.io/tfx-oss-public/ml_metadata_store_server:1.17.1}")
    assert DEFAULT_IMAGES == {"MLMD_MYSQL_IMAGE": "mysql:8.0",
                              "MLMD_SERVER_IMAGE": "gcr.io/tfx-oss-public/ml_metadata_store_server:1.17.1"}
    assert services["mlmd-server"]["depends_on"] == {"mysql": {"condition": "service_healthy"}}
    assert {name: service["network_mode"] for name, service in services.items()} == {
        "mysql": "host", "mlmd-server": "host"}


def test_server_runs_as_kfp_runs_it(compose_stack: ComposeStack) -> None:
    server = compose_stack.inspect(compose_stack.server)
    assert server["Path"] == "/bin/metadata_store_server"
    assert tuple(arg.split("=", 1)[0] for arg in compose_stack.server_args) == KFP_FLAGS
    flags = _flags(compose_stack)
    assert flags["enable_database_upgrade"] == "true"
    assert flags["mysql_config_host"] == "127.0.0.1"
    assert compose_stack.url == f"grpc://127.0.0.1:{flags['grpc_port']}"
    assert server["HostConfig"]["NetworkMode"] == "host"
    assert server["Config"]["Image"] == images()["MLMD_SERVER_IMAGE"]
    mysql = compose_stack.inspect(compose_stack.mysql)
    assert mysql["Config"]["Image"] == images()["MLMD_MYSQL_IMAGE"]
    assert mysql["State"]["Health"]["Status"] == "healthy"


def test_cache_hits_after_the_server_restarts(compose_stack: ComposeStack, tmp_path: Path) -> None:
    """The server keeps nothing itself: a restarted server (as Kubernetes restarts a pod) still
    serves the earlier run as a cache source, from MySQL."""
    with compose_stack.fresh_store() as url:
        first = Chain(ExecutionCache(connect(url)), tmp_path).run("run-1")
        compose_stack.compose("restart", "mlmd-server")  # SIGTERM: the server stops cleanly
        compose_stack.wait_until_answers()
        chain = Chain(ExecutionCache(connect(url)), tmp_path)
        second = chain.run("run-2")
    assert chain.executed == []
    for task in "ABC":
        assert second[task].state == "CACHED"
        assert second[task].cached_execution_id == first[task].id
        assert second[task].output_artifact_ids == first[task].output_artifact_ids


def test_grpc_and_a_direct_mysql_connection_see_the_same_store(compose_stack: ComposeStack, tmp_path: Path) -> None:
    """What the cache writes through the server is in the MySQL database of its flags, and a direct
    connection (mysql://, as mlmd-cache also supports) finds the same cache source."""
    flags = _flags(compose_stack)
    direct_url = mysql_url(flags["mysql_config_host"], int(flags["mysql_config_port"]),
                           flags["mysql_config_database"], flags["mysql_config_user"], flags["mysql_config_password"])
    with compose_stack.fresh_store() as url:
        first = Chain(ExecutionCache(connect(url)), tmp_path).run("run-1")
        direct = ExecutionCache(connect(direct_url))
        [stored] = direct.store.get_executions_by_id([first["B"].id])
        hit = direct.find_source("chain", first["B"].fingerprint)
    assert stored.custom_properties["task_name"].string_value == "B"
    assert hit is not None and hit.source_execution_id == first["B"].id
    assert compose_stack.mysql_root(f"SELECT COUNT(*) FROM `{compose_stack.database}`.Execution").split() == ["3"]


def test_each_test_gets_an_empty_store(compose_stack: ComposeStack, tmp_path: Path) -> None:
    with compose_stack.fresh_store() as url:
        Chain(ExecutionCache(connect(url)), tmp_path).run("run-1")
    with compose_stack.fresh_store() as url:
        store = connect(url)
        assert (store.get_executions(), store.get_artifacts(), store.get_contexts()) == ([], [], [])
        # IDs start again at 1, as in a new deployment.
        again = Chain(ExecutionCache(store), tmp_path).run("run-1")
    assert again["A"].id == 1 and again["A"].output_artifact_ids == {"dataset": [1]}


@pytest.mark.parametrize("variable", sorted(DEFAULT_IMAGES))
def test_image_variables_choose_the_images(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert images()[variable] == DEFAULT_IMAGES[variable]
    monkeypatch.setenv(variable, "example/stand-in:1")
    assert images()[variable] == "example/stand-in:1"


@contextlib.contextmanager
def _taken(*ports: int) -> Iterator[None]:
    """The ports held, as another MySQL or another run's stack would hold them (one that holds a port
    already, this session's stack say, keeps it)."""
    held = []
    try:
        for port in ports:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind(("127.0.0.1", port))
                listener.listen()
                held.append(listener)
            except OSError:
                listener.close()
                assert not port_free(port)
        yield
    finally:
        for listener in held:
            listener.close()


def _pytest(test: str, **environ: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PORTS}
    env.update(environ)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_stack_comes_up_on_free_ports_when_its_default_ones_are_taken(compose_stack: ComposeStack) -> None:
    """23306 and 28080 in use (by this session's own stack, or held here): a second run of the compose
    tests picks free ports for a stack of its own (they failed with "Access denied for user 'mlmd'":
    MySQL could not bind, and its health check asked whoever held the port; and a run whose stack had
    the same ports took the other run's stack down)."""
    with _taken(*PORTS.values()):
        done = _pytest("tests/test_docker_compose.py::test_each_test_gets_an_empty_store")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    assert compose_stack.running(compose_stack.server) and compose_stack.answers()  # this session's, untouched


def test_a_given_port_that_is_taken_is_named_in_one_line(compose_stack: ComposeStack) -> None:
    with _taken(PORTS["MLMD_COMPOSE_MYSQL_PORT"]):
        done = _pytest("tests/test_docker_compose.py::test_each_test_gets_an_empty_store",
                       MLMD_COMPOSE_MYSQL_PORT=str(PORTS["MLMD_COMPOSE_MYSQL_PORT"]))
    assert done.returncode == 1
    assert (f"127.0.0.1:23306 is in use (MLMD_COMPOSE_MYSQL_PORT): set MLMD_COMPOSE_MYSQL_PORT to a free port, "
            "or leave it unset for one to be chosen") in done.stdout, done.stdout[-3000:]
    assert "Access denied" not in done.stdout
