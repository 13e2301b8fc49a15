"""``mlmd-cache envs``: the task environments ``run-pipeline --task-env venv`` built, listed or pruned
(:mod:`mlmd_cache.environments`)."""
from __future__ import annotations

from typing import Optional

import click

from ..errors import InvalidArgumentError
from ..terminal import echo
from .options import counted, env_dir_option, reports_errors, size_text
from .output import echo_table, machine_output, output_options

ENV_COLUMNS = ("key", "python", "size", "created", "last_used", "in_use", "requirements", "path")


@click.command()
@env_dir_option
@click.option("--prune", is_flag=True, help="Remove environments (never one a run is using); see --older-than, --max-size.")
@click.option("--older-than", metavar="DURATION", help="With --prune: those unused for this long (e.g. 30d, 12h). "
              "Default with --prune and no --max-size: 30d.")
@click.option("--max-size", metavar="SIZE", help="With --prune: then the least recently used, until all take at "
              "most SIZE (e.g. 5G, 500M).")
@click.option("--dry-run", is_flag=True, help="With --prune: list what would be removed; remove nothing.")
@output_options
@reports_errors
def envs(env_dir: Optional[str], prune: bool, older_than: Optional[str], max_size: Optional[str], dry_run: bool,
         output_format: str) -> None:
    """List the task environments of --task-env venv (size, last use), or prune them.

    One environment per requirement set (what a task's command asks pip for, and the Python),
    built once and shared by every task and run that asks for the same set. The rows of --csv,
    --tsv and --nl: the environments (with --prune: those removed)."""
    from ..durations import parse_duration
    from ..environments import EnvironmentCache, parse_size

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
        if machine_output(output_format, ENV_COLUMNS, lambda: [info.to_dict() for info in removed],
                          lambda: {"root": str(cache.root), "dry_run": dry_run,
                                   "removed": [info.to_dict() for info in removed]}, sort_keys=False):
            return
        verb = "would remove" if dry_run else "removed"
        for info in removed:
            echo(f"{verb} {info.key}  {size_text(info.size)}  {', '.join(info.requirements) or '(no packages)'}")
        freed = size_text(sum(info.size for info in removed))
        echo(f"{verb} {counted(len(removed), 'environment')} ({freed}) from {cache.root}")
        return
    found = cache.list()
    if machine_output(output_format, ENV_COLUMNS, lambda: [info.to_dict() for info in found],
                      lambda: {"root": str(cache.root), "environments": [info.to_dict() for info in found]},
                      sort_keys=False):
        return
    if not found:
        echo(f"no environments in {cache.root}")
        return
    rows = [(info.key, info.python, size_text(info.size),
             info.last_used.astimezone().strftime("%Y-%m-%d %H:%M") if info.last_used else "-",
             "yes" if info.in_use else "no", ", ".join(info.requirements) or "(no packages)") for info in found]
    echo_table(("KEY", "PYTHON", "SIZE", "LAST USED", "IN USE", "REQUIREMENTS"), rows)
    echo(f"{counted(len(found), 'environment')}, {size_text(sum(info.size for info in found))}, in {cache.root}")
