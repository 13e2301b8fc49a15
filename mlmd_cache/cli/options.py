"""What the commands of ``mlmd-cache`` (and ``mlmd-lineage``, :mod:`lineage.cli`) share: errors told in
one line with the exit code of their kind, ``--db`` and ``--timeout`` before or after the
subcommand, opening the store, record IDs, the task environment options, a cache key read from a
file, and the small text helpers of the commands' output (their output formats: :mod:`.output`)."""
from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

import click

from .._entry import exit_interrupted, interrupt_pending
from .._messages import _one_line
from ..defaults import CALL_TIMEOUT_SECONDS, DEFAULT_TASK_ENV, TASK_ENV_MODES, default_store_path
from ..errors import CacheKeyError, InvalidArgumentError, MlmdCacheError, NotFoundError, StoreURLError
from ..store import ids
from ..terminal import echo, show_mlmd_log

if TYPE_CHECKING:
    from ..key.cache_key import CacheKey
    from ..store.client import Store

# User mistakes in what was given (a bad key, URL or argument, a name the store does not have) exit 2,
# as click's usage errors do; failures of the store exit 1.
USAGE_ERRORS = (CacheKeyError, InvalidArgumentError, NotFoundError, StoreURLError)


def mlmd_errors() -> tuple[type[BaseException], ...]:
    """ml_metadata's errors, once ml_metadata is imported: none can be raised before."""
    errors = sys.modules.get("ml_metadata.errors")
    return (errors.StatusError,) if errors is not None else ()


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
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
            sys.exit(2 if isinstance(error, USAGE_ERRORS) else 1)
        except mlmd_errors() as error:
            from ..store.client import store_fault

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


def timeout_option(command: Callable[..., Any], hidden: bool = False) -> Callable[..., Any]:
    return click.option("--timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
                        callback=_remember_timeout, expose_value=False, hidden=hidden, help=_TIMEOUT_HELP)(command)


def open_store(db_url: Optional[str], *, read_only: bool = False, create: bool = True) -> Store:
    """The store ``--db`` names, opened as the command needs it, with ``--timeout`` as its call deadline."""
    from ..store.connection import connect

    ctx = click.get_current_context(silent=True)
    timeout = ctx.meta.get(_TIMEOUT, CALL_TIMEOUT_SECONDS) if ctx else CALL_TIMEOUT_SECONDS
    return connect(db_url, read_only=read_only, create=create, call_timeout=timeout)


def db_url_option(help_text: str = _DB_HELP) -> Callable[..., Any]:
    return click.option("--db", "db_url", metavar="URL", callback=_command_db, help=help_text)


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--timeout``: every command that opens a store takes both (also before the
    subcommand: :func:`group_db_options`)."""
    return db_url_option()(timeout_option(command))


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
    """An artifact or execution ID as :func:`mlmd_cache.store.ids.parse_id` reads it (``6``, ``a:6``, ``#6``,
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


def with_custom_key(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(custom_key_options):
        command = option(command)
    return command


def read_key(key_file) -> CacheKey:
    """The cache key in FILE, or on standard input when no FILE (or ``-``) is given."""
    from ..key.cache_key import CacheKey

    stream = key_file or click.open_file("-", "rb")
    if stream.isatty():  # without this a forgotten FILE looks like a hang
        echo("reading a cache key (KFP's JSON) from standard input: paste it and end with Ctrl-D, "
             "or give FILE", err=True)
    return CacheKey.from_json(stream.read())


class OneLineUsageGroup(click.Group):
    """Every subcommand's usage errors in one line, as serve's (:class:`OneLineUsageErrors`): a
    subcommand parses its arguments inside the group's invoke; the group's own (``--db``,
    ``--timeout`` before the subcommand) in its make_context. A stop signal (Ctrl-C, and SIGTERM
    and SIGHUP under the console scripts, :mod:`mlmd_cache._entry`) that no command handled ends
    it in one line too, where click would write an empty line and ``Aborted!``."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            if isinstance(error, OneLineUsageError):
                raise
            raise OneLineUsageError(error.format_message(), error.ctx) from None
        except KeyboardInterrupt:
            exit_interrupted(info_name or "mlmd-cache")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            if isinstance(error, OneLineUsageError):
                raise
            raise OneLineUsageError(error.format_message(), error.ctx or ctx) from None
        except KeyboardInterrupt:
            exit_interrupted(ctx.find_root().info_name or "mlmd-cache")


def read_file(path: Optional[str], option: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise click.BadParameter(f"{path}: {error.strerror}", param_hint=option) from None


class OneLineUsageError(click.UsageError):
    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        echo(f"Error: {self.format_message()}{hint}", err=True)


class OneLineUsageErrors(click.Command):
    """Usage errors in one line, without click's usage banner: a server's log shows one line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as error:
            raise OneLineUsageError(error.format_message(), error.ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise OneLineUsageError(error.format_message(), error.ctx or ctx) from None


def counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def size_text(size: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"

