"""The MLMD store every command uses: MLMD's own client, with faults retried or told in one line.

What MLMD 1.17.1's client does on a fault, and what :class:`Store` does instead:

* SQLite busy (another process writes) and MySQL deadlocks end a call with ``AbortedError``; MLMD
  retries five times, about 2 s apart. :class:`Store` retries with short, growing, jittered pauses
  for up to :data:`RETRY_SECONDS`: the call is one transaction, rolled back, so a retry is safe.
* A dropped MySQL connection fails the call (``Lost connection to MySQL server``); MLMD's MySQL
  client reconnects on the next call, its PostgreSQL client never does (every later call fails with
  an empty message). :class:`Store` opens a new connection and retries the call, waiting up to
  :data:`RETRY_SECONDS` for a restarting server, so work that finished while the database was away
  is still recorded.
* Over gRPC a call has no deadline unless the config sets one: a paused server blocks it forever.
  :func:`mlmd_cache.connect` sets ``client_timeout_sec``; :class:`Store` retries a server that is
  not there (``UNAVAILABLE``, e.g. restarting) until that timeout.

What cannot be retried raises :class:`~mlmd_cache.errors.StoreFaultError`, one line naming the store
and the call. So does a fault of the store itself that MLMD reports with the SQL it ran (a full disk,
a read-only or corrupt SQLite file, a lock held elsewhere): a plain sentence naming the file or the
server instead (:func:`mlmd_cache._messages.store_cause`). MLMD's other errors (``NotFoundError``,
``AlreadyExistsError``, ...) pass through.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import grpc

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.metadata_store.pywrap.metadata_store_extension import metadata_store as pywrap
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .._backoff import Backoff
from .._messages import _one_line, mlmd_stderr_captured, store_cause, without_sql
from ..defaults import CALL_TIMEOUT_SECONDS
from ..errors import StoreFaultError

__all__ = ["Store", "RETRY_SECONDS", "CALL_TIMEOUT_SECONDS", "mlmd_error"]


def mlmd_error(code: int, message: str) -> "mlmd_errors.StatusError":
    """ML Metadata's exception for a status ``code`` (``UnknownError`` for a code it has no class
    for), as its client raises it; not ``make_exception``, which logs every InternalError as a
    warning, retried or not."""
    try:
        kind = mlmd_errors.exception_type_from_error_code(code)
    except KeyError:
        kind = mlmd_errors.UnknownError
    return kind(message)

T = TypeVar("T")

RETRY_SECONDS = 60.0
"""How long a busy, deadlocked or unreachable database is retried before a call fails."""

# What a direct MySQL/PostgreSQL connection says when its server went away or is not back yet.
_CONNECTION_LOST = ("lost connection", "server has gone away", "can't connect", "connection refused",
                    "connection pointer is null", "server closed the connection", "terminating connection",
                    "no connection to the server", "connection to server")


def _lost_connection(error: Exception) -> bool:
    message = str(error).lower()
    return message.strip() in ("postgresql metadata source error:", "") or any(
        part in message for part in _CONNECTION_LOST)


_VANISHED = "Results missing for ids"  # MLMD's words for rows that went between its two queries


class Store(metadata_store.MetadataStore):
    """An MLMD ``MetadataStore`` (same API) whose calls survive busy and restarting databases."""

    def __init__(self, config: Any, *, shown: str, upgrade: bool = False,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.channel: Optional[grpc.Channel] = None
        super().__init__(config, enable_upgrade_migration=upgrade)
        self.shown = shown
        self.retry_seconds = retry_seconds
        self._upgrade = upgrade
        self.cache_service: Optional[Any] = None
        """The client of ``mlmd_cache.v1.CacheService`` (:mod:`mlmd_cache.store.cache_service`) for a
        ``grpc://`` store opened by :func:`mlmd_cache.connect`, else None: lookups
        (:mod:`mlmd_cache.cache.sources`) ask it first and use plain MLMD calls when the server lacks it."""

    def _get_channel(self, config: Any) -> grpc.Channel:
        # Kept, so that the cache service's calls share MLMD's connection to the server.
        self.channel = super()._get_channel(config)
        return self.channel

    def _call(self, method_name: str, request: Any, response: Any, extra_options: Any = None) -> None:
        return self.retrying(method_name, lambda: self._call_method(method_name, request, response))

    def retrying(self, method_name: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` (one call named ``method_name``, which raises MLMD's errors), retried as
        every MLMD call of this store is: conflicts, a lost database connection, a server that is
        not there."""
        backoff = Backoff(self.retry_seconds)
        while True:
            try:
                return attempt()
            except mlmd_errors.AbortedError as error:
                if backoff.expired():
                    where = (self._config.sqlite.filename_uri if self._using_db_connection
                             and self._config.HasField("sqlite") else self.shown)
                    said = _one_line(without_sql(str(error))) or type(error).__name__
                    raise StoreFaultError(f"{where} stayed locked by other writers: {method_name} kept conflicting "
                                          f"with them for {self.retry_seconds:g} s ({said}); "
                                          "run the command again when they are done") from None
            except (mlmd_errors.UnavailableError, mlmd_errors.DeadlineExceededError) as error:
                if self._using_db_connection:
                    raise
                waited = backoff.elapsed
                limit = self._grpc_timeout_sec or self.retry_seconds
                if isinstance(error, mlmd_errors.DeadlineExceededError):
                    raise StoreFaultError(f"the MLMD server at {self.shown} did not answer {method_name} within "
                                          f"{limit:g} s (--timeout)") from None
                if waited > limit:
                    raise StoreFaultError(f"the MLMD server at {self.shown} is gone ({method_name} failed for "
                                          f"{waited:.0f} s: {_one_line(error) or 'unavailable'})") from None
            except mlmd_errors.InternalError as error:
                if method_name.startswith("Get") and _VANISHED in str(error):
                    # MLMD reads IDs, then the rows: a record deleted in between (mlmd-cache leases
                    # --prune removes finished reservations) fails the read; read again, it is gone
                    if backoff.expired():
                        raise
                    continue
                if not (self._using_db_connection and self._config.WhichOneof("config") in ("mysql", "postgresql")
                        and _lost_connection(error)):
                    cause = store_cause(str(error), self._config, self.shown)
                    if cause is not None:
                        raise StoreFaultError(cause) from None
                    raise
                # Never call the old handle again: after a reconnect that failed inside MLMD (the
                # server still down) its MySQL connection is null, and the next call crashes the process.
                while not self._reconnect():
                    if backoff.expired():
                        raise StoreFaultError(
                            f"lost the connection to {self.shown} and could not reconnect within "
                            f"{self.retry_seconds:g} s ({method_name}: {_one_line(error)}); is the database "
                            "server running?") from None
                    backoff.pause()
                continue
            backoff.pause()

    def _reconnect(self) -> bool:
        """A new connection to the database; False while the server is not back."""
        migration = mlmd.MigrationOptions(enable_upgrade_migration=self._upgrade)
        with mlmd_stderr_captured() as stderr:  # its C++ log of each failed attempt is no news
            try:
                self._metadata_store = pywrap.CreateMetadataStore(self._config.SerializeToString(),
                                                                 migration.SerializeToString())
                return True
            except Exception as error:  # MLMD raises RuntimeError while the server is down
                stderr.failure = error
                return False

    def _pywrap_cc_call(self, method: Any, request: Any, response: Any) -> None:
        # MLMD decodes its error text strictly; some messages carry raw bytes of SQL.
        with mlmd_stderr_captured():  # its C++ log (a failed query, a reconnect) is shown only if the command fails
            response_bytes, error_message, status_code = method(self._metadata_store, request.SerializeToString())
        if status_code != 0:
            raise mlmd_error(status_code, error_message.decode("utf-8", "replace"))
        response.ParseFromString(response_bytes)


def store_fault(error: Exception, shown: Optional[str] = None) -> str:
    """One line for an MLMD error that reached the top of a command."""
    kind = type(error).__name__.removesuffix("Error")
    where = f"{shown}: " if shown else ""
    return f"{where}the store refused the call ({kind}: {_one_line(error) or 'no message'})"
