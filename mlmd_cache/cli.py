"""``mlmd-cache``: a thin click shell over the library; every command maps to one library call."""
from __future__ import annotations

import functools
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

# Only what building the commands needs: a command imports what it uses (ml_metadata, grpc, the KFP
# SDK: most of a second), so that --help and usage errors answer at once.
from . import ids
from ._entry import exit_interrupted, exit_without_teardown, interrupt_pending, leave_a_hung_up_terminal
from .defaults import (CALL_TIMEOUT_SECONDS, DATABASE_URLS, DEFAULT_TASK_ENV, TASK_ENV_MODES, default_store_path,
                       default_store_url)
from .errors import CacheKeyError, InvalidArgumentError, MlmdCacheError, NoStoreError, NotFoundError, StoreURLError
from ._messages import _one_line
from .terminal import echo, escape_warnings, printable, show_mlmd_log

if TYPE_CHECKING:
    from .key import CacheKey
    from .store import Store

# User mistakes in what was given (a bad key, URL or argument, a name the store does not have) exit 2,
# as click's usage errors do; failures of the store exit 1.
_USAGE_ERRORS = (CacheKeyError, InvalidArgumentError, NotFoundError, StoreURLError)


def _mlmd_errors() -> tuple[type[BaseException], ...]:
    """ml_metadata's errors, once ml_metadata is imported: none can be raised before."""
    errors = sys.modules.get("ml_metadata.errors")
    return (errors.StatusError,) if errors is not None else ()


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """One line on stderr for every failure, never a traceback: the project's errors as they are,
    an MLMD error that slipped through as a store fault, anything else as a defect to report."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return command(*args, **kwargs)
            except Exception:
                if interrupt_pending():  # a stop signal came first (and could not stop the command at once)
                    raise KeyboardInterrupt from None
                raise
        except MlmdCacheError as error:
            show_mlmd_log()
            echo(f"Error: {_one_line(error) or type(error).__name__}", err=True)
            sys.exit(2 if isinstance(error, _USAGE_ERRORS) else 1)
        except _mlmd_errors() as error:
            from .store import store_fault

            show_mlmd_log()
            echo(f"Error: {store_fault(error)}", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # e.g. piped into `head`: nothing left to tell
            sys.exit(1)
        except Exception as error:  # a defect: still one line, with what to do
            text = _one_line(error) or type(error).__name__
            echo(f"Error: internal error ({type(error).__name__}: {text}); please report it "
                 "with the command that caused it", err=True)
            sys.exit(1)

    return wrapper


_TIMEOUT = "mlmd_cache.call_timeout"
_DB = "mlmd_cache.db_url"
_DB_GIVEN = "mlmd_cache.db_url_given"  # on the command line, before or after the subcommand
_TIMEOUT_HELP = (f"Deadline of each call to a grpc:// store (default: $MLMD_TIMEOUT, else {CALL_TIMEOUT_SECONDS:g}): "
                 "a server that does not answer fails the command.")
_DB_HELP = ("MLMD store URL (sqlite:///PATH, mysql://, postgresql://, grpc://host:port, grpcs://host:port?ca=PEM). "
            f"Default: $MLMD_DB, else {default_store_path()}.")


def _remember_group_timeout(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> None:
    ctx.meta[_TIMEOUT] = value


def _remember_timeout(ctx: click.Context, param: click.Parameter, value: Optional[float]) -> None:
    if value is not None:  # else the group's (ctx.meta is shared by the group and its subcommand)
        ctx.meta[_TIMEOUT] = value


def _remember_group_db(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> None:
    ctx.meta[_DB] = value
    ctx.meta[_DB_GIVEN] = ctx.get_parameter_source(param.name) is click.core.ParameterSource.COMMANDLINE


def _command_db(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """The subcommand's --db, else the group's (which holds $MLMD_DB when neither was given)."""
    if value is not None:
        ctx.meta[_DB_GIVEN] = True
        return value
    return ctx.meta[_DB] if _DB in ctx.meta else os.environ.get("MLMD_DB") or None


def db_given(ctx: click.Context) -> bool:
    """Whether --db was given on the command line (before or after the subcommand), not by $MLMD_DB."""
    return bool(ctx.meta.get(_DB_GIVEN))


def group_db_options(group: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--timeout`` before the subcommand, for every subcommand that opens a store
    (``mlmd-cache --db URL stats``); the subcommand's own, after it, wins."""
    group = click.option("--timeout", type=click.FloatRange(min=0.1), default=CALL_TIMEOUT_SECONDS,
                         envvar="MLMD_TIMEOUT", metavar="SECONDS", expose_value=False, callback=_remember_group_timeout,
                         help=_TIMEOUT_HELP + " Also after the subcommand, which wins.")(group)
    return click.option("--db", "db_url", envvar="MLMD_DB", metavar="URL", expose_value=False,
                        callback=_remember_group_db,
                        help=_DB_HELP + " Also after the subcommand, which wins.")(group)


def _timeout_option(command: Callable[..., Any], hidden: bool = False) -> Callable[..., Any]:
    return click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
                        callback=_remember_timeout, expose_value=False, hidden=hidden, help=_TIMEOUT_HELP)(command)


def open_store(db_url: Optional[str], *, read_only: bool = False, create: bool = True) -> Store:
    """The store ``--db`` names, opened as the command needs it, with ``--timeout`` as its call deadline."""
    from .connection import connect

    ctx = click.get_current_context(silent=True)
    timeout = ctx.meta.get(_TIMEOUT, CALL_TIMEOUT_SECONDS) if ctx else CALL_TIMEOUT_SECONDS
    return connect(db_url, read_only=read_only, create=create, call_timeout=timeout)


def _db_url_option(help_text: str = _DB_HELP) -> Callable[..., Any]:
    return click.option("--db", "db_url", metavar="URL", callback=_command_db, help=help_text)


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--timeout``: every command that opens a store takes both (also before the
    subcommand: :func:`group_db_options`)."""
    return _db_url_option()(_timeout_option(command))


task_env_option = click.option(
    "--task-env", type=click.Choice(TASK_ENV_MODES), default=DEFAULT_TASK_ENV, show_default=True,
    envvar="MLMD_CACHE_TASK_ENV",
    help="Where tasks run: venv (a cached environment per requirement set, built by uv), docker (each task in "
         "its image) or host (this Python; a task that needs packages it lacks fails). Env: MLMD_CACHE_TASK_ENV.")
env_dir_option = click.option(
    "--env-dir", metavar="DIR", envvar="MLMD_CACHE_ENV_DIR",
    help="Where --task-env venv keeps its environments. Default: ~/.cache/mlmd-cache/envs "
         "($XDG_CACHE_HOME). Env: MLMD_CACHE_ENV_DIR.")


class RecordIdType(click.ParamType):
    """An artifact or execution ID as :func:`mlmd_cache.ids.parse_id` reads it (``6``, ``a:6``, ``#6``,
    ``e:6``), of kind ``only``; the value is the number."""

    def __init__(self, only: str) -> None:
        self.only, self.name = only, f"{only} ID"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        try:
            return ids.parse_id(value, only=self.only).id
        except InvalidArgumentError as error:
            self.fail(str(error), param, ctx)


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
    from .key import CacheKey

    stream = key_file or click.open_file("-", "rb")
    if stream.isatty():  # without this a forgotten FILE looks like a hang
        echo("reading a cache key (KFP's JSON) from standard input: paste it and end with Ctrl-D, "
             "or give FILE", err=True)
    return CacheKey.from_json(stream.read())


class _Commands(click.Group):
    """Every subcommand's usage errors in one line, as serve's (:class:`_OneLineUsageErrors`): a
    subcommand parses its arguments inside the group's invoke; the group's own (``--db``,
    ``--timeout`` before the subcommand) in its make_context. A stop signal (Ctrl-C, and SIGTERM
    and SIGHUP under the console scripts, :mod:`mlmd_cache._entry`) that no command handled ends
    it in one line too, where click would write an empty line and ``Aborted!``."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            if isinstance(error, _OneLineUsageError):
                raise
            raise _OneLineUsageError(error.format_message(), error.ctx) from None
        except KeyboardInterrupt:
            exit_interrupted(info_name or "mlmd-cache")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            if isinstance(error, _OneLineUsageError):
                raise
            raise _OneLineUsageError(error.format_message(), error.ctx or ctx) from None
        except KeyboardInterrupt:
            exit_interrupted(ctx.find_root().info_name or "mlmd-cache")


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlmd-cache")
@group_db_options
def main() -> None:
    """KFP v2 step caching over any ML Metadata store."""
    escape_warnings()  # a warning may quote stored text (the KFP SDK's quote an importer's URI)


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
    from .key import custom_fingerprint

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
@click.option("--exit-code", is_flag=True, help="Exit 0 on a hit, 1 on a miss (errors: 2 or 1, as always).")
@_reports_errors
def lookup(key_file, pipeline: str, custom_key: Optional[str], component_name: str,
           db_url: Optional[str], as_json: bool, exit_code: bool) -> None:
    """Tell whether a task with this cache key would hit the cache, and what it would reuse
    (exit 0 either way, unless --exit-code)."""
    from . import records
    from .cache import ExecutionCache
    from .key import custom_fingerprint

    key = _read_key(key_file)
    fingerprint = custom_fingerprint(component_name, custom_key) if custom_key else key.fingerprint()
    hit = ExecutionCache(open_store(db_url, read_only=True)).find_source(pipeline, fingerprint)
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
    else:
        _describe_lookup(result, pipeline)
    if exit_code and hit is None:
        sys.exit(1)


def _describe_lookup(result: dict[str, Any], pipeline: str) -> None:
    echo(f"fingerprint {result['fingerprint']}")
    if not result["hit"]:
        echo(f"miss: no valid cache source in pipeline {pipeline!r}")
        return
    echo(f"hit: execution {result['source_execution_id']} (task {result['source_task']})")
    for name, artifacts in result["output_artifacts"].items():
        for artifact in artifacts:
            echo(f"  output {name}: artifact #{artifact['id']} {artifact['uri']}")
    for name, value in result["output_parameters"].items():
        echo(f"  parameter {name} = {json.dumps(value)}")


def _read_file(path: Optional[str], option: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise click.BadParameter(f"{path}: {error.strerror}", param_hint=option) from None


class _OneLineUsageError(click.UsageError):
    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        echo(f"Error: {self.format_message()}{hint}", err=True)


class _OneLineUsageErrors(click.Command):
    """Usage errors in one line, without click's usage banner: a server's log shows one line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            raise _OneLineUsageError(error.format_message(), error.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _OneLineUsageError(error.format_message(), error.ctx or ctx) from None


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


@main.command(cls=_OneLineUsageErrors)
@_db_url_option(f"The database to serve: {DATABASE_URLS}. Default: $MLMD_DB, else {default_store_path()}.")
@functools.partial(_timeout_option, hidden=True)  # serve calls no grpc:// store; kept for old command lines
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
@click.option("--shared-port", is_flag=True, hidden=True)  # a process of a group (server_processes.py)
@_reports_errors
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
    from .connection import mysql_url
    from .server import SERVICE_NAME, MetadataStoreServer, stop_on_signals

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
            from .server_processes import ServerGroup

            for path, option in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key")):
                _read_file(path, option)  # a missing file is a usage error here, before any process starts
            _channel_arguments(grpc_channel_arguments)
            server = ServerGroup(url, processes=processes, host=host, port=port, workers=workers,
                                 upgrade=enable_database_upgrade, tls_cert=tls_cert, tls_key=tls_key,
                                 channel_arguments=grpc_channel_arguments, cache_service=not no_cache_service)
            shape = f"{processes} processes, {workers} workers each"
        else:
            server = MetadataStoreServer(url, host=host, port=port, workers=workers, upgrade=enable_database_upgrade,
                                         tls_cert=_read_file(tls_cert, "--tls-cert"),
                                         tls_key=_read_file(tls_key, "--tls-key"),
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


@main.command()
@click.option("--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="A pipeline to index (repeatable). Default: every pipeline in the store.")
@click.option("--dry-run", is_flag=True, help="Count what would be indexed; write nothing.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def index(pipelines: tuple[str, ...], dry_run: bool, db_url: Optional[str], as_json: bool) -> None:
    """Make executions that KFP recorded (COMPLETE, with a cache_fingerprint) cache sources for
    mlmd-cache, so that its lookups reuse them. Indexing again adds only what came since."""
    from .cache import ExecutionCache

    cache = ExecutionCache(open_store(db_url, read_only=dry_run))
    reports = [cache.index_sources(name, dry_run=dry_run) for name in (pipelines or cache.pipeline_names())]
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "pipelines": [
            {"pipeline": r.pipeline, "sources": r.sources, "keys": r.keys, "added": r.added,
             "already_indexed": r.already_indexed} for r in reports]}, sort_keys=True))
        return
    if not reports:
        echo("no pipelines in the store")
    verb = "would add" if dry_run else "added"
    for r in reports:
        echo(f"pipeline {r.pipeline}: {_count(r.sources, 'cache source')} of {_count(r.keys, 'key')}: "
             f"{verb} {r.added}, {r.already_indexed} already indexed")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@main.command("run-pipeline")
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@db_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter, parsed by its declared type (repeatable).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=ID|URI",
              help="A pipeline input artifact: an MLMD artifact ID, or a URI imported as dsl.importer does (repeatable).")
@click.option("--disable-cache", is_flag=True, help="Run-level enable_caching=False: every task executes.")
@click.option("--parallelism", type=click.IntRange(min=1), metavar="N",
              help="At most N task processes at once (default: the machine's cores).")
@click.option("--run-name", metavar="NAME", help="The run (system.PipelineRun context). Default: PIPELINE-timestamp.")
@click.option("--pipeline-root", metavar="DIR",
              help="Where task outputs go. Default: pipeline-root/ beside the SQLite store.")
@click.option("--max-cache-staleness", "max_staleness", metavar="DURATION",
              help="Do not reuse cache sources that started longer ago: 12h, 7d, or ISO 8601 PT12H, P7D.")
@click.option("--task-staleness", "task_staleness", multiple=True, metavar="TASK=DURATION",
              help="The same for one task (by name or outer/inner path), over --max-cache-staleness (repeatable).")
@click.option("--digest", is_flag=True,
              help="Record each output's SHA-256 and size; a cache source whose outputs' bytes changed is not reused.")
@click.option("--key-by-content", is_flag=True,
              help="Key input artifacts by digest instead of MLMD ID (implies --digest): a re-run producer that "
                   "writes the same bytes keeps its consumers cached. Fingerprints then differ from KFP's.")
@click.option("--no-dedup", is_flag=True,
              help="Do not reserve cache keys: runs racing on one store may each execute the same task.")
@click.option("--lease", metavar="DURATION", default="30s", show_default=True,
              help="How long a reserved key stays held without its runner's heartbeat (e.g. 10s, PT1M; at "
                   "least 2s: five heartbeats).")
@click.option("--max-wait", metavar="DURATION",
              help="How long a task waits for the run that holds its key before it runs anyway. Default: no limit.")
@task_env_option
@env_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress lines go to stderr).")
@_reports_errors
def run_pipeline(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
                 disable_cache: bool, parallelism: Optional[int], run_name: Optional[str],
                 pipeline_root: Optional[str], max_staleness: Optional[str], task_staleness: tuple[str, ...],
                 digest: bool, key_by_content: bool, no_dedup: bool, lease: str, max_wait: Optional[str],
                 task_env: str, env_dir: Optional[str], as_json: bool) -> None:
    """Run a compiled KFP v2 pipeline locally with KFP's step caching, recording it in MLMD.

    Every ready task runs at once (up to --parallelism) as a local process: by default in a cached
    environment of its own, built once by uv from what its command asks pip for (--task-env venv),
    or in its container image (--task-env docker), or with this Python, which it may not install
    into (--task-env host). No task ever changes the environment mlmd-cache runs in.
    Conditions, loops, exit handlers, OneOf, Collected and retries run as on KFP. A task whose
    cache key has a valid earlier execution is not run: its outputs are reused; a task whose key
    another run is executing waits for it and reuses its outputs. One line per task as it ends, on
    a terminal below it a live table of the running tasks; then a summary: the store, the
    pipeline's outputs and the metrics logged. Exit code 1 when a task fails (its descendants are
    NOT_RUN), 2 for an unusable pipeline or parameter, 130 on Ctrl-C, SIGTERM or SIGHUP (the running
    tasks are stopped and FAILED, the rest NOT_RUN).
    """
    from .schema import integrity_checked_early  # (sqlite3 only)

    exit_without_teardown()  # once the run is told, the console script ends the process at once (_entry)

    # The SQLite store's quick check (before the run's first write) runs beside the imports and the
    # pipeline's reading from here on (mlmd_cache.schema); the runner waits for it.
    with integrity_checked_early(default_store_url() if db_url is None else db_url):
        _run_pipeline(pipeline_file, db_url, params, artifacts, disable_cache, parallelism, run_name, pipeline_root,
                      max_staleness, task_staleness, digest, key_by_content, no_dedup, lease, max_wait, task_env,
                      env_dir, as_json)


def _run_pipeline(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
                  disable_cache: bool, parallelism: Optional[int], run_name: Optional[str],
                  pipeline_root: Optional[str], max_staleness: Optional[str], task_staleness: tuple[str, ...],
                  digest: bool, key_by_content: bool, no_dedup: bool, lease: str, max_wait: Optional[str],
                  task_env: str, env_dir: Optional[str], as_json: bool) -> None:
    import signal

    from .cache import ExecutionCache
    from .durations import parse_duration, parse_task_durations
    from .leases import check_lease
    from .parsed_pipelines import load_pipeline  # parsed once, kept by the file's content
    from .pipeline_spec import parse_artifact_references, parse_assignments
    from .runner import RunInterrupted, check_task_names, default_pipeline_root, run_pipeline as run
    from .terminal import RunDisplay

    def interrupt(signum: int, frame: Any) -> None:  # SIGTERM and SIGHUP stop a run as Ctrl-C does
        if signum == signal.SIGHUP:  # a closed terminal: what the run tells as it stops must not fail on it
            leave_a_hung_up_terminal()
        raise KeyboardInterrupt

    # (also when main() is called without the console script's handling, mlmd_cache._entry)
    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) is not signal.SIG_IGN}  # nohup's SIGHUP stays ignored
    try:
        pipeline = load_pipeline(pipeline_file)
        arguments = pipeline.parse_parameters(parse_assignments(params))
        input_artifacts = parse_artifact_references(artifacts)
        staleness = parse_duration(max_staleness, "--max-cache-staleness") if max_staleness is not None else None
        per_task = parse_task_durations(task_staleness, "--task-staleness")
        lease_seconds = parse_duration(lease, "--lease").total_seconds()
        max_wait_seconds = parse_duration(max_wait, "--max-wait").total_seconds() if max_wait is not None else None
        check_lease(lease_seconds, max_wait_seconds)  # before the store is opened (or made)
        check_task_names(pipeline, per_task, "--task-staleness")  # before the store is opened (or made)
        root = pipeline_root or default_pipeline_root(db_url)
        ids = {name: value for name, value in input_artifacts.items() if isinstance(value, int)}
        try:  # an artifact ID names an artifact of an existing store: none is created for it
            cache = ExecutionCache(open_store(db_url, create=not ids))
        except NoStoreError as error:
            name = next(iter(ids))
            raise InvalidArgumentError(f"--artifact {name}={ids[name]}: no such artifact, {error}") from None
        display = RunDisplay(lines_to_stderr=as_json)
        try:
            with display:
                report = run(cache, pipeline, arguments, artifacts=input_artifacts, run_name=run_name,
                             pipeline_root=root, enable_caching=False if disable_cache else None,
                             parallelism=parallelism, max_staleness=staleness, task_staleness=per_task,
                             digest=digest, key_by_content=key_by_content, dedup=not no_dedup,
                             lease_seconds=lease_seconds, max_wait_seconds=max_wait_seconds,
                             on_queued=display.queued, on_start=display.started, on_wait=display.waiting,
                             on_task=display.finished, task_env=task_env, env_dir=env_dir)
        except RunInterrupted as interrupted:
            report = interrupted.report
    except KeyboardInterrupt:  # before the run began: nothing of it was written
        echo("run-pipeline: interrupted", err=True)
        sys.exit(130)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
    else:
        display.summary(report)
    if report.interrupted:
        echo("run-pipeline: interrupted; running tasks marked FAILED", err=True)
        sys.exit(130)
    if not report.succeeded:
        show_mlmd_log()  # MLMD's C++ log of the run (e.g. a database that restarted): only when it failed
        sys.exit(1)


@main.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml")
@db_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter, parsed by its declared type (repeatable).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=ID|URI",
              help="A pipeline input artifact: an MLMD artifact ID, or a URI (repeatable).")
@click.option("--disable-cache", is_flag=True, help="Plan a run with enable_caching=False (every task runs).")
@click.option("--run-name", metavar="NAME", help="The run's name (checked to be new), as run-pipeline takes it.")
@click.option("--pipeline-root", metavar="DIR",
              help="As run-pipeline's (matters only to tasks given {{$.pipeline_root}}).")
@click.option("--max-cache-staleness", "max_staleness", metavar="DURATION",
              help="As run-pipeline's: sources that started longer ago are not reused.")
@click.option("--task-staleness", "task_staleness", multiple=True, metavar="TASK=DURATION",
              help="As run-pipeline's: the same for one task (repeatable).")
@click.option("--digest", is_flag=True, help="As run-pipeline's: sources whose outputs' bytes changed are not reused.")
@click.option("--key-by-content", is_flag=True, help="As run-pipeline's: input artifacts keyed by digest.")
@task_env_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def plan(pipeline_file: str, db_url: Optional[str], params: tuple[str, ...], artifacts: tuple[str, ...],
         disable_cache: bool, run_name: Optional[str], pipeline_root: Optional[str], max_staleness: Optional[str],
         task_staleness: tuple[str, ...], digest: bool, key_by_content: bool, task_env: str, as_json: bool) -> None:
    """Tell what run-pipeline would do with each task, without running or writing anything.

    Each task is a hit (the execution it would reuse), run (with why: no cache source for its key,
    caching disabled, an input artifact that an upstream task makes anew), skipped (a false
    condition), or unknown (it depends on an output the run learns only as it goes)."""
    from .cache import ExecutionCache
    from .durations import parse_duration, parse_task_durations
    from .parsed_pipelines import load_pipeline  # parsed once, kept by the file's content
    from .pipeline_spec import parse_artifact_references, parse_assignments
    from .plan import plan_pipeline
    from .runner import check_task_names, default_pipeline_root

    pipeline = load_pipeline(pipeline_file)
    arguments = pipeline.parse_parameters(parse_assignments(params))
    input_artifacts = parse_artifact_references(artifacts)
    staleness = parse_duration(max_staleness, "--max-cache-staleness") if max_staleness is not None else None
    per_task = parse_task_durations(task_staleness, "--task-staleness")
    check_task_names(pipeline, per_task, "--task-staleness")  # before the store is opened
    cache = ExecutionCache(open_store(db_url, read_only=True))
    result = plan_pipeline(cache, pipeline, arguments, artifacts=input_artifacts, run_name=run_name,
                           pipeline_root=pipeline_root or default_pipeline_root(db_url),
                           enable_caching=False if disable_cache else None, max_staleness=staleness,
                           task_staleness=per_task, digest=digest, key_by_content=key_by_content,
                           task_env=task_env)
    if as_json:
        click.echo(json.dumps(result.to_dict()))  # tasks in the order a run would end them
        return
    width = max([24] + [len(printable(name)) + 1 for name in result.tasks])
    for task in result.tasks.values():
        echo(f"{printable(task.name):<{width}} {task.label:<28} {task.reason}".rstrip())
    counts = result.counts()
    summary = ", ".join(f"{counts[status]} {status}" for status in ("hit", "run", "skipped", "unknown", "fails")
                        if status in counts) or "no tasks"
    echo(f"plan for pipeline {result.pipeline}: {summary} (nothing was run or written)")


@main.command()
@click.option("--pipeline", metavar="NAME", help="Only this pipeline. Default: every pipeline in the store.")
@click.option("--since", metavar="DURATION",
              help="Only executions created in the last DURATION: 12h, 7d, or ISO 8601 PT12H, P7D.")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True, metavar="N",
              help="How many of the tasks that miss most to list.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def stats(pipeline: Optional[str], since: Optional[str], top: int, db_url: Optional[str], as_json: bool) -> None:
    """Tell how well the cache works: executions run and reused, hit rate, compute time saved (the
    reused executions' durations), the tasks that miss most, and invalidated cache sources."""
    from .durations import parse_duration
    from .stats import cache_stats

    window = parse_duration(since, "--since") if since is not None else None
    result = cache_stats(open_store(db_url, read_only=True), pipeline=pipeline, since=window, top=top)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    scope = f"pipeline {pipeline}" if pipeline is not None else _count(result.pipelines, "pipeline")
    echo(f"{scope}" + (f", executions of the last {since}" if since is not None else "") + ":")
    rate = f"{result.hit_rate:.1%}" if result.hit_rate is not None else "n/a"
    echo(f"  executed      {result.executed}" + (f" ({result.caching_off} with caching off)"
                                                  if result.caching_off else ""))
    echo(f"  cached        {result.cached}")
    echo(f"  hit rate      {rate} ({result.cached} of {result.cached + result.misses} lookups)")
    echo(f"  time saved    {result.time_saved_seconds:.1f} s (the reused executions' durations)")
    echo(f"  invalidated   {_count(result.invalidated_sources, 'cache source')}")
    if result.top_misses:
        echo("  tasks that miss most:")
        for task in result.top_misses:
            where = "" if pipeline is not None else f" (pipeline {task.pipeline})"
            echo(f"    {task.task}{where}: {task.misses} miss{'' if task.misses == 1 else 'es'}")


@main.command()
@click.option("--older-than", metavar="DURATION",
              help="Also recover RUNNING executions whose runner cannot be checked from here (another host or "
                   "PID namespace, no runner record) last written longer ago than DURATION: 30m, 2h, 7d, or "
                   "ISO 8601 PT2H, P7D.")
@click.option("--dry-run", is_flag=True, help="List what would be recovered; write nothing.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def recover(older_than: Optional[str], dry_run: bool, db_url: Optional[str], as_json: bool) -> None:
    """Mark FAILED the RUNNING executions (tasks and DAGs) left by a runner that was killed: on this
    host and in this PID namespace, those whose runner process has ended (or the machine restarted
    since); elsewhere (another host, a container), those that hold a cache key whose lease ran out a
    whole lease ago. Each records why in interrupted_reason, and a re-run executes their tasks anew.
    A live runner's work is never touched."""
    from . import recovery

    age = recovery.parse_duration(older_than, "--older-than") if older_than is not None else None
    # Found over a read-only connection: a store that is not there is an error, not a new empty store.
    found = recovery.find_interrupted(open_store(db_url, read_only=True), older_than=age)
    marked = found.interrupted
    if found.interrupted and not dry_run:
        marked = recovery.mark_failed(open_store(db_url, create=False), found.interrupted)
    result = recovery.Recovery(marked, found.alive, found.unknown, dry_run)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    verb = "would mark" if dry_run else "marked"
    for item in result.interrupted:
        what = (f"DAG {item.task!r}" if item.task else "root DAG") if item.is_dag else f"task {item.task!r}"
        where = f" of run {item.run!r}" if item.run else ""
        echo(f"execution {item.execution_id} ({what}{where}): {verb} FAILED: {item.reason}")
    summary = (f"{verb} {_count(len(result.interrupted), 'interrupted execution')} FAILED in "
               f"{_count(len(result.runs), 'run')}" if result.interrupted else "no interrupted executions")
    left = [f"{result.alive} with a live runner"] if result.alive else []
    if result.unknown:
        left.append(f"{result.unknown} whose runner cannot be checked from this host (see --older-than)")
    echo(summary + (f"; left RUNNING: {', '.join(left)}" if left else ""))


@main.command()
@click.option("--artifact", type=RecordIdType(ids.ARTIFACT), metavar="ID",
              help="Stop the cache sources that produced this artifact (6, a:6 or #6).")
@click.option("--execution", type=RecordIdType(ids.EXECUTION), metavar="ID",
              help="Stop this cache source (a CACHED execution: the source it reused; 6 or e:6).")
@click.option("--run", "run_name", metavar="NAME",
              help="Stop the sources the run produced and the sources its CACHED tasks reused.")
@click.option("--pipeline", metavar="NAME", help="With --fingerprint: stop every source of this key.")
@click.option("--fingerprint", metavar="FP", help="With --pipeline: the key's cache fingerprint.")
@click.option("--cascade", is_flag=True,
              help="Also stop every cache source downstream (everything made from the chosen artifacts, "
                   "or from the chosen sources' outputs), found along MLMD's lineage.")
@click.option("--reason", default="", metavar="TEXT", help="Why (recorded, and told by lookup and explain).")
@click.option("--list", "list_all", is_flag=True, help="List the invalidations, in force and undone.")
@click.option("--undo", "undo_id", type=int, metavar="INVALIDATION_ID",
              help="Take an invalidation back: its sources are valid again unless another one covers them.")
@click.option("--dry-run", is_flag=True, help="Tell what would stop; write nothing.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def invalidate(artifact: Optional[int], execution: Optional[int], run_name: Optional[str], pipeline: Optional[str],
               fingerprint: Optional[str], cascade: bool, reason: str, list_all: bool, undo_id: Optional[int],
               dry_run: bool, db_url: Optional[str], as_json: bool) -> None:
    """Stop cache sources from being reused, with --cascade everything derived from them too.

    KFP's records are left as they are: each invalidation is a record of its own (when, why, by
    whom, what was chosen) that lookups, mlmd-lineage explain and show tell, --list lists and
    --undo takes back."""
    from . import invalidation

    targets = [t for t, v in (("--artifact", artifact), ("--execution", execution), ("--run", run_name),
                              ("--pipeline", pipeline), ("--fingerprint", fingerprint)) if v is not None]
    modes = [m for m, on in (("--list", list_all), ("--undo", undo_id is not None)) if on]
    if modes and (targets or len(modes) > 1):
        raise click.UsageError(f"{modes[0]} takes no target" if targets else "give either --list or --undo")
    if list_all and (cascade or reason or dry_run):
        raise click.UsageError("--list takes only --db and --json")
    if undo_id is not None and (cascade or reason):
        raise click.UsageError("--undo takes no --cascade or --reason")
    if not modes:
        # checked here too, so that a mistake is told before a store is opened
        if ("--pipeline" in targets) != ("--fingerprint" in targets):
            raise click.UsageError("--pipeline and --fingerprint go together")
        if len([t for t in targets if t != "--fingerprint"]) != 1:
            raise click.UsageError("give exactly one target: --artifact ID, --execution ID, --run NAME, or "
                                   "--pipeline P --fingerprint FP (or --list, --undo ID)")
    if list_all:
        found = invalidation.list_invalidations(open_store(db_url, read_only=True))
        if as_json:
            click.echo(json.dumps({"invalidations": [i.to_dict() for i in found]}, sort_keys=True))
            return
        if not found:
            echo("no invalidations")
            return
        rows = [(str(i.id), invalidation.utc_text(i.invalidated_at), i.target, "yes" if i.cascade else "no",
                 str(i.count), "in force" if i.in_force else f"undone {invalidation.utc_text(i.undone_at)}", i.by,
                 i.reason or "-") for i in found]
        _echo_table(("ID", "WHEN", "TARGET", "CASCADE", "SOURCES", "STATE", "BY", "REASON"), rows)
        return
    store = open_store(db_url, read_only=dry_run, create=False)
    if undo_id is not None:
        done = invalidation.undo(store, undo_id, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps(done.to_dict(), sort_keys=True))
            return
        verb = "would undo" if dry_run else "undid"
        echo(f"{verb} invalidation {done.id} ({done.target}): its {_count(done.count, 'cache source')} "
             f"{'would be' if dry_run else 'are'} valid again unless another invalidation in force covers them")
        return
    result = invalidation.invalidate(store, artifact=artifact, execution=execution, run=run_name, pipeline=pipeline,
                                     fingerprint=fingerprint, cascade=cascade, reason=reason, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True))
        return
    if not result.sources:
        echo(f"nothing to invalidate: {result.note}")
        return
    head = f"invalidation {result.id}" if result.id is not None else "dry run (nothing written)"
    verb = "would stop" if dry_run else "stopped"
    how = " with cascade" if cascade else ""
    why = f" (reason: {reason})" if reason else ""
    echo(f"{head}: {result.target}{how}{why}: {verb} {_count(result.count, 'cache source')}")
    for source in result.sources:
        how = "chosen" if source.chosen else f"downstream of artifact {source.via}"
        echo(f"  execution {source.execution_id:<8} task {printable(source.task):<24} {how}")


@main.command()
@env_dir_option
@click.option("--prune", is_flag=True, help="Remove environments (never one a run is using); see --older-than, --max-size.")
@click.option("--older-than", metavar="DURATION", help="With --prune: those unused for this long (e.g. 30d, 12h). "
              "Default with --prune and no --max-size: 30d.")
@click.option("--max-size", metavar="SIZE", help="With --prune: then the least recently used, until all take at "
              "most SIZE (e.g. 5G, 500M).")
@click.option("--dry-run", is_flag=True, help="With --prune: list what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_reports_errors
def envs(env_dir: Optional[str], prune: bool, older_than: Optional[str], max_size: Optional[str], dry_run: bool,
         as_json: bool) -> None:
    """List the task environments of --task-env venv (size, last use), or prune them.

    One environment per requirement set (what a task's command asks pip for, and the Python),
    built once and shared by every task and run that asks for the same set."""
    from .durations import parse_duration
    from .environments import EnvironmentCache, parse_size

    if not prune and (older_than or max_size or dry_run):
        raise InvalidArgumentError("--older-than, --max-size and --dry-run go with --prune")
    age = parse_duration(older_than, "--older-than") if older_than is not None else None
    size = parse_size(max_size, "--max-size") if max_size is not None else None
    cache = EnvironmentCache(env_dir)
    cache.check_root(writable=prune)
    if prune:
        if age is None and size is None:
            age = parse_duration("30d", "--older-than")
        removed = cache.prune(older_than=age, max_size=size, dry_run=dry_run)
        if as_json:
            click.echo(json.dumps({"root": str(cache.root), "dry_run": dry_run,
                                   "removed": [info.to_dict() for info in removed]}))
            return
        verb = "would remove" if dry_run else "removed"
        for info in removed:
            echo(f"{verb} {info.key}  {_size_text(info.size)}  {', '.join(info.requirements) or '(no packages)'}")
        freed = _size_text(sum(info.size for info in removed))
        echo(f"{verb} {_count(len(removed), 'environment')} ({freed}) from {cache.root}")
        return
    found = cache.list()
    if as_json:
        click.echo(json.dumps({"root": str(cache.root), "environments": [info.to_dict() for info in found]}))
        return
    if not found:
        echo(f"no environments in {cache.root}")
        return
    rows = [(info.key, info.python, _size_text(info.size),
             info.last_used.astimezone().strftime("%Y-%m-%d %H:%M") if info.last_used else "-",
             "yes" if info.in_use else "no", ", ".join(info.requirements) or "(no packages)") for info in found]
    _echo_table(("KEY", "PYTHON", "SIZE", "LAST USED", "IN USE", "REQUIREMENTS"), rows)
    echo(f"{_count(len(found), 'environment')}, {_size_text(sum(info.size for info in found))}, in {cache.root}")


def _size_text(size: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


def _echo_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell, two spaces apart; cells escaped before they are measured."""
    rows = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    for row in [headers, *rows]:
        echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
