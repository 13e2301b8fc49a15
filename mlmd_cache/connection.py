"""Open an MLMD store from a URL.

=====================================================  =========================================
``sqlite:///relative/path.sqlite``                     SQLite file, relative to the working directory
``sqlite:////absolute/path.sqlite``                    SQLite file, absolute path
``mysql://user:password@host:port/database``           MySQL or MariaDB (also ``mariadb://``)
``postgresql://user:password@host:port/database``      PostgreSQL (also ``postgres://``)
``grpc://host:port``                                   an MLMD gRPC server (``MetadataStoreService``)
=====================================================  =========================================

The default store, used when no URL is given, is ``$MLMD_DB`` or else the SQLite file
:func:`default_store_path`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import grpc
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from .errors import StoreConnectionError, StoreURLError

__all__ = ["connect", "connection_config", "default_store_path", "default_store_url", "redact_url"]

_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
_SCHEME_ALIASES = {"mariadb": "mysql", "postgres": "postgresql"}
GRPC_CONNECT_TIMEOUT_SECONDS = 10.0


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/mlmd-cache/metadata.sqlite`` (``~/.local/share/mlmd-cache/metadata.sqlite``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data_home) / "mlmd-cache" / "metadata.sqlite"


def default_store_url() -> str:
    """``$MLMD_DB`` when set, else the embedded default SQLite file."""
    return os.environ.get("MLMD_DB") or f"sqlite:///{default_store_path()}"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return url.replace(parts.netloc, f"{user}:***@{netloc[2]}", 1)


def _server_address(url: str, parts, scheme: str) -> tuple[str, int]:
    try:
        port = parts.port
    except ValueError:
        raise StoreURLError(f"invalid port in {redact_url(url)}") from None
    if not parts.hostname:
        raise StoreURLError(f"{redact_url(url)} names no host (expected {scheme}://...host:port...)")
    if port is None:
        if scheme not in _DEFAULT_PORTS:
            raise StoreURLError(f"{redact_url(url)} names no port (expected {scheme}://host:port)")
        port = _DEFAULT_PORTS[scheme]
    return parts.hostname, port


def connection_config(url: str):
    """The MLMD ``ConnectionConfig`` (or ``MetadataStoreClientConfig`` for ``grpc://``) a URL names."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(
            f"not a store URL: {redact_url(str(url))!r} (expected sqlite:///PATH, mysql://, postgresql:// or grpc://)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise StoreURLError(f"malformed store URL {redact_url(url)!r}: {error}") from None
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme == "sqlite":
        if parts.netloc:
            raise StoreURLError(f"{url!r}: a SQLite URL has no host; write sqlite:///relative or sqlite:////absolute")
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise StoreURLError(f"{url!r} names no file (expected sqlite:///PATH)")
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = path
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config
    if scheme == "grpc":
        host, port = _server_address(url, parts, scheme)
        if parts.path not in ("", "/"):
            raise StoreURLError(f"{redact_url(url)}: a gRPC URL has no path (expected grpc://host:port)")
        return mlmd.MetadataStoreClientConfig(host=host, port=port)
    if scheme in ("mysql", "postgresql"):
        host, port = _server_address(url, parts, scheme)
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise StoreURLError(f"{redact_url(url)} names no database (expected {scheme}://user:password@host:port/database)")
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        config = mlmd.ConnectionConfig()
        if scheme == "mysql":
            config.mysql.host, config.mysql.port, config.mysql.database = host, port, database
            config.mysql.user, config.mysql.password = user, password
        else:
            pg = config.postgresql
            pg.host, pg.port, pg.dbname, pg.user, pg.password = host, str(port), database, user, password
        return config
    raise StoreURLError(
        f"unsupported store URL scheme {parts.scheme!r} in {redact_url(url)} "
        "(expected sqlite, mysql, mariadb, postgresql or grpc)"
    )


def connect(url: Optional[str] = None, *, upgrade: bool = False) -> metadata_store.MetadataStore:
    """Open the MLMD store a URL names (``None``: :func:`default_store_url`).

    The schema of a new database is created; an older schema is migrated only with ``upgrade=True``.
    Raises :class:`~mlmd_cache.errors.StoreURLError` for a malformed URL and
    :class:`~mlmd_cache.errors.StoreConnectionError` when the store cannot be opened; neither message
    shows a password.
    """
    url = url or default_store_url()
    config = connection_config(url)
    shown = redact_url(url)
    if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite"):
        directory = os.path.dirname(os.path.abspath(config.sqlite.filename_uri))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise StoreConnectionError(f"cannot create the directory of {shown}: {error.strerror}") from None
    if isinstance(config, mlmd.MetadataStoreClientConfig):
        _wait_for_server(config, shown)
    try:
        store = metadata_store.MetadataStore(config, enable_upgrade_migration=upgrade)
    except mlmd_errors.StatusError as error:
        raise StoreConnectionError(f"cannot open {shown}: {_first_line(error, config)}") from None
    if isinstance(config, mlmd.MetadataStoreClientConfig):
        try:  # a server that accepts connections but is not MLMD fails here, not on first use
            store.get_context_types()
        except mlmd_errors.StatusError as error:
            raise StoreConnectionError(f"{shown} is not a working MLMD server: {_first_line(error, config)}") from None
    return store


def _wait_for_server(config: mlmd.MetadataStoreClientConfig, shown: str) -> None:
    channel = grpc.insecure_channel(f"{config.host}:{config.port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=GRPC_CONNECT_TIMEOUT_SECONDS)
    except grpc.FutureTimeoutError:
        raise StoreConnectionError(
            f"cannot reach the MLMD server at {shown} (no answer in {GRPC_CONNECT_TIMEOUT_SECONDS:g} s)"
        ) from None
    finally:
        channel.close()


def _first_line(error: Exception, config) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    password = ""
    if isinstance(config, mlmd.ConnectionConfig):
        password = config.mysql.password if config.HasField("mysql") else config.postgresql.password
    return text.replace(password, "***") if password else text
