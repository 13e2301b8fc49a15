"""What a database holds before MLMD opens it, and one creator of MLMD's schema at a time.

MLMD's C++ core creates its schema on every connection that finds none, and has no lock: two
processes opening a new database at once both create tables, and one fails ("MLMDEnv table exists
but no schema_version"; on SQLite "Concurrent writes aborted"). It also creates a schema in *any*
database it is pointed at, so a read-only query would turn a mistyped path, or somebody else's
database, into an MLMD store. So :func:`mlmd_cache.connect` looks first, with the backend's own
client (:mod:`sqlite3`, PyMySQL, psycopg), and when a schema must be made holds the backend's own
lock while MLMD makes it: ``flock`` on the SQLite file's directory, MySQL ``GET_LOCK``, a PostgreSQL
advisory lock. A store whose schema exists is opened without any lock.
"""
from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .errors import StoreConnectionError

__all__ = ["StoreState", "Contents", "SCHEMA_LOCK_SECONDS", "sqlite_contents", "sqlite_schema_lock",
           "ServerDatabase"]

SCHEMA_LOCK_SECONDS = 120.0
"""How long a process waits for another one that is creating the same store's schema."""

# The table MLMD writes its schema version into, last, when the schema is complete.
_ENV_TABLE = "mlmdenv"
_LOCK_NAME = "mlmd_cache.schema"


class StoreState(enum.Enum):
    MISSING = "missing"  # no file, or no database of that name
    EMPTY = "empty"  # exists, holds no table: MLMD may create its schema here
    MLMD = "mlmd"  # MLMD's schema, with its version
    UNFINISHED = "unfinished"  # MLMD's table is there but no version yet: being created right now
    FOREIGN = "foreign"  # tables, none of them MLMD's: somebody else's database


@dataclass(frozen=True)
class Contents:
    state: StoreState
    tables: tuple[str, ...] = ()

    def describe(self) -> str:
        shown = ", ".join(self.tables[:5]) + (", ..." if len(self.tables) > 5 else "")
        return f"it holds other tables ({shown}) and no MLMD schema"


def _contents(tables: list[str], has_version: Callable[[], bool]) -> Contents:
    if not tables:
        return Contents(StoreState.EMPTY)
    if _ENV_TABLE not in (name.lower() for name in tables):
        return Contents(StoreState.FOREIGN, tuple(sorted(tables)))
    return Contents(StoreState.MLMD if has_version() else StoreState.UNFINISHED, tuple(sorted(tables)))


# ---------------------------------------------------------------- SQLite


def sqlite_contents(path: str, shown: str) -> Contents:
    """What the SQLite file at ``path`` holds, read without writing (not even a journal)."""
    if not os.path.lexists(path):
        return Contents(StoreState.MISSING)
    if os.path.isdir(path):
        raise StoreConnectionError(f"{shown} is a directory, not an SQLite file")
    if not os.path.isfile(path):
        raise StoreConnectionError(f"{shown} is not a regular file")
    if os.path.getsize(path) == 0:
        return Contents(StoreState.EMPTY)
    try:
        with open(path, "rb") as file:
            header = file.read(16)
    except OSError as error:
        raise StoreConnectionError(f"cannot read {shown}: {error.strerror}") from None
    if header != b"SQLite format 3\x00":
        raise StoreConnectionError(f"{shown} is not an SQLite database (file is not a database)")
    for attempt in range(50):  # a writer in another process may hold the file for a moment
        try:
            connection = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=5)
            try:
                tables = [row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
                return _contents(tables, lambda: bool(connection.execute(
                    "SELECT COUNT(*) FROM MLMDEnv WHERE schema_version IS NOT NULL").fetchone()[0]))
            finally:
                connection.close()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise StoreConnectionError(f"cannot read {shown}: {error}") from None
            time.sleep(0.1)
        except sqlite3.DatabaseError as error:
            raise StoreConnectionError(f"{shown} is not a usable SQLite database ({error})") from None
    raise StoreConnectionError(f"cannot read {shown}: the file stayed locked by another process")


def _uri_path(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


@contextlib.contextmanager
def sqlite_schema_lock(path: str, shown: str) -> Iterator[None]:
    """Held while MLMD creates a schema in ``path``: an exclusive ``flock`` on its directory."""
    directory = os.path.dirname(path) or "."
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _wait_for(lambda: _try_flock(descriptor), shown)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _try_flock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for(acquired: Callable[[], bool], shown: str) -> None:
    deadline = time.monotonic() + SCHEMA_LOCK_SECONDS
    while not acquired():
        if time.monotonic() > deadline:
            raise StoreConnectionError(
                f"cannot open {shown}: another process has been creating its schema for over "
                f"{SCHEMA_LOCK_SECONDS:g} s")
        time.sleep(0.05)


# ---------------------------------------------------------------- MySQL and PostgreSQL


class ServerDatabase:
    """A MySQL or PostgreSQL database, seen through the server's own client library."""

    def __init__(self, kind: str, host: str, port: int, user: str, password: Optional[str], database: str,
                 shown: str, timeout: float) -> None:
        self.kind, self.host, self.port, self.user, self.password = kind, host, port, user, password
        self.database, self.shown, self.timeout = database, shown, timeout

    def _connect(self, database: Optional[str]):
        try:
            if self.kind == "mysql":
                import pymysql

                return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password or "",
                                       database=database, connect_timeout=self.timeout, autocommit=True,
                                       charset="utf8mb4")
            import psycopg

            return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                   dbname=database or "postgres", connect_timeout=max(1, round(self.timeout)),
                                   autocommit=True)
        except Exception as error:  # the drivers' errors have no common base; each says why in one line
            if self.kind == "postgresql" and database and "does not exist" in str(error):
                return None
            raise StoreConnectionError(f"cannot open {self.shown}: {_first_line(error)}") from None

    def contents(self) -> Contents:
        if self.kind == "mysql":
            with contextlib.closing(self._connect(None)) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                               (self.database,))
                if not cursor.fetchone()[0]:
                    return Contents(StoreState.MISSING)
                cursor.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                               (self.database,))
                tables = [row[0] for row in cursor.fetchall()]

                def has_version() -> bool:
                    cursor.execute(f"SELECT COUNT(*) FROM `{self.database}`.`{_mysql_env(tables)}`")
                    return bool(cursor.fetchone()[0])

                return _contents(tables, has_version)
        connection = self._connect(self.database)
        if connection is None:
            return Contents(StoreState.MISSING)
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            tables = [row[0] for row in cursor.fetchall()]

            def has_version() -> bool:
                cursor.execute("SELECT COUNT(*) FROM mlmdenv")
                return bool(cursor.fetchone()[0])

            return _contents(tables, has_version)

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Held while MLMD creates the database or its schema: one creator per server at a time."""
        if self.kind == "mysql":
            with contextlib.closing(self._connect(None)) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT GET_LOCK(%s, %s)", (_LOCK_NAME, SCHEMA_LOCK_SECONDS))
                if cursor.fetchone()[0] != 1:
                    raise StoreConnectionError(f"cannot open {self.shown}: another process has been creating "
                                               f"its schema for over {SCHEMA_LOCK_SECONDS:g} s")
                try:
                    yield
                finally:
                    cursor.execute("SELECT RELEASE_LOCK(%s)", (_LOCK_NAME,))
            return
        # Advisory locks belong to one database; every creator takes it in the maintenance database,
        # where MLMD also goes to create a missing database.
        key = zlib.crc32(f"{_LOCK_NAME}:{self.database}".encode())
        with contextlib.closing(self._connect(None)) as connection, connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = %s" % int(SCHEMA_LOCK_SECONDS * 1000))
            cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _mysql_env(tables: list[str]) -> str:
    return next(name for name in tables if name.lower() == _ENV_TABLE)


def _first_line(error: Exception) -> str:
    text = str(error.args[-1] if type(error).__module__.startswith("pymysql") and error.args else error)
    return " ".join(text.split()) or type(error).__name__
