"""Removing a finished key's reservation records (``mlmd-cache leases --prune``), with the
database's own client: MLMD's API (1.17 to 1.21, and so ``serve``) has no call that deletes a
context, its properties or its associations.

One key at a time, in one short transaction that first checks, under the backend's lock, that
nothing changed since the key was judged finished: no new generation of it was written (no runner
took it meanwhile: a takeover writes a new generation), its newest generation's lease and its
holder's state are those that were read. The lock keeps a runner from writing a new generation of
that key until the transaction ends: on SQLite ``BEGIN IMMEDIATE`` (the database's write lock), on
MySQL/MariaDB ``SELECT ... FOR UPDATE`` over the key's names in Context's unique (type, name) index
(InnoDB's next-key locks hold the gap a new generation goes into), on PostgreSQL a ``SHARE ROW
EXCLUSIVE`` lock of Context (concurrent inserts wait; reads do not). A key that changed is left
alone (:func:`delete_reservations` returns False) for the next prune to judge again.
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import unquote, urlsplit

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import InvalidArgumentError
from .connection import CONNECT_TIMEOUT_SECONDS, _parse, redact_url
from .lease_records import LEASE_EXPIRES_AT
from .schema import ServerDatabase

__all__ = ["ReservationKey", "SqlDatabase", "sql_database", "delete_reservations"]

_MYSQL_LOCK_ERRORS = (1205, 1213)  # lock wait timeout, deadlock: InnoDB rolled the transaction back
_BUSY_SECONDS = 30.0  # how long a prune waits for SQLite's write lock, as a runner's write would


@dataclass(frozen=True)
class ReservationKey:
    """What a prune judged of one key: every generation's context ID, the newest one's ID and lease
    (``lease_expires_at``), and its holder's ID and state, as read."""

    type_id: int
    name_prefix: str  # the generations' names are name_prefix + "<generation>"
    context_ids: tuple[int, ...]
    newest_id: int
    expires_at: float
    holder_id: int
    holder_state: int


class SqlDatabase:
    """A store's database through its own client (sqlite3, PyMySQL, psycopg)."""

    def __init__(self, kind: str, shown: str, *, path: Optional[str] = None,
                 server: Optional[ServerDatabase] = None) -> None:
        self.kind, self.shown, self._path, self._server = kind, shown, path, server

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        if self.kind == "sqlite":
            connection = sqlite3.connect(self._path, timeout=_BUSY_SECONDS, isolation_level=None)
        else:
            connection = self._server._connect(self._server.database)
        try:
            yield connection
        finally:
            connection.close()


def sql_database(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> SqlDatabase:
    """The database a store URL names, to be written with its own client. A ``grpc://`` store is
    refused in one line: deleting records takes the database itself."""
    config, address = _parse(url)
    shown = redact_url(url)
    if isinstance(config, mlmd.MetadataStoreClientConfig):
        raise InvalidArgumentError(f"{shown} is an MLMD server, whose API cannot delete records: run --prune with "
                                   "--db naming its database (sqlite:///, mysql://, postgresql://)")
    if config.HasField("sqlite"):
        return SqlDatabase("sqlite", shown, path=config.sqlite.filename_uri)
    parts = urlsplit(url)
    password = None if parts.password is None else unquote(parts.password)
    kind = "mysql" if config.HasField("mysql") else "postgresql"
    database = config.mysql.database if kind == "mysql" else config.postgresql.dbname
    return SqlDatabase(kind, shown, server=ServerDatabase(kind, *address, unquote(parts.username or ""), password,
                                                          database, shown, timeout))


def _sql(kind: str, statement: str) -> str:
    return statement if kind == "sqlite" else statement.replace("?", "%s")


def delete_reservations(database: SqlDatabase, key: ReservationKey) -> bool:
    """Delete every generation of ``key`` (its contexts, their properties, associations,
    attributions and parent links) if nothing changed since it was read; else False, nothing deleted."""
    kind = database.kind
    with database.connection() as connection:
        cursor = connection.cursor()

        def run(statement: str, parameters: Sequence[Any] = ()) -> list[tuple]:
            cursor.execute(_sql(kind, statement), tuple(parameters))
            return cursor.fetchall() if cursor.description is not None else []

        if kind == "sqlite":
            run("BEGIN IMMEDIATE")
        elif kind == "mysql":
            run("START TRANSACTION")
        else:
            run("BEGIN")
            run("LOCK TABLE Context IN SHARE ROW EXCLUSIVE MODE")
        try:
            # the key's generations now (a LIKE on a fixed prefix of hex digits: no wildcard in it)
            lock = " FOR UPDATE" if kind == "mysql" else ""
            now = {row[0] for row in run("SELECT id FROM Context WHERE type_id = ? AND name LIKE ?" + lock,
                                         (key.type_id, key.name_prefix + "%"))}
            lease = run("SELECT double_value FROM ContextProperty WHERE context_id = ? AND name = ?" + lock,
                        (key.newest_id, LEASE_EXPIRES_AT))
            holder = run("SELECT last_known_state FROM Execution WHERE id = ?" + lock, (key.holder_id,))
            # MLMD on SQLite reads a double back rounded (1796627276.828775 as 1796627276.82877): a beat
            # moves the lease on by a fifth of a lease, so a hundredth of a second tells
            unchanged = (now == set(key.context_ids) and len(lease) == 1
                         and abs(float(lease[0][0] or 0) - key.expires_at) < 0.01
                         and [r[0] for r in holder] == [key.holder_state])
            if not unchanged:
                run("ROLLBACK")
                return False
            marks = ", ".join("?" * len(key.context_ids))
            ids = key.context_ids
            run(f"DELETE FROM ContextProperty WHERE context_id IN ({marks})", ids)
            run(f"DELETE FROM Association WHERE context_id IN ({marks})", ids)
            run(f"DELETE FROM Attribution WHERE context_id IN ({marks})", ids)
            run(f"DELETE FROM ParentContext WHERE context_id IN ({marks}) OR parent_context_id IN ({marks})",
                ids + ids)
            run(f"DELETE FROM Context WHERE id IN ({marks})", ids)
            run("COMMIT")
            return True
        except Exception as error:
            with contextlib.suppress(Exception):
                run("ROLLBACK")
            if kind == "mysql" and getattr(error, "args", (None,))[0] in _MYSQL_LOCK_ERRORS:
                return False  # a runner's write came first: judged again next time
            raise
