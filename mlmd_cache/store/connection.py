"""Open an MLMD store from a URL.

=====================================================  =========================================
``sqlite:///relative/path.sqlite``                     SQLite file, relative to the working directory
``sqlite:////absolute/path.sqlite``                    SQLite file, absolute path
``sqlite:///:memory:``                                 a throw-away in-memory SQLite store
``mysql://user:password@host:port/database``           MySQL or MariaDB (also ``mariadb://``)
``postgresql://user:password@host:port/database``      PostgreSQL (also ``postgres://``)
``grpc://host:port``                                   an MLMD gRPC server (``MetadataStoreService``)
``grpcs://host:port[?ca=PEM][&cert=PEM&key=PEM]``      the same over TLS: the server's certificate
                                                       checked against ``ca`` (else the system's
                                                       roots); ``cert`` and ``key``: a client
                                                       certificate. PEM file paths, percent-encoded
=====================================================  =========================================

The default store, used when no URL is given, is ``$MLMD_DB`` or else the SQLite file
:func:`default_store_path`. Characters of the user or password that mean something in a URL
(``@ : / ? # %`` and spaces) are written percent-encoded: password ``p@ss:w/rd`` is ``p%40ss%3Aw%2Frd``.
A PostgreSQL URL without a password lets libpq find one (``PGPASSWORD``, ``~/.pgpass``).

What the MLMD core (ml-metadata 1.17.1) does, and what :func:`connect` adds around it:

* A database that does not exist is created on the first connection, by both backends, if the
  user may create it (MySQL: ``CREATE DATABASE IF NOT EXISTS``; PostgreSQL: MLMD first connects
  to the ``postgres`` maintenance database, looks the name up and runs ``CREATE DATABASE``).
  Without that right the error names the refused ``CREATE DATABASE``. MLMD puts the name into
  SQL unquoted, so a URL's database name must be a plain identifier (letters, digits, ``_``, ``$``).
* MLMD's MySQL and PostgreSQL clients have no connect timeout: against an address that accepts
  TCP but never answers, opening the store blocks indefinitely (seen: still blocked after
  100 s). So :func:`connect` first checks the server itself, within
  ``timeout`` (:data:`CONNECT_TIMEOUT_SECONDS` by default): a MySQL server must send its greeting and accept the login
  (done here with ``mysql_native_password``, the plugin MLMD's client uses), a PostgreSQL server
  must answer an encryption request, a gRPC server must accept the connection. A refused port
  fails at once.
* MLMD's own errors hardly name the problem: a refused MySQL login is
  ``mysql_real_connect failed: errno: , error: `` (reason empty), and every PostgreSQL connection
  failure is ``connection pointer is NULL``, its reason only printed by MLMD's C++ logging on
  stderr. :func:`connect` takes the reason from the login check above (MySQL) or from that
  stderr output (PostgreSQL), which it captures while MLMD opens the store; MLMD's C++ log lines
  ("Connecting to database.") are not passed on.
* MLMD's PostgreSQL client builds the libpq connection string as ``key=value`` pairs without
  quoting; the values are quoted here so that a password with a space, quote or backslash works.
* MLMD's Python layer logs the whole ``ConnectionConfig``, password included, at DEBUG level; a
  filter on the ``absl`` logger replaces the password with ``***`` in that record.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import grpc
from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2 as mlmd
from ml_metadata.proto import metadata_store_service_pb2 as service_pb2
from ml_metadata.proto import metadata_store_service_pb2_grpc as service_grpc

from .._backoff import Backoff
from .._messages import _one_line, mlmd_stderr_captured, reason
from ._server_checks import CONNECT_TIMEOUT_SECONDS, MysqlLogin, check_server_answers, probe_postgresql
from ..defaults import DATABASE_URLS, default_store_path, default_store_url
from ..errors import NoStoreError, StoreConnectionError, StoreURLError
from .schema import Contents, ServerDatabase, StoreState, checked_integrity, sqlite_contents, sqlite_schema_lock
from .client import CALL_TIMEOUT_SECONDS, RETRY_SECONDS, Store

__all__ = [
    "CALL_TIMEOUT_SECONDS",
    "CONNECT_TIMEOUT_SECONDS",
    "DATABASE_URLS",
    "check_database_url",
    "check_integrity",
    "connect",
    "connection_config",
    "default_store_path",
    "default_store_url",
    "mysql_url",
    "redact_url",
]

_DEFAULT_PORTS = {"mysql": 3306, "postgresql": 5432}
_SCHEME_ALIASES = {"mariadb": "mysql", "postgres": "postgresql"}
# grpcs:// query parameter -> the MetadataStoreClientConfig.SSLConfig field that holds the PEM text
_TLS_FILES = {"ca": "custom_ca", "cert": "server_cert", "key": "client_key"}
# MLMD writes the database name into CREATE DATABASE / USE unquoted.
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")


def check_database_url(url: str) -> None:
    """A :class:`StoreURLError` unless ``url`` names a database (:data:`DATABASE_URLS`) rather
    than an MLMD server (``grpc://``, ``grpcs://``): what ``serve`` can serve."""
    scheme = str(url).partition("://")[0].lower()
    if scheme in ("grpc", "grpcs"):
        raise StoreURLError(f"serve needs a database, not {scheme}:// (another MLMD server): give {DATABASE_URLS}")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs.

    Also safe for a malformed URL whose password holds an unencoded ``/``, ``?``, ``#`` or ``@``:
    everything between the ``:`` after the user and the last ``@`` is hidden.
    """
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{hostpart}"


def _server_address(url: str, parts, scheme: str) -> tuple[str, int]:
    try:
        port = parts.port
    except ValueError:
        raise StoreURLError(f"invalid port in {redact_url(url)} (expected a number from 1 to 65535)") from None
    if not parts.hostname:
        raise StoreURLError(f"{redact_url(url)} names no host (expected {scheme}://...host:port...)")
    if port is None:
        if scheme not in _DEFAULT_PORTS:
            raise StoreURLError(f"{redact_url(url)} names no port (expected {scheme}://host:port)")
        port = _DEFAULT_PORTS[scheme]
    if port == 0:
        raise StoreURLError(f"invalid port in {redact_url(url)} (expected a number from 1 to 65535)")
    return parts.hostname, port


def _libpq_quote(value: str) -> str:
    """A libpq connection-string value: quoted, ``\\`` and ``'`` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def connection_config(url: str):
    """The MLMD ``ConnectionConfig`` (or ``MetadataStoreClientConfig`` for ``grpc://``) a URL names.

    A relative SQLite path is made absolute against the current working directory.
    """
    return _parse(url)[0]


def _parse(url: str):
    """(config, (host, port) of a server or None)."""
    if url == "":  # e.g. --db '' or --db "$UNSET": a mistake, not a request for the default store
        raise StoreURLError("an empty store URL (expected sqlite:///PATH, mysql://, postgresql://, grpc:// or "
                            "grpcs://; leave --db out for the default store)")
    if not isinstance(url, str) or "://" not in url:
        raise StoreURLError(
            f"not a store URL: {redact_url(str(url))!r} (expected sqlite:///PATH, mysql://, postgresql://, grpc:// "
            "or grpcs://)"
        )
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise StoreURLError(f"malformed store URL {shown!r}: {error}") from None
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme == "sqlite":
        if parts.netloc:
            raise StoreURLError(f"{url!r}: a SQLite URL has no host; write sqlite:///relative or sqlite:////absolute")
        if parts.query or parts.fragment:
            raise StoreURLError(f"{url!r}: a SQLite URL takes no ?query or #fragment (percent-encode ? and # in the path)")
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not path:
            raise StoreURLError(f"{url!r} names no file (expected sqlite:///PATH)")
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = path if path == ":memory:" else os.path.abspath(path)
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        return config, None
    if scheme not in ("grpc", "grpcs", "mysql", "postgresql"):
        raise StoreURLError(
            f"unsupported store URL scheme {parts.scheme!r} in {shown} "
            "(expected sqlite, mysql, mariadb, postgresql, grpc or grpcs)"
        )
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        # e.g. mysql://user:pa/ss@host/db: the unencoded '/' ends the host part early.
        raise StoreURLError(
            f"malformed store URL {shown}: a character of the user or password must be "
            "percent-encoded (/ ? # @ : as %2F %3F %23 %40 %3A)"
        )
    if parts.fragment or (parts.query and scheme != "grpcs"):
        raise StoreURLError(f"{shown}: a {scheme} URL takes no ?query or #fragment")
    host, port = _server_address(url, parts, scheme)
    if scheme in ("grpc", "grpcs"):
        if parts.path not in ("", "/"):
            raise StoreURLError(f"{shown}: a gRPC URL has no path (expected {scheme}://host:port)")
        if parts.username is not None:
            raise StoreURLError(f"{shown}: a gRPC URL has no user or password (expected {scheme}://host:port)")
        config = mlmd.MetadataStoreClientConfig(host=host, port=port)
        if scheme == "grpcs":
            _tls_config(config, parts.query, shown)
        return config, (host, port)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise StoreURLError(f"{shown} names no database (expected {scheme}://user:password@host:port/database)")
    if not _DATABASE_NAME.match(database):
        raise StoreURLError(
            f"{shown}: database name {database!r} is not a plain identifier "
            "(MLMD accepts letters, digits, '_' and '$', not starting with a digit)"
        )
    user = unquote(parts.username or "")
    password = None if parts.password is None else unquote(parts.password)
    config = mlmd.ConnectionConfig()
    if scheme == "mysql":
        config.mysql.host, config.mysql.port, config.mysql.database = host, port, database
        config.mysql.user = user
        if password is not None:
            config.mysql.password = password
    else:
        if not user:
            # MLMD's PostgreSQL source CHECK-fails (aborts the process) on an empty user.
            raise StoreURLError(f"{shown} names no user (expected postgresql://user:password@host:port/database)")
        pg = config.postgresql
        # Quoted: MLMD pastes these into the libpq connection string as they are. The database
        # name goes into SQL too, so it is not quoted (it was checked to be an identifier).
        pg.host, pg.port, pg.dbname = _libpq_quote(host), _libpq_quote(str(port)), database
        pg.user = _libpq_quote(user)
        if password is not None:  # else libpq looks in PGPASSWORD and ~/.pgpass
            pg.password = _libpq_quote(password)
    return config, (host, port)


def _tls_config(config: mlmd.MetadataStoreClientConfig, query: str, shown: str) -> None:
    """TLS for a grpcs:// URL: the PEM files its query names, read into the config."""
    config.ssl_config.SetInParent()  # TLS even with no file: the system's root certificates
    try:
        given = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreURLError(f"{shown}: malformed query (expected ?ca=PATH&cert=PATH&key=PATH)") from None
    names = [name for name, _ in given]
    for name in names:
        if name not in _TLS_FILES:
            raise StoreURLError(f"{shown}: unknown parameter {name!r} (a grpcs URL takes ca, cert and key)")
        if names.count(name) > 1:
            raise StoreURLError(f"{shown}: {name} is given twice")
    if ("cert" in names) != ("key" in names):
        raise StoreURLError(f"{shown}: a client certificate needs both cert and key")
    for name, path in given:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            reason_text = error.strerror if isinstance(error, OSError) and error.strerror else "not a PEM file"
            raise StoreURLError(f"{shown}: cannot read the {name} file {path!r}: {reason_text}") from None
        setattr(config.ssl_config, _TLS_FILES[name], text)


def connect(
    url: Optional[str] = None, *, upgrade: bool = False, timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_only: bool = False, create: bool = True, call_timeout: float = CALL_TIMEOUT_SECONDS,
) -> Store:
    """Open the MLMD store a URL names (``None``: :func:`default_store_url`; ``""`` is refused).

    ``read_only=True`` (the commands that only read) opens an existing MLMD store and nothing else:
    a missing file, folder or database, or one without MLMD's schema, is an error, and nothing is
    created or migrated. Otherwise a store is created where none exists (a new SQLite file and its
    folder, a new or empty database), one process at a time (:mod:`mlmd_cache.store.schema`); a database
    holding other tables is refused; ``create=False`` refuses to create one (a run whose inputs must
    already be in the store). An older schema is migrated only with ``upgrade=True``.

    Raises :class:`~mlmd_cache.errors.StoreURLError` for a malformed URL and
    :class:`~mlmd_cache.errors.StoreConnectionError` when the store cannot be opened; both
    messages are one line and show no password. A server that does not answer fails within
    about ``timeout`` seconds; a gRPC call fails after ``call_timeout`` seconds (:mod:`mlmd_cache.store.client`).
    """
    url = default_store_url() if url is None else url
    create = create and not read_only
    config, address = _parse(url)
    shown = redact_url(url)
    if isinstance(config, mlmd.MetadataStoreClientConfig):
        config.client_timeout_sec = call_timeout
        return _connect_grpc(config, shown, timeout)
    if config.HasField("sqlite"):
        return _connect_sqlite(config, shown, read_only=read_only, create=create, upgrade=upgrade)
    if config.HasField("mysql"):
        check_server_answers(*address, shown, MysqlLogin(config.mysql.user, config.mysql.password), timeout)
        database = ServerDatabase("mysql", *address, config.mysql.user, config.mysql.password,
                                  config.mysql.database, shown, timeout)
        source = config.mysql
    else:
        check_server_answers(*address, shown, probe_postgresql, timeout)
        user, password = unquote(urlsplit(url).username or ""), urlsplit(url).password
        database = ServerDatabase("postgresql", *address, user, None if password is None else unquote(password),
                                  config.postgresql.dbname, shown, timeout)
        source = config.postgresql
    what = f"database {database.database!r}"
    contents = database.contents()
    if contents.state is not StoreState.MLMD:
        _check_contents(contents, shown, create, what, foreign=False)
        # Judged again under the lock: tables without MLMD's version row may be another process's
        # schema creation half done, not another application's database.
        with database.schema_lock():
            contents = database.contents()
            if create and contents.state is StoreState.UNFINISHED:
                # Under the lock no creator is midway: this one was cut off (MySQL commits each
                # CREATE TABLE), and MLMD would refuse it for good. Dropped when empty, else refused.
                database.clear_unfinished()
                contents = database.contents()
            _check_contents(contents, shown, create, what)
            source.skip_db_creation = contents.state is StoreState.MLMD
            return _open(config, shown, upgrade)
    source.skip_db_creation = True
    return _open(config, shown, upgrade)


def _check_contents(contents: Contents, shown: str, create: bool, what: str, foreign: bool = True) -> None:
    if foreign and contents.state is StoreState.FOREIGN:
        raise StoreConnectionError(f"{shown} is not an MLMD store: {contents.describe()} (refused, so that "
                                   "nothing is written into it)")
    if not create and contents.state in (StoreState.MISSING, StoreState.EMPTY, StoreState.UNFINISHED):
        missing = {StoreState.MISSING: "does not exist", StoreState.EMPTY: "is empty",
                   StoreState.UNFINISHED: "holds an MLMD schema that was never finished"}[contents.state]
        raise NoStoreError(f"no MLMD store at {shown}: {what} {missing} (this command creates "
                                   "no store; check the path or URL)")


def check_integrity(store: Store) -> None:
    """Refuse (:class:`StoreConnectionError`, one line) a SQLite store that SQLite's quick check finds
    corrupt, before anything is written to it (:func:`mlmd_cache.store.schema.sqlite_integrity`). Database
    servers check their own pages; a ``grpc://`` store is its server's to check."""
    config = getattr(store, "_config", None)
    if isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite") \
            and config.sqlite.filename_uri != ":memory:":
        checked_integrity(config.sqlite.filename_uri)  # waits for the check begun early, if one was


def _connect_sqlite(config: mlmd.ConnectionConfig, shown: str, *, read_only: bool, create: bool,
                    upgrade: bool) -> Store:
    path = config.sqlite.filename_uri
    if path == ":memory:":
        return _open(config, shown, upgrade)
    what = f"file {path}"
    contents = sqlite_contents(path, shown)
    _check_contents(contents, shown, create, what, foreign=False)
    if contents.state is StoreState.MISSING:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as error:
            raise StoreConnectionError(f"cannot create the directory of {shown}: {error.strerror}") from None
    if contents.state is not StoreState.MLMD:
        with sqlite_schema_lock(path, shown):  # judged again under the lock, as for a database server
            contents = sqlite_contents(path, shown)
            _check_contents(contents, shown, create, what)
            if contents.state is not StoreState.MLMD:
                return _open(config, shown, upgrade)
    if read_only:
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READONLY
        return _open(config, shown, upgrade=False)
    return _open(config, shown, upgrade)


def _open(config: mlmd.ConnectionConfig, shown: str, upgrade: bool) -> Store:
    """MLMD's store over a database; a busy SQLite file (another process writing) is retried."""
    backoff = Backoff(RETRY_SECONDS, first=0.05, ceiling=0.5)
    while True:
        with mlmd_stderr_captured() as stderr:
            try:
                return Store(config, shown=shown, upgrade=upgrade)
            except (mlmd_errors.StatusError, RuntimeError) as error:  # MLMD raises RuntimeError here
                stderr.failure = error
        busy = config.HasField("sqlite") and any(word in str(stderr.failure).lower()
                                                 for word in ("locked", "busy", "concurrent writes aborted"))
        if not busy or backoff.expired():
            break
        backoff.pause()
    raise StoreConnectionError(f"cannot open {shown}: {reason(stderr.failure, config, stderr.text())}")


# ---------------------------------------------------------------- gRPC


def _connect_grpc(config: mlmd.MetadataStoreClientConfig, shown: str, timeout: float) -> Store:
    deadline = time.monotonic() + timeout
    check_server_answers(config.host, config.port, shown, None, timeout)  # a refused port fails at once
    # One real call proves the server speaks MLMD. Tried once at once, since a failed TLS
    # handshake fails it at once and says why; then waiting for the connection until the deadline
    # (unlike grpc.channel_ready_future, without polling the channel state every 0.2 s).
    request = service_pb2.GetContextTypesRequest()
    with _channel(config) as channel, mlmd_stderr_captured():  # grpc's C core logs failed handshakes
        stub = service_grpc.MetadataStoreServiceStub(channel)
        try:
            try:
                stub.GetContextTypes(request, timeout=max(0.1, deadline - time.monotonic()))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or _tls_mismatch(error.details() or "", config):
                    raise
                stub.GetContextTypes(request, timeout=max(0.1, deadline - time.monotonic()), wait_for_ready=True)
        except grpc.RpcError as error:
            details = _one_line(error.details() or str(error.code()))
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise StoreConnectionError(
                    f"cannot reach the MLMD server at {shown}: {config.host}:{config.port} accepts connections "
                    f"but no gRPC connection came up within {timeout:g} s (is it an MLMD gRPC server?)"
                ) from None
            mismatch = _tls_mismatch(details, config)
            if mismatch:
                raise StoreConnectionError(f"no gRPC connection to {shown}: {mismatch}") from None
            raise StoreConnectionError(f"{shown} is not a working MLMD server: {details}") from None
    from .cache_service import CacheServiceClient  # here: a command on a database store need not import it

    store = Store(config, shown=shown)
    # Lookups ask mlmd-cache serve's cache service first; its first answer tells whether the server has it.
    store.cache_service = CacheServiceClient(store)
    return store


def _tls_mismatch(details: str, config: mlmd.MetadataStoreClientConfig) -> Optional[str]:
    """Why a first call failed, when TLS is the reason: one side speaks it and the other does not,
    or the server's certificate is not trusted. None otherwise."""
    if not config.HasField("ssl_config"):
        # a TLS server closes a plaintext connection at once
        return "the server closed the connection (does it speak TLS? then use grpcs://)" \
            if "socket closed" in details.lower() else None
    if "handshake" not in details.lower():
        return None
    if "WRONG_VERSION_NUMBER" in details:
        return "the TLS handshake failed: the server does not speak TLS (use grpc://)"
    found = re.search(r"OPENSSL_internal:([A-Z_]+)(?::\s*([^:]+))?", details)
    why = f"{found.group(1)}: {found.group(2).strip()}" if found and found.group(2) else (found.group(1) if found else details)
    trust = ("the CA file given" if config.ssl_config.HasField("custom_ca")
             else "the system's root certificates (name the server's CA with ?ca=PATH)")
    return f"the TLS handshake failed ({why}): is the server's certificate, for host {config.host}, signed by {trust}?"


def _channel(config: mlmd.MetadataStoreClientConfig) -> grpc.Channel:
    """A channel as MLMD's client opens one for this config (TLS when it has an ssl_config)."""
    target = f"{config.host}:{config.port}"
    if not config.HasField("ssl_config"):
        return grpc.insecure_channel(target)
    tls = config.ssl_config
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(
        tls.custom_ca.encode() or None, tls.client_key.encode() or None, tls.server_cert.encode() or None))


def mysql_url(host: str, port: int, database: str, user: str, password: str = "") -> str:
    """The ``mysql://`` URL of a MySQL/MariaDB database, user and password percent-encoded.

    >>> mysql_url("db", 3306, "metadb", "root", "p@ss")
    'mysql://root:p%40ss@db:3306/metadb'
    """
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"mysql://{credentials}@{host}:{port}/{database}"
