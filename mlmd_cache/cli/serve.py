"""``mlmd-cache serve``: MLMD's gRPC service (and the cache service) over a database, in one process
or a group of them (:mod:`mlmd_cache.server`)."""
from __future__ import annotations

import functools
import sys
from typing import Any, Optional

import click

from ..defaults import DATABASE_URLS, default_store_path, default_store_url
from ..terminal import echo
from .options import OneLineUsageErrors, db_given, db_url_option, read_file, reports_errors, timeout_option


def _channel_arguments(text: Optional[str]) -> list[tuple[str, Any]]:
    """``name=value,...`` (the official server's --grpc_channel_arguments): integers stay integers."""
    arguments = []
    for item in filter(None, (text or "").split(",")):
        name, equals, value = item.partition("=")
        if not (name and equals and value):
            raise click.BadParameter(f"{item!r} is not name=value", param_hint="--grpc_channel_arguments")
        try:
            arguments.append((name, int(value)))
        except ValueError:
            arguments.append((name, value))
    return arguments


@click.command(cls=OneLineUsageErrors)
@db_url_option(f"The database to serve: {DATABASE_URLS}. Default: $MLMD_DB, else {default_store_path()}.")
@functools.partial(timeout_option, hidden=True)  # serve calls no grpc:// store; kept for old command lines
@click.option("--host", help="Address to listen on (0.0.0.0: every interface; the server has no "
              "authentication, so only with TLS or on a trusted network).  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), help="gRPC port (0: any free port).  [default: 8080]")
@click.option("--grpc_port", type=click.IntRange(0, 65535),
              help="The official server's port flag: as --port (still 127.0.0.1 unless --host is given, "
                   "where the official server listens on every interface).")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Worker threads (with MySQL/PostgreSQL, one database connection each).")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate (chain): serve TLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--mysql_config_host", help="MySQL host (the official server's flag; instead of --db).")
@click.option("--mysql_config_port", type=click.IntRange(1, 65535), default=3306, show_default=True,
              help="MySQL port.")
@click.option("--mysql_config_database", help="MySQL database.")
@click.option("--mysql_config_user", default="root", show_default=True, help="MySQL user.")
@click.option("--mysql_config_password", default="", help="MySQL password.")
@click.option("--enable_database_upgrade", type=click.BOOL, is_flag=False, flag_value=True, default=False,
              show_default=True, help="Migrate an older MLMD schema (alone, or =true/false).")
@click.option("--grpc_channel_arguments", metavar="NAME=VALUE,...",
              help="gRPC server arguments, e.g. grpc.max_receive_message_length=67108864.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (MySQL/PostgreSQL): one serves one call at a time.")
@click.option("--no-cache-service", "no_cache_service", is_flag=True,
              help="Serve MetadataStoreService only, without mlmd_cache.v1.CacheService (one-round-trip lookups).")
@click.option("--shared-port", is_flag=True, hidden=True)  # a process of a group (server/processes.py)
@reports_errors
def serve(db_url: Optional[str], host: Optional[str], port: Optional[int], grpc_port: Optional[int], workers: int,
          tls_cert: Optional[str], tls_key: Optional[str], mysql_config_host: Optional[str],
          mysql_config_port: int, mysql_config_database: Optional[str], mysql_config_user: str,
          mysql_config_password: str, enable_database_upgrade: bool, grpc_channel_arguments: Optional[str],
          processes: int, no_cache_service: bool, shared_port: bool) -> None:
    """Serve ml_metadata.MetadataStoreService (gRPC) over a database, on the real MLMD core.

    Accepts the official metadata_store_server's flags (--grpc_port, --mysql_config_*,
    --enable_database_upgrade, --grpc_channel_arguments), so KFP-style manifests work unchanged.
    Also offers mlmd_cache.v1.CacheService, which mlmd-cache's clients use for a lookup in one
    round trip (--no-cache-service: not). Answers standard gRPC health checks. Stops cleanly on SIGTERM, SIGINT or SIGHUP, letting
    calls in flight finish (a second signal cancels them).
    """
    from ..store.connection import mysql_url
    from ..server.common import stop_on_signals
    from ..server.mlmd_service import SERVICE_NAME, MetadataStoreServer

    if port is not None and grpc_port is not None:
        raise click.UsageError("give either --port or --grpc_port, not both")
    if grpc_port is not None:
        port = grpc_port  # not the official server's 0.0.0.0: an unauthenticated store stays local unless asked
    host = host or "127.0.0.1"
    _check_listen_address(host)  # before the store is opened (and perhaps created)
    port = 8080 if port is None else port
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if mysql_config_host or mysql_config_database:
        if not (mysql_config_host and mysql_config_database):
            raise click.UsageError("--mysql_config_host and --mysql_config_database go together")
        if db_url is not None and db_given(click.get_current_context()):
            raise click.UsageError("give either --db or the --mysql_config_* flags, not both")
        db_url = mysql_url(mysql_config_host, mysql_config_port, mysql_config_database, mysql_config_user,
                           mysql_config_password)
    url = default_store_url() if db_url is None else db_url
    try:
        if processes > 1:
            from ..server.processes import ServerGroup

            for path, option in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
                read_file(path, option)  # a missing file is a usage error here, before any process starts
            _channel_arguments(grpc_channel_arguments)
            server = ServerGroup(url, processes=processes, host=host, port=port, workers=workers,
                                 upgrade=enable_database_upgrade, tls_cert=tls_cert, tls_key=tls_key,
                                 channel_arguments=grpc_channel_arguments, cache_service=not no_cache_service)
            shape = f"{processes} processes, {workers} workers each"
        else:
            server = MetadataStoreServer(url, host=host, port=port, workers=workers, upgrade=enable_database_upgrade,
                                         tls_cert=read_file(tls_cert, "--tls-cert"),
                                         tls_key=read_file(tls_key, "--tls-key"),
                                         options=_channel_arguments(grpc_channel_arguments), shared_port=shared_port,
                                         cache_service=not no_cache_service)
            shape = f"{workers} workers"
        server.start()
    except KeyboardInterrupt:  # Ctrl-C while the database is being opened or the processes start
        echo("mlmd-cache serve: interrupted", err=True)
        sys.exit(130)
    stop_on_signals(server)  # before the line that tells the address: a signal from then on is graceful
    reach = "local connections only" if _is_loopback(host) else "open to other hosts, without authentication"
    echo(f"mlmd-cache serve: {SERVICE_NAME} on {server.address} over {server.backend} ({shape}; {reach})",
         err=True)
    code = server.wait()  # a server group's exit code; None for one server
    echo("mlmd-cache serve: stopped", err=True)
    sys.exit(code or 0)


def _check_listen_address(host: str) -> None:
    import socket

    try:
        socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as error:
        raise click.BadParameter(f"{host!r} is not an address of this machine "
                                 f"({getattr(error, 'strerror', None) or error})", param_hint="--host") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
