"""``mlmd-cache fingerprint`` and ``mlmd-cache lookup``: a cache key (a KFP ``CacheKey`` as JSON) hashed,
and looked up in a store."""
from __future__ import annotations

import json
import sys
from typing import Any, Optional

import click

from ..terminal import echo
from .options import db_option, key_argument, open_store, read_key, reports_errors, with_custom_key


@click.command()
@key_argument
@with_custom_key
@click.option("--show-bytes", is_flag=True, help="Also print the exact bytes that are hashed.")
@reports_errors
def fingerprint(key_file, custom_key: Optional[str], component_name: str, show_bytes: bool) -> None:
    """Print the KFP fingerprint of a cache key.

    Reads a CacheKey in KFP's JSON form from FILE (or standard input), or, with --custom-key,
    fingerprints a custom cache key for --component.
    """
    from ..key.cache_key import custom_fingerprint

    if custom_key is not None:
        if key_file is not None:
            raise click.UsageError("give either a cache key FILE or --custom-key, not both")
        hashed = f"{component_name}\x00{custom_key}" if component_name else custom_key
        click.echo(custom_fingerprint(component_name, custom_key))
        if show_bytes:
            click.echo(json.dumps(hashed))
        return
    key = read_key(key_file)
    click.echo(key.fingerprint())
    if show_bytes:
        click.echo(key.hashed_bytes().decode("utf-8"))


@click.command()
@key_argument
@click.option("--pipeline", required=True, help="The pipeline whose earlier runs may be reused.")
@with_custom_key
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--exit-code", is_flag=True, help="Exit 0 on a hit, 1 on a miss (errors: 2 or 1, as always).")
@reports_errors
def lookup(key_file, pipeline: str, custom_key: Optional[str], component_name: str,
           db_url: Optional[str], as_json: bool, exit_code: bool) -> None:
    """Tell whether a task with this cache key would hit the cache, and what it would reuse
    (exit 0 either way, unless --exit-code)."""
    from ..store import records
    from ..cache.execution_cache import ExecutionCache
    from ..key.cache_key import custom_fingerprint

    key = read_key(key_file)
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
