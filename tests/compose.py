"""The ``compose`` backend: the MLMD server of the top-level docker-compose.yml, brought up with
pytest-docker, as KFP runs it (``/bin/metadata_store_server`` with KFP's flags, behind MySQL 8.0).

The images are ``MLMD_MYSQL_IMAGE`` and ``MLMD_SERVER_IMAGE`` when set, else the official ones
(``mysql:8.0``, ``gcr.io/tfx-oss-public/ml_metadata_store_server:1.17.1``), pulled when missing.
Without a registry, ``eval "$(bash scripts/build_local_images.sh)"`` builds stand-ins and sets both
variables. When Docker, Compose or an image cannot be had, the tests that need the stack skip with
the reason, and fail under CI (``CI=true``) unless ``MLMD_TEST_DOCKER=0`` says Docker is not expected.

The stack comes up once per session (``docker_services``), on the first test that needs it, and goes
down at the end. The official server serves one database, so each test gets an empty store the way
a new deployment gets one: the server container is killed, the database is dropped and created again
(through the MySQL container's own client), and the server is started again; it creates MLMD's
schema itself, as it does on first start, and the test begins once it answers over gRPC
(``wait_until_responsive``). That takes 1.5 to 2 s a test with the stand-in server, most of it the
server's own start (Python importing kfp); the official C++ server starts at once.

The fixtures here (pytest-docker's ``docker_compose_*``, ``docker_setup``, ``docker_cleanup``, and
``compose_stack``) are imported by tests/conftest.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from ml_metadata import errors as mlmd_errors

from mlmd_cache import connect
from mlmd_cache.errors import MlmdCacheError

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The compose file's defaults: the official images.
DEFAULT_IMAGES = {
    "MLMD_MYSQL_IMAGE": "mysql:8.0",
    "MLMD_SERVER_IMAGE": "gcr.io/tfx-oss-public/ml_metadata_store_server:1.17.1",
}
BUILD_HINT = 'build stand-ins without a registry: eval "$(bash scripts/build_local_images.sh)"'
# The host ports the compose file listens on (network_mode: host), by the variable that moves each.
PORTS = {"MLMD_COMPOSE_MYSQL_PORT": 23306, "MLMD_COMPOSE_GRPC_PORT": 28080}
STARTUP_SECONDS = 120.0


def docker_unavailable(reason: str) -> None:
    """Skip; fail instead under CI (``CI=true``), where Docker is expected unless ``MLMD_TEST_DOCKER=0``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def _run(command: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def images() -> dict[str, str]:
    """The images the compose file will run: the variables' values, else the official images."""
    return {variable: os.environ.get(variable) or default for variable, default in DEFAULT_IMAGES.items()}


def check_docker() -> None:
    """Skip (or fail under CI) unless a Docker daemon answers and every image is here or can be pulled."""
    if os.environ.get("MLMD_TEST_DOCKER") == "0":
        pytest.skip("MLMD_TEST_DOCKER=0: the docker-compose tests are switched off")
    if shutil.which("docker") is None:
        docker_unavailable("docker is not installed (bash scripts/docker.sh start installs and starts it)")
    try:
        done = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    except subprocess.TimeoutExpired:
        docker_unavailable("the Docker daemon does not answer within 30 s")
    if done.returncode != 0:
        docker_unavailable(f"no Docker daemon answers ({_last_line(done)}); bash scripts/docker.sh start starts one")
    for variable, image in images().items():
        if _run(["docker", "image", "inspect", image]).returncode == 0:
            continue
        pulled = _run(["docker", "pull", image], timeout=600)
        if pulled.returncode != 0:
            docker_unavailable(f"image {image} ({variable}) is not here and cannot be pulled "
                               f"({_last_line(pulled)}); {BUILD_HINT}")


def compose_command() -> str:
    """``docker compose`` (Compose v2) when the docker CLI has it, else ``docker-compose`` (v1)."""
    if shutil.which("docker") is None:
        docker_unavailable("docker is not installed (bash scripts/docker.sh start installs and starts it)")
    if _run(["docker", "compose", "version"], timeout=30).returncode == 0:
        return "docker compose"
    if shutil.which("docker-compose"):
        return "docker-compose"
    docker_unavailable("neither `docker compose` nor `docker-compose` is installed (bash scripts/docker.sh start installs one)")


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port`` (nor on every address: binding loopback fails then too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def choose_ports(environ: dict = os.environ) -> dict[str, int]:
    """The compose file's ports for this session, set in ``environ``: a port given in its variable
    must be free (else one line says which is taken and which variable moves it); a default that is
    taken (another MySQL, another test run's stack) is replaced by a free one. With the default
    23306 taken, MySQL could not bind and its health check asked whatever held the port, so every
    compose test failed with "Access denied for user 'mlmd'" instead."""
    chosen = {}
    for variable, default in PORTS.items():
        given = environ.get(variable)
        if given is not None:
            if not given.isdigit() or not 0 < int(given) < 65536:
                pytest.fail(f"{variable}={given!r} is not a port number", pytrace=False)
            if not port_free(int(given)):
                pytest.fail(f"127.0.0.1:{given} is in use ({variable}): set {variable} to a free port, "
                            "or leave it unset for one to be chosen", pytrace=False)
            chosen[variable] = int(given)
            continue
        port = default if port_free(default) else _free_port()
        while port in chosen.values():
            port = _free_port()
        environ[variable] = str(port)
        chosen[variable] = port
    return chosen


# ---------------------------------------------------------------- pytest-docker's fixtures


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return compose_command()


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    # Named by its gRPC port (choose_ports): a stack an interrupted run left on the same ports is
    # taken down first (docker_setup); another run's stack on other ports is not touched.
    return f"mlmd-cache-test-{os.environ.get('MLMD_COMPOSE_GRPC_PORT', '28080')}"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # Not pytest-docker's `up --build --wait`: Compose v1 (Debian bookworm's) has no --wait. `up -d`
    # waits for MySQL's health check (depends_on: service_healthy); compose_stack then waits for gRPC.
    return ["down -v --remove-orphans", "up -d"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v --remove-orphans"]


# ---------------------------------------------------------------- the stack


class ComposeStack:
    """The running docker-compose.yml stack: its containers, and empty stores on its MLMD server."""

    def __init__(self, command: str, project: str, services) -> None:
        self._compose = [*shlex.split(command), "-f", str(COMPOSE_FILE), "-p", project]
        self.services = services  # pytest-docker's Services
        self.mysql = self.container("mysql")
        self.server = self.container("mlmd-server")
        self.server_args: list[str] = self.inspect(self.server)["Args"]
        # The database the compose file gave both containers, as the MySQL container has it.
        environment = dict(item.split("=", 1) for item in self.inspect(self.mysql)["Config"]["Env"])
        self.database = environment["MYSQL_DATABASE"]
        port = next(arg.split("=", 1)[1] for arg in self.server_args if arg.startswith("--grpc_port="))
        self.url = f"grpc://127.0.0.1:{port}"

    def compose(self, *args: str, timeout: float = 120.0) -> str:
        done = _run([*self._compose, *args], timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(self._compose[:2])} {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).split()
        if len(ids) != 1:
            raise RuntimeError(f"expected one {service} container, found {ids}")
        return ids[0]

    @staticmethod
    def inspect(container: str) -> dict:
        done = _run(["docker", "inspect", container])
        if done.returncode != 0:
            raise RuntimeError(f"docker inspect {container} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)[0]

    def logs(self, container: str, lines: int = 20) -> str:
        done = _run(["docker", "logs", "--tail", str(lines), container])
        return (done.stdout + done.stderr).strip()

    def answers(self) -> bool:
        """The MLMD server answers a real call over gRPC."""
        try:
            connect(self.url, timeout=2).get_context_types()
            return True
        except (MlmdCacheError, mlmd_errors.StatusError):  # not up yet, or still opening its database
            return False

    def wait_until_answers(self, timeout: float = STARTUP_SECONDS) -> None:
        try:
            self.services.wait_until_responsive(check=self.answers, timeout=timeout, pause=0.1)
        except Exception:
            raise RuntimeError(f"the MLMD server at {self.url} did not answer within {timeout:g} s; its log:\n"
                               + self.logs(self.server)) from None

    def mysql_root(self, sql: str) -> str:
        """Run SQL as MySQL's root, with the client and the password inside the MySQL container; its
        output, tab-separated."""
        done = _run(["docker", "exec", self.mysql, "sh", "-c",
                     'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot --batch --skip-column-names -e "$1"',
                     "sh", sql])
        if done.returncode != 0:
            raise RuntimeError(f"mysql in the MySQL container failed on {sql!r}: {done.stderr.strip()}")
        return done.stdout

    def recreate_database(self) -> None:
        """Drop and create the server's database, the server stopped meanwhile."""
        # SIGKILL: the database goes anyway, and a server still starting up may not handle SIGTERM yet.
        _run(["docker", "kill", self.server])  # fails harmlessly when it is not running
        self.mysql_root(f"DROP DATABASE IF EXISTS `{self.database}`; CREATE DATABASE `{self.database}`")
        started = _run(["docker", "start", self.server])
        if started.returncode != 0:
            raise RuntimeError(f"docker start mlmd-server failed: {started.stderr.strip()}")

    def running(self, container: str) -> bool:
        return bool(self.inspect(container)["State"]["Running"])

    @contextlib.contextmanager
    def fresh_store(self) -> Iterator[str]:
        """The grpc:// URL of the compose server over an empty database, for one test."""
        self.recreate_database()
        self.wait_until_answers()
        yield self.url
        if not self.running(self.server):
            raise RuntimeError("the compose mlmd-server container stopped during this test; its log:\n"
                               + self.logs(self.server))


@pytest.fixture(scope="session")
def compose_stack(request: pytest.FixtureRequest) -> ComposeStack:
    """docker-compose.yml up (pytest-docker's ``docker_services``), its MLMD server answering."""
    check_docker()  # before any docker command: skip (or fail under CI) with the reason
    docker_compose_command = request.getfixturevalue("docker_compose_command")
    # Before the project's name (it holds the gRPC port) and `up`. A port another run's stack holds
    # (a concurrent run, or one interrupted) is left to it: this run's stack gets other ports.
    choose_ports()
    docker_compose_project_name = request.getfixturevalue("docker_compose_project_name")
    try:
        services = request.getfixturevalue("docker_services")
    except Exception as error:
        # pytest-docker does not take down a stack whose `up` failed: do it here, keep the reason.
        done = _run([*shlex.split(docker_compose_command), "-f", str(COMPOSE_FILE), "-p",
                     docker_compose_project_name, "down", "-v", "--remove-orphans"])
        raise RuntimeError(f"docker-compose.yml did not come up with {images()}: {error}"
                           + ("" if done.returncode == 0 else f"\n(and down failed: {_last_line(done)})")) from None
    stack = ComposeStack(docker_compose_command, docker_compose_project_name, services)
    stack.wait_until_answers()
    return stack

