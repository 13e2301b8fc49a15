"""``mlmd-cache``: a thin click shell over the library; every command maps to one library call."""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, Optional

import click

from . import records
from .cache import ExecutionCache
from .connection import connect, default_store_path
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
