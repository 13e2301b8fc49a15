"""``mlmd-cache``: a thin click shell over the library; every command maps to one library call."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Optional

import click

from . import records
from .cache import ExecutionCache
from .connection import connect, default_store_path, default_store_url, mysql_url
from .errors import CacheKeyError, MlmdCacheError, StoreURLError
from .key import CacheKey, custom_fingerprint

# User mistakes in what was given exit 2 (as click's usage errors do); failures of the store exit 1.
_USAGE_ERRORS = (CacheKeyError, StoreURLError)


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MlmdCacheError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(2 if isinstance(error, _USAGE_ERRORS) else 1)

    return wrapper


db_option = click.option(
    "--db",
    "db_url",
    envvar="MLMD_DB",
    metavar="URL",
    help=f"MLMD store URL (sqlite:///PATH, mysql://, postgresql://, grpc://host:port). "
    f"Default: $MLMD_DB, else {default_store_path()}.",
)
key_argument = click.argument("key_file", metavar="[FILE|-]", type=click.File("rb"), required=False)
custom_key_options = [
    click.option("--custom-key", metavar="KEY", help="A custom cache key (KFP cachingOptions.cacheKey)."),
    click.option("--component", "component_name", metavar="NAME", default="",
                 help="The component name that scopes a custom cache key."),
]


def _with_custom_key(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(custom_key_options):
        command = option(command)
    return command


def _read_key(key_file) -> CacheKey:
    """The cache key in FILE, or on standard input when no FILE (or ``-``) is given."""
    return CacheKey.from_json((key_file or click.open_file("-", "rb")).read())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlmd-cache")
def main() -> None:
    """KFP v2 step caching over any ML Metadata store."""


@main.command()
@key_argument
@_with_custom_key
@click.option("--show-bytes", is_flag=True, help="Also print the exact bytes that are hashed.")
@_reports_errors
def fingerprint(key_file, custom_key: Optional[str], component_name: str, show_bytes: bool) -> None:
    """Print the KFP fingerprint of a cache key.

    Reads a CacheKey in KFP's JSON form from FILE (or standard input), or, with --custom-key,
    fingerprints a custom cache key for --component.
    """
    if custom_key is not None:
        if key_file is not None:
            raise click.UsageError("give either a cache key FILE or --custom-key, not both")
        hashed = f"{component_name}\x00{custom_key}" if component_name else custom_key
        click.echo(custom_fingerprint(component_name, custom_key))
        if show_bytes:
            click.echo(json.dumps(hashed))
        return
    key = _read_key(key_file)
    click.echo(key.fingerprint())
    if show_bytes:
        click.echo(key.hashed_bytes().decode("utf-8"))


@main.command()
@key_argument
@click.option("--pipeline", required=True, help="The pipeline whose earlier runs may be reused.")
@_with_custom_key
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def lookup(key_file, pipeline: str, custom_key: Optional[str], component_name: str,
           db_url: Optional[str], as_json: bool) -> None:
    """Tell whether a task with this cache key would hit the cache, and what it would reuse."""
    key = _read_key(key_file)
    fingerprint = custom_fingerprint(component_name, custom_key) if custom_key else key.fingerprint()
    hit = ExecutionCache(connect(db_url)).find_source(pipeline, fingerprint)
    result = {
        "fingerprint": fingerprint,
        "hit": hit is not None,
        "source_execution_id": hit.source_execution_id if hit else None,
        "source_task": records.read_property(hit.source, records.TASK_NAME) if hit else None,
        "output_artifacts": {name: [{"id": a.id, "uri": a.uri} for a in arts]
                             for name, arts in hit.output_artifacts.items()} if hit else {},
        "output_parameters": hit.output_parameters if hit else {},
    }
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(f"fingerprint {result['fingerprint']}")
    if hit is None:
        click.echo(f"miss: no valid cache source in pipeline {pipeline!r}")
        return
    click.echo(f"hit: execution {hit.source_execution_id} (task {result['source_task']})")
    for name, artifacts in result["output_artifacts"].items():
        for artifact in artifacts:
            click.echo(f"  output {name}: artifact #{artifact['id']} {artifact['uri']}")
    for name, value in result["output_parameters"].items():
        click.echo(f"  parameter {name} = {json.dumps(value)}")


def _read_file(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise click.BadParameter(f"{path}: {error.strerror}") from None


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "--grpc_port", "port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="gRPC port (0: any free port).")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True, help="Worker threads.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate: serve TLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--mysql_config_host", help="MySQL host (the official server's flag; instead of --db).")
@click.option("--mysql_config_port", type=int, default=3306, show_default=True, help="MySQL port.")
@click.option("--mysql_config_database", help="MySQL database.")
@click.option("--mysql_config_user", default="root", show_default=True, help="MySQL user.")
@click.option("--mysql_config_password", default="", help="MySQL password.")
@click.option("--enable_database_upgrade", type=click.BOOL, default=False, show_default=True,
              help="Migrate an older MLMD schema.")
@_reports_errors
def serve(db_url: Optional[str], host: str, port: int, workers: int, tls_cert: Optional[str],
          tls_key: Optional[str], mysql_config_host: Optional[str], mysql_config_port: int,
          mysql_config_database: Optional[str], mysql_config_user: str, mysql_config_password: str,
          enable_database_upgrade: bool) -> None:
    """Serve ml_metadata.MetadataStoreService (gRPC) over a database, on the real MLMD core.

    Accepts the official metadata_store_server's flags (--grpc_port, --mysql_config_*,
    --enable_database_upgrade), so KFP-style manifests work unchanged. Stops cleanly on
    SIGTERM or SIGINT, letting calls in flight finish.
    """
    from .server import SERVICE_NAME, MetadataStoreServer, stop_on_signals

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if mysql_config_host or mysql_config_database:
        if not (mysql_config_host and mysql_config_database):
            raise click.UsageError("--mysql_config_host and --mysql_config_database go together")
        if db_url and click.get_current_context().get_parameter_source("db_url").name == "COMMANDLINE":
            raise click.UsageError("give either --db or the --mysql_config_* flags, not both")
        db_url = mysql_url(mysql_config_host, mysql_config_port, mysql_config_database, mysql_config_user,
                           mysql_config_password)
    server = MetadataStoreServer(db_url or default_store_url(), host=host, port=port, workers=workers,
                                 upgrade=enable_database_upgrade, tls_cert=_read_file(tls_cert),
                                 tls_key=_read_file(tls_key))
    server.start()
    scheme = "grpcs" if server.tls else "grpc"
    click.echo(f"mlmd-cache serve: {SERVICE_NAME} on {scheme}://{host}:{server.port} "
               f"over {server.backend} ({workers} workers)", err=True)
    stop_on_signals(server)
    server.wait()
    click.echo("mlmd-cache serve: stopped", err=True)
