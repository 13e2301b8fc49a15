"""``mlmd-cache leases``: which cache keys are held by which task, run and runner, since when and for
how long more, which are stale; ``--prune`` removes the reservation records of finished keys
(:mod:`mlmd_cache.cache.reservations`)."""
from __future__ import annotations

import time
from typing import Optional

import click

from ..durations import rough_duration
from ..terminal import echo
from .options import counted, db_option, open_store, reports_errors
from .output import echo_table, machine_output, output_options

__all__ = ["leases"]

# The rows of --csv, --tsv and --nl: a reservation's fields, as --json has them.
_COLUMNS = ("state", "pipeline", "fingerprint", "generation", "records", "reason", "execution_id", "task", "run",
            "runner", "since", "last_written", "lease_seconds", "lease_left_seconds")


def _lease_left(reservation) -> str:
    if reservation.state == "done":
        return "-"
    if reservation.lease_left is None:
        return "released"
    if reservation.lease_left < 0:
        return f"expired {rough_duration(reservation.lease_left)} ago"
    return rough_duration(reservation.lease_left)


def _runner(reservation) -> str:
    if reservation.pid is None:
        return "-"
    return f"pid {reservation.pid}" + (f" on {reservation.host}" if reservation.host else "")


def _since(seconds: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) if seconds is not None else "-"


@click.command()
@click.option("--pipeline", metavar="NAME", help="Only this pipeline's keys. Default: every pipeline.")
@click.option("--all", "show_all", is_flag=True, help="Also list finished keys (done, released), not only held "
                                                       "and stale ones.")
@click.option("--prune", is_flag=True,
              help="Remove the reservation records of finished keys (a held or stale key is never removed).")
@click.option("--older-than", default="1h", show_default=True, metavar="DURATION",
              help="With --prune: only keys whose holder finished longer ago than DURATION (30m, 2h, 7d, 0s, or "
                   "ISO 8601 PT2H).")
@click.option("--dry-run", is_flag=True, help="With --prune: list what would be removed; remove nothing.")
@db_option
@output_options
@reports_errors
def leases(pipeline: Optional[str], show_all: bool, prune: bool, older_than: str, dry_run: bool,
           db_url: Optional[str], output_format: str) -> None:
    """List the reservations of cache keys that runners hold to do each key's work once: which key
    (pipeline, fingerprint), which task, run and runner (host, pid), since when, the lease left.
    A stale one's runner ended or stopped its heartbeat: the next runner that wants the key takes
    it over (recover marks its holder FAILED). Each key keeps one record per generation; --prune
    removes the records of finished keys, checked key by key against runners taking them meanwhile."""
    from ..cache import reservations
    from ..durations import parse_duration
    from ..defaults import default_store_url
    from ..store.lease_pruning import sql_database

    click_context = click.get_current_context()
    if not prune and (dry_run or click_context.get_parameter_source("older_than").name != "DEFAULT"):
        raise click.UsageError("--older-than and --dry-run go with --prune")
    if prune:
        age = parse_duration(older_than, "--older-than")
        database = None if dry_run else sql_database(db_url if db_url is not None else default_store_url())
        result = reservations.prune(open_store(db_url, read_only=True), database, older_than=age,
                                    pipeline=pipeline, dry_run=dry_run)
        if machine_output(output_format, _COLUMNS, lambda: [item.to_dict() for item in result.removed],
                          result.to_dict):
            return
        verb = "would remove" if dry_run else "removed"
        for item in result.removed:
            echo(f"{verb} key {item.fingerprint[:12]} of pipeline {item.pipeline} ({item.state}, "
                 f"{counted(item.records, 'record')}, task {item.task or '-'}, last written {_since(item.written)})")
        summary = f"{verb} the records of {counted(len(result.removed), 'finished key')} " \
                  f"({counted(result.records_removed, 'record')})"
        if result.changed:
            summary += f"; left {counted(result.changed, 'key')} that a runner took meanwhile"
        echo(summary)
        return
    found = reservations.list_reservations(open_store(db_url, read_only=True), pipeline=pipeline)
    shown = found if show_all else [r for r in found if r.state not in reservations.FINISHED]
    finished = [r for r in found if r.state in reservations.FINISHED]
    counts = {state: sum(r.state == state for r in found)
              for state in (reservations.HELD, reservations.STALE, reservations.DONE, reservations.RELEASED)}
    if machine_output(output_format, _COLUMNS, lambda: [r.to_dict() for r in shown],
                      lambda: {"reservations": [r.to_dict() for r in shown], "counts": counts,
                               "finished_records": sum(r.records for r in finished)}):
        return
    if shown:
        rows = [(r.state, r.pipeline, r.fingerprint[:12], str(r.generation), r.task or "-", r.run or "-",
                 str(r.execution_id) if r.execution_id is not None else "-", _runner(r), _since(r.since),
                 _lease_left(r)) for r in shown]
        echo_table(("STATE", "PIPELINE", "KEY", "GEN", "TASK", "RUN", "EXECUTION", "RUNNER", "SINCE (UTC)",
                    "LEASE LEFT"), rows)
    held = sum(r.state == reservations.HELD for r in found)
    stale = sum(r.state == reservations.STALE for r in found)
    echo(f"{counted(held, 'held key')}, {stale} stale; {counted(len(finished), 'finished key')} "
         f"({counted(sum(r.records for r in finished), 'record')}: --prune removes them)")
