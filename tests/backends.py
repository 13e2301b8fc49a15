"""The stores the tests run on: every test gets an empty MLMD store, on the real MLMD core.

=================  =========================================================================
``sqlite``         a new SQLite file in the test's temporary directory
``mysql``          a new database on the MariaDB/MySQL server of ``MLMD_TEST_MYSQL_URL``
``postgresql``     a new database on the PostgreSQL server of ``MLMD_TEST_POSTGRESQL_URL``
``serve-sqlite``   ``mlmd-cache serve`` (a subprocess) over a SQLite file; the test gets its grpc:// URL
``serve-mysql``    ``mlmd-cache serve`` over a MariaDB/MySQL database; the test gets its grpc:// URL
=================  =========================================================================

``eval "$(bash scripts/databases.sh start)"`` starts the database servers and sets both variables.
Without a variable the backends that need it are skipped, except under CI (``CI=true``), where that
is a failure.

A new database is named ``mlmd_test_<random>`` (the test user may create those); MLMD itself creates
it, with its schema, on the first connection, as it does for any user. It is dropped after the test
with the server's own command-line client (``mariadb``/``mysql``, ``psql``), never through MLMD.

A ``mlmd-cache serve`` subprocess takes about 0.6 s to start (most of it importing ``kfp``), so each
``serve-*`` backend has one server for the whole session, started on first use, whose store is emptied
before every test: every row of every MLMD table is deleted and the ID counters are reset, outside
MLMD (``sqlite3``, the ``mariadb`` client), and the store is checked to be empty. Only ``MLMDEnv`` (the
schema version) is kept. A server can serve one database only, so this is the one way to share it.
A test after which the server is no longer running fails, and the next test gets a new server.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import unquote, urlsplit

import pytest

from tests.servers import serving

BACKENDS = ("sqlite", "mysql", "postgresql", "serve-sqlite", "serve-mysql")

# The account with a password full of URL-special characters that scripts/databases.sh makes on both servers.
SPECIAL_USER = "mlmd_special"
SPECIAL_PASSWORD = "p@ss:w/rd a'b\\c\"#?%"
SPECIAL_DATABASE = "mlmd_test_special"

MYSQL_VARIABLE = "MLMD_TEST_MYSQL_URL"
POSTGRESQL_VARIABLE = "MLMD_TEST_POSTGRESQL_URL"
# Not emptied: MLMD's schema version (one row in an empty store too), SQLite's ID counters (reset apart).
_KEPT_TABLES = {"MLMDEnv", "sqlite_sequence"}


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI (``CI=true``), where every backend must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def server_url(variable: str) -> str:
    """The URL in ``variable``; a skip when unset, or a failure under CI (CI=true)."""
    url = os.environ.get(variable)
    if url:
        return url
    unavailable(f"{variable} is not set: start the test databases with eval \"$(bash scripts/databases.sh start)\"")


def with_database(url: str, database: str) -> str:
    return urlsplit(url)._replace(path=f"/{database}").geturl()


def _client(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    unavailable(f"no {' or '.join(names)} command-line client on PATH (scripts/databases.sh installs it)")


def _sql_client(url: str) -> str:
    """The command-line client for the server of a mysql:// or postgresql:// URL (skip if none)."""
    return _client("mariadb", "mysql") if urlsplit(url).scheme in ("mysql", "mariadb") else _client("psql")


def run_sql(url: str, sql: str | list[str], *, database: Optional[str] = None) -> str:
    """Run ``sql`` on the server of a mysql:// or postgresql:// URL with its command-line client
    (in ``database``, default: none for MySQL, ``postgres`` for PostgreSQL); its output, tab-separated.
    A list is run statement by statement (psql: each outside a transaction block, as DROP DATABASE must be)."""
    statements = [sql] if isinstance(sql, str) else sql
    parts = urlsplit(url)
    password = unquote(parts.password or "")
    if parts.scheme in ("mysql", "mariadb"):
        command = [_sql_client(url), "--no-defaults", "--protocol=tcp", f"--host={parts.hostname}",
                   f"--port={parts.port or 3306}", f"--user={unquote(parts.username)}", "--batch",
                   "--skip-column-names", *([database] if database else []),
                   "--execute", "; ".join(statements)]
        env = dict(os.environ, MYSQL_PWD=password)
    else:
        command = [_sql_client(url), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", f"--host={parts.hostname}",
                   f"--port={parts.port or 5432}", f"--username={unquote(parts.username)}",
                   f"--dbname={database or 'postgres'}", *(a for one in statements for a in ("--command", one))]
        env = dict(os.environ, PGPASSWORD=password)
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"{Path(command[0]).name} failed on {statements[-1][:80]!r}: {output}")
    return done.stdout


def drop_database(url: str) -> None:
    """Drop the database of a mysql:// or postgresql:// URL if it exists (MLMD-free)."""
    database = urlsplit(url).path.lstrip("/")
    assert database.startswith("mlmd_test_"), database  # never anything but our own
    if urlsplit(url).scheme in ("mysql", "mariadb"):
        run_sql(url, f"DROP DATABASE IF EXISTS `{database}`")
    else:
        # A connection a test left open (a kept traceback holds its store) would block the drop: end the
        # test user's own ones first. Not DROP ... WITH (FORCE): that also tries to end an autovacuum
        # worker busy in the database, which only a superuser may ("must be a member of the role whose
        # process is being terminated"); a plain DROP stops autovacuum itself and waits up to 5 s for
        # the ended connections to go.
        run_sql(url, ["SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = '{database}' AND usename = current_user AND pid <> pg_backend_pid()",
                      f'DROP DATABASE IF EXISTS "{database}"'])


@contextlib.contextmanager
def fresh_database(variable: str) -> Iterator[str]:
    """The URL of a database that does not exist yet on the server of ``variable``; dropped afterwards."""
    url = with_database(server_url(variable), f"mlmd_test_{uuid.uuid4().hex[:16]}")
    _sql_client(url)  # skip (or fail under CI) now if it cannot be dropped
    try:
        yield url
    finally:
        drop_database(url)


def _empty_sqlite(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if name not in _KEPT_TABLES]
        for table in tables:
            db.execute(f'DELETE FROM "{table}"')
        db.execute("DELETE FROM sqlite_sequence")
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = sum(db.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for table in tables)
        versions = db.execute("SELECT COUNT(*) FROM MLMDEnv").fetchone()[0]
    assert len(tables) >= 14 and rows == 0 and versions == 1, (path, tables, rows, versions)


def _empty_mysql(url: str) -> None:
    database = urlsplit(url).path.lstrip("/")
    tables = [name for name in run_sql(url, "SELECT table_name FROM information_schema.tables "
                                            f"WHERE table_schema = '{database}'").split()
              if name not in _KEPT_TABLES]
    # TRUNCATE also resets AUTO_INCREMENT; the last statement prints the rows left (0).
    sql = "".join(f"TRUNCATE TABLE `{table}`; " for table in tables)
    sql += "SELECT " + " + ".join(f"(SELECT COUNT(*) FROM `{table}`)" for table in tables)
    sql += ", (SELECT COUNT(*) FROM `MLMDEnv`)"
    rows, versions = map(int, run_sql(url, sql, database=database).split())
    assert len(tables) >= 14 and rows == 0 and versions == 1, (database, tables, rows, versions)


class SharedServer:
    """One ``mlmd-cache serve`` subprocess over one store, for many tests; :meth:`fresh_store` empties it."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend, self.directory = backend, directory
        self._stack: Optional[contextlib.ExitStack] = None
        self._process: Optional[subprocess.Popen] = None
        self._url = ""  # grpc://host:port
        self._store = ""  # the SQLite file, or the mysql:// URL of the database, that it serves

    def _start(self) -> None:
        stack = contextlib.ExitStack()
        try:
            if self.backend == "serve-sqlite":
                self._store = str(self.directory / f"served-{uuid.uuid4().hex[:8]}.sqlite")
                database_url = f"sqlite:///{self._store}"
            else:
                self._store = database_url = stack.enter_context(fresh_database(MYSQL_VARIABLE))
            # MLMD creates the schema (and the MySQL database) as the server opens the store.
            self._process, self._url = stack.enter_context(serving("--db", database_url))
        except BaseException:
            stack.close()
            raise
        self._stack = stack

    def close(self) -> None:
        stack, self._stack, self._process = self._stack, None, None
        if stack is not None:
            stack.close()

    @contextlib.contextmanager
    def fresh_store(self) -> Iterator[str]:
        if self.backend == "serve-mysql":
            server_url(MYSQL_VARIABLE)  # skip (or fail under CI) before starting anything
        if self._process is not None and self._process.poll() is not None:
            self.close()  # it died during an earlier test, which failed for it
        if self._process is None:
            self._start()
        if self.backend == "serve-sqlite":
            _empty_sqlite(Path(self._store))
        else:
            _empty_mysql(self._store)
        yield self._url
        if self._process.poll() is not None:
            code = self._process.returncode
            self.close()
            raise RuntimeError(f"mlmd-cache serve ({self.backend}) exited with code {code} during this test")


class Backends:
    """Fresh stores of every backend; :meth:`close` stops the session's shared servers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._servers: dict[str, SharedServer] = {}

    @contextlib.contextmanager
    def fresh_store(self, backend: str, directory: Path) -> Iterator[str]:
        """The URL of an empty MLMD store of ``backend`` (one of :data:`BACKENDS`) for one test, valid
        inside the ``with``; a new SQLite file goes into ``directory``."""
        if backend == "sqlite":
            yield f"sqlite:///{directory / 'mlmd.sqlite'}"
        elif backend in ("mysql", "postgresql"):
            with fresh_database(MYSQL_VARIABLE if backend == "mysql" else POSTGRESQL_VARIABLE) as url:
                yield url
        elif backend in ("serve-sqlite", "serve-mysql"):
            server = self._servers.setdefault(backend, SharedServer(backend, self.directory))
            with server.fresh_store() as url:
                yield url
        else:
            raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")

    def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()


def row_counts(url: str) -> dict[str, int]:
    """Rows in each table of the database of a mysql:// or postgresql:// URL (read with its
    command-line client, outside MLMD): equal before and after a command that must write nothing."""
    database = urlsplit(url).path.lstrip("/")
    if urlsplit(url).scheme in ("mysql", "mariadb"):
        query = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{database}'"
        quote = "`{}`".format
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        quote = '"{}"'.format
    tables = sorted(run_sql(url, query, database=database).split())
    if not tables:
        return {}
    counts = run_sql(url, "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {quote(t)})" for t in tables),
                     database=database).replace("|", " ").split()  # psql -A separates with |
    return dict(zip(tables, map(int, counts)))
