"""What a database holds before MLMD opens it, and one creator of MLMD's schema at a time.

MLMD's C++ core creates its schema on every connection that finds none, and has no lock: two
processes opening a new database at once both create tables, and one fails ("MLMDEnv table exists
but no schema_version"; on SQLite "Concurrent writes aborted"). It also creates a schema in *any*
database it is pointed at, so a read-only query would turn a mistyped path, or somebody else's
database, into an MLMD store. So :func:`mlmd_cache.connect` looks first, with the backend's own
client (:mod:`sqlite3`, PyMySQL, psycopg), and when a schema must be made holds the backend's own
lock while MLMD makes it: ``flock`` on the SQLite file's directory, MySQL ``GET_LOCK``, a PostgreSQL
advisory lock. A store whose schema exists is opened without any lock.

MLMD creates its schema table by table and writes its version row last; on SQLite and PostgreSQL that
is one transaction, but MySQL/MariaDB commit each ``CREATE TABLE`` at once, so a creator killed midway
leaves some of MLMD's tables and no version, which MLMD then refuses for good ("MLMDEnv table exists
but no schema_version can be found"). :meth:`ServerDatabase.contents` tells such a half-made schema
(tables that are MLMD's, column for column, and no version row) from somebody else's tables, and
:meth:`ServerDatabase.clear_unfinished` drops it under the creation lock when it holds no row, so that
MLMD makes the schema again; one that holds rows is refused with the statement that clears it.
"""
from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from .._backoff import Backoff
from ..errors import StoreConnectionError

__all__ = ["StoreState", "Contents", "SCHEMA_LOCK_SECONDS", "QUICK_CHECK_SECONDS", "sqlite_contents",
           "sqlite_integrity", "sqlite_schema_lock", "ServerDatabase", "integrity_checked_early",
           "checked_integrity"]

SCHEMA_LOCK_SECONDS = 120.0
"""How long a process waits for another one that is creating the same store's schema."""

QUICK_CHECK_SECONDS = 0.25
"""How long :func:`sqlite_integrity` reads a store before a run writes to it: ``PRAGMA quick_check``
reads every page once (measured: 0.6 s for a 217 MB file, so about 90 MB fit); a larger store is
checked this long. Every run pays it, a cached re-run of a few tenths of a second included."""

# The table MLMD writes its schema version into, last, when the schema is complete.
_ENV_TABLE = "mlmdenv"
_LOCK_NAME = "mlmd_cache.store.schema"

# The tables of MLMD 1.17's schema (version 10) and their columns, the same on MySQL and PostgreSQL
# (lower case): what a creation cut off midway leaves a subset of.
MLMD_TABLES: dict[str, tuple[str, ...]] = {
    "type": ("id", "name", "version", "type_kind", "description", "input_type", "output_type", "external_id"),
    "typeproperty": ("type_id", "name", "data_type"),
    "parenttype": ("type_id", "parent_type_id"),
    "artifact": ("id", "type_id", "uri", "state", "name", "external_id", "create_time_since_epoch",
                 "last_update_time_since_epoch"),
    "artifactproperty": ("artifact_id", "name", "is_custom_property", "int_value", "double_value", "string_value",
                         "byte_value", "proto_value", "bool_value"),
    "execution": ("id", "type_id", "last_known_state", "name", "external_id", "create_time_since_epoch",
                  "last_update_time_since_epoch"),
    "executionproperty": ("execution_id", "name", "is_custom_property", "int_value", "double_value",
                          "string_value", "byte_value", "proto_value", "bool_value"),
    "context": ("id", "type_id", "name", "external_id", "create_time_since_epoch", "last_update_time_since_epoch"),
    "contextproperty": ("context_id", "name", "is_custom_property", "int_value", "double_value", "string_value",
                        "byte_value", "proto_value", "bool_value"),
    "parentcontext": ("context_id", "parent_context_id"),
    "event": ("id", "artifact_id", "execution_id", "type", "milliseconds_since_epoch"),
    "eventpath": ("event_id", "is_index_step", "step_index", "step_key"),
    "association": ("id", "context_id", "execution_id"),
    "attribution": ("id", "context_id", "artifact_id"),
    "mlmdenv": ("schema_version",),
}


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
    backoff = Backoff(None, first=0.05, ceiling=0.5)
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
            backoff.pause()
        except sqlite3.DatabaseError as error:
            raise StoreConnectionError(f"{shown} is not a usable SQLite database ({error})") from None
    raise StoreConnectionError(f"cannot read {shown}: the file stayed locked by another process")


def sqlite_integrity(path: str, seconds: float = QUICK_CHECK_SECONDS) -> None:
    """A :class:`StoreConnectionError` if SQLite's ``PRAGMA quick_check`` finds the file at ``path``
    corrupt: checked before a run's first write, so that a corrupt store gets nothing written (MLMD
    reads only the pages a call touches, and a run wrote its context and a RUNNING execution before
    it reached a corrupt page). Read-only; a check that takes longer than ``seconds`` (a store of
    gigabytes) or that a writer keeps locked is left unfinished, what it read being sound."""
    deadline = time.monotonic() + seconds
    try:
        connection = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return  # opening it is MLMD's to fail, with its own message
    connection.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)  # true: interrupt
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.OperationalError as error:
        if any(word in str(error) for word in ("interrupted", "locked", "busy")):
            return
        problems = [str(error)]
    except sqlite3.DatabaseError as error:  # "database disk image is malformed", "file is not a database"
        problems = [str(error)]
    finally:
        connection.close()
    if problems != ["ok"]:
        raise StoreConnectionError(
            f"{path} is corrupt (SQLite's quick_check: {' '.join(problems[0].split())}); nothing was written to it; "
            f"restore it from a backup (`sqlite3 {path} .recover` may save what it still holds)")


def _uri_path(path: str) -> str:
    return path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


class _Probe:
    """:func:`sqlite_integrity` of one file, run in a thread of its own: SQLite reads the pages with the
    GIL released, so the check runs beside what the command does meanwhile (its imports, reading the
    pipeline, opening the store: ~0.2 s of Python that the check of a store of tens of MB fits in)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._check, name="mlmd-cache quick_check", daemon=True)
        self.thread.start()

    def _check(self) -> None:
        try:
            sqlite_integrity(self.path)
        except BaseException as error:  # told by result(), in the thread that waits for it
            self.error = error

    def result(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


_EARLY: dict[str, _Probe] = {}


def _sqlite_url_path(url: str) -> Optional[str]:
    """The absolute path a ``sqlite:///PATH`` URL names, read as :func:`mlmd_cache.connect` reads it;
    None for any other URL (and one it would refuse). Only a guess for an early start: a check is
    taken only for the very path the opened store has (:func:`checked_integrity`)."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() != "sqlite" or parts.netloc or parts.query or parts.fragment:
        return None
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    return os.path.abspath(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def integrity_checked_early(url: str) -> Iterator[None]:
    """While the block runs, the quick check of the SQLite file ``url`` names runs in a thread, from
    the block's start: a command that will write to the store (``run-pipeline``) starts it before its
    imports, and :func:`checked_integrity` waits for it instead of checking then. A check not taken
    by the end of the block (the command failed before its run began) is dropped with it."""
    path = _sqlite_url_path(url)
    if path is None or path in _EARLY:
        yield
        return
    _EARLY[path] = _Probe(path)
    try:
        yield
    finally:
        _EARLY.pop(path, None)


def checked_integrity(path: str) -> None:
    """:func:`sqlite_integrity` of ``path``: the result of the check :func:`integrity_checked_early`
    started for it (taken once), else the check, now."""
    probe = _EARLY.pop(path, None)
    if probe is None:
        sqlite_integrity(path)
    else:
        probe.result()


@contextlib.contextmanager
def sqlite_schema_lock(path: str, shown: str) -> Iterator[None]:
    """Held while MLMD creates a schema in ``path``: an exclusive ``flock`` on its directory (not
    ``filelock``, whose lock is a file of its own: this leaves nothing beside the user's store, and
    needs no right to create files in a folder shared with other users)."""
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
    backoff = Backoff(SCHEMA_LOCK_SECONDS, first=0.05, ceiling=0.5)
    while not acquired():
        if backoff.expired():
            raise StoreConnectionError(
                f"cannot open {shown}: another process has been creating its schema for over "
                f"{SCHEMA_LOCK_SECONDS:g} s")
        backoff.pause()


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

                return self._half_made(_contents(tables, has_version), cursor)
        connection = self._connect(self.database)
        if connection is None:
            return Contents(StoreState.MISSING)
        with contextlib.closing(connection), connection.cursor() as cursor:
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            tables = [row[0] for row in cursor.fetchall()]

            def has_version() -> bool:
                cursor.execute("SELECT COUNT(*) FROM mlmdenv")
                return bool(cursor.fetchone()[0])

            return self._half_made(_contents(tables, has_version), cursor)

    def _columns(self, cursor) -> dict[str, tuple[str, ...]]:
        """Each table's columns (lower case, in order), keyed by the table's own name."""
        if self.kind == "mysql":
            cursor.execute("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                           "ORDER BY TABLE_NAME, ORDINAL_POSITION", (self.database,))
        else:
            cursor.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
        columns: dict[str, list[str]] = {}
        for table, column in cursor.fetchall():
            columns.setdefault(table, []).append(column.lower())
        return {table: tuple(names) for table, names in columns.items()}

    def _half_made(self, found: Contents, cursor) -> Contents:
        """Tables without MLMD's MLMDEnv that are all MLMD's, column for column: MLMD's schema
        creation cut off before its last table (MySQL commits each CREATE TABLE), not another
        application's database."""
        if found.state is not StoreState.FOREIGN:
            return found
        columns = self._columns(cursor)
        if all(MLMD_TABLES.get(table.lower()) == columns.get(table) for table in found.tables):
            return Contents(StoreState.UNFINISHED, found.tables)
        return found

    def _quoted(self, table: str) -> str:
        return f"`{self.database}`.`{table}`" if self.kind == "mysql" else '"' + table.replace('"', '""') + '"'

    def clear_unfinished(self) -> None:
        """Drop an MLMD schema whose creation was cut off (:attr:`StoreState.UNFINISHED`) so that
        MLMD creates it anew; call it holding :meth:`schema_lock`, so that no creator is midway.

        Only when every table is MLMD's and none holds a row: else a one-line
        :class:`StoreConnectionError` that says what is there and, for rows, the statement that
        clears the database (nothing is dropped that holds data).
        """
        connection = self._connect(None if self.kind == "mysql" else self.database)
        with contextlib.closing(connection), connection.cursor() as cursor:
            columns = self._columns(cursor)
            others = sorted(table for table, names in columns.items() if MLMD_TABLES.get(table.lower()) != names)
            if others:
                raise StoreConnectionError(
                    f"{self.shown} is not an MLMD store: its MLMDEnv table holds no schema version and it also holds "
                    f"other tables ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}) (refused, so that "
                    "nothing is written into it)")
            with_rows = []
            for table in sorted(columns):
                cursor.execute(f"SELECT 1 FROM {self._quoted(table)} LIMIT 1")
                if cursor.fetchone() is not None:
                    with_rows.append(table)
            if with_rows:
                quoted = f"`{self.database}`" if self.kind == "mysql" else f'"{self.database}"'
                drop = f"DROP DATABASE {quoted}"
                raise StoreConnectionError(
                    f"{self.shown} holds an MLMD schema whose creation was cut off ({len(columns)} of MLMD's "
                    f"{len(MLMD_TABLES)} tables, no schema version) and rows in {', '.join(with_rows)}: refused, so "
                    f"that nothing in it is lost; if those rows are not needed, drop the database on the server "
                    f"({drop}) and the next command creates the store anew")
            if columns:
                cursor.execute("DROP TABLE IF EXISTS " + ", ".join(self._quoted(table) for table in sorted(columns)))

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
