"""The commands over a store's records: ``index`` (make a store KFP wrote a cache's sources),
``stats`` (hit rates), ``recover`` (close what killed runners left RUNNING) and ``invalidate``
(stop cache sources from being reused)."""
from __future__ import annotations

from typing import Optional

import click

from ..store import ids
from ..terminal import echo, printable
from .options import RecordIdType, counted, db_option, open_store, reports_errors
from .output import echo_table, machine_output, output_options


@click.command()
@click.option("--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="A pipeline to index (repeatable). Default: every pipeline in the store.")
@click.option("--dry-run", is_flag=True, help="Count what would be indexed; write nothing.")
@db_option
@output_options
@reports_errors
def index(pipelines: tuple[str, ...], dry_run: bool, db_url: Optional[str], output_format: str) -> None:
    """Make executions that KFP recorded (COMPLETE, with a cache_fingerprint) cache sources for
    mlmd-cache, so that its lookups reuse them. Indexing again adds only what came since. The rows
    of --csv, --tsv and --nl: one per pipeline."""
    from ..cache.execution_cache import ExecutionCache

    cache = ExecutionCache(open_store(db_url, read_only=dry_run))
    reports = [cache.index_sources(name, dry_run=dry_run) for name in (pipelines or cache.pipeline_names())]
    rows = [{"pipeline": r.pipeline, "sources": r.sources, "keys": r.keys, "added": r.added,
             "already_indexed": r.already_indexed} for r in reports]
    if machine_output(output_format, ("pipeline", "sources", "keys", "added", "already_indexed"), lambda: rows,
                      lambda: {"dry_run": dry_run, "pipelines": rows}):
        return
    if not reports:
        echo("no pipelines in the store")
    verb = "would add" if dry_run else "added"
    for r in reports:
        echo(f"pipeline {r.pipeline}: {counted(r.sources, 'cache source')} of {counted(r.keys, 'key')}: "
             f"{verb} {r.added}, {r.already_indexed} already indexed")


@click.command()
@click.option("--pipeline", metavar="NAME", help="Only this pipeline. Default: every pipeline in the store.")
@click.option("--since", metavar="DURATION",
              help="Only executions created in the last DURATION: 12h, 7d, or ISO 8601 PT12H, P7D.")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True, metavar="N",
              help="How many of the tasks that miss most to list.")
@db_option
@output_options
@reports_errors
def stats(pipeline: Optional[str], since: Optional[str], top: int, db_url: Optional[str], output_format: str) -> None:
    """Tell how well the cache works: executions run and reused, hit rate, compute time saved (the
    reused executions' durations), the tasks that miss most, invalidated cache sources, and the
    cache keys runners hold now (mlmd-cache leases lists them). --csv, --tsv and --nl: one row of
    the numbers (--json adds the tasks that miss most)."""
    from ..durations import parse_duration
    from ..cache.stats import cache_stats

    window = parse_duration(since, "--since") if since is not None else None
    result = cache_stats(open_store(db_url, read_only=True), pipeline=pipeline, since=window, top=top)
    numbers = {k: v for k, v in result.to_dict().items() if k != "top_misses"}  # a row: --json adds the list
    if machine_output(output_format, tuple(numbers), lambda: [numbers], result.to_dict):
        return
    scope = f"pipeline {pipeline}" if pipeline is not None else counted(result.pipelines, "pipeline")
    echo(f"{scope}" + (f", executions of the last {since}" if since is not None else "") + ":")
    rate = f"{result.hit_rate:.1%}" if result.hit_rate is not None else "n/a"
    echo(f"  executed      {result.executed}" + (f" ({result.caching_off} with caching off)"
                                                  if result.caching_off else ""))
    echo(f"  cached        {result.cached}")
    echo(f"  hit rate      {rate} ({result.cached} of {result.cached + result.misses} lookups)")
    echo(f"  time saved    {result.time_saved_seconds:.1f} s (the reused executions' durations)")
    echo(f"  invalidated   {counted(result.invalidated_sources, 'cache source')}")
    echo(f"  held keys     {result.held_keys} now" + (f" ({result.stale_keys} more stale)" if result.stale_keys else "")
         + ("; mlmd-cache leases lists them" if result.held_keys or result.stale_keys else ""))
    if result.top_misses:
        echo("  tasks that miss most:")
        for task in result.top_misses:
            where = "" if pipeline is not None else f" (pipeline {task.pipeline})"
            echo(f"    {task.task}{where}: {task.misses} miss{'' if task.misses == 1 else 'es'}")


@click.command()
@click.option("--older-than", metavar="DURATION",
              help="Also recover RUNNING executions whose runner cannot be checked from here (another host or "
                   "PID namespace, no runner record) last written longer ago than DURATION: 30m, 2h, 7d, or "
                   "ISO 8601 PT2H, P7D.")
@click.option("--dry-run", is_flag=True, help="List what would be recovered; write nothing.")
@db_option
@output_options
@reports_errors
def recover(older_than: Optional[str], dry_run: bool, db_url: Optional[str], output_format: str) -> None:
    """Mark FAILED the RUNNING executions (tasks and DAGs) left by a runner that was killed: on this
    host and in this PID namespace, those whose runner process has ended (or the machine restarted
    since); elsewhere (another host, a container), those that hold a cache key whose lease ran out a
    whole lease ago. Each records why in interrupted_reason, and a re-run executes their tasks anew.
    A live runner's work is never touched. The rows of --csv, --tsv and --nl: the interrupted executions."""
    from ..cache import recovery

    age = recovery.parse_duration(older_than, "--older-than") if older_than is not None else None
    # Found over a read-only connection: a store that is not there is an error, not a new empty store.
    found = recovery.find_interrupted(open_store(db_url, read_only=True), older_than=age)
    marked = found.interrupted
    if found.interrupted and not dry_run:
        marked = recovery.mark_failed(open_store(db_url, create=False), found.interrupted)
    result = recovery.Recovery(marked, found.alive, found.unknown, dry_run)
    if machine_output(output_format, ("execution_id", "type", "task", "run", "runner", "reason"),
                      lambda: [item.to_dict() for item in result.interrupted], result.to_dict):
        return
    verb = "would mark" if dry_run else "marked"
    for item in result.interrupted:
        what = (f"DAG {item.task!r}" if item.task else "root DAG") if item.is_dag else f"task {item.task!r}"
        where = f" of run {item.run!r}" if item.run else ""
        echo(f"execution {item.execution_id} ({what}{where}): {verb} FAILED: {item.reason}")
    summary = (f"{verb} {counted(len(result.interrupted), 'interrupted execution')} FAILED in "
               f"{counted(len(result.runs), 'run')}" if result.interrupted else "no interrupted executions")
    left = [f"{result.alive} with a live runner"] if result.alive else []
    if result.unknown:
        left.append(f"{result.unknown} whose runner cannot be checked from this host (see --older-than)")
    echo(summary + (f"; left RUNNING: {', '.join(left)}" if left else ""))


INVALIDATION_COLUMNS = ("id", "invalidated_at_utc", "target", "cascade", "count", "in_force", "undone_at", "by",
                        "reason", "invalidated_at", "dry_run", "note")


@click.command()
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
@output_options
@reports_errors
def invalidate(artifact: Optional[int], execution: Optional[int], run_name: Optional[str], pipeline: Optional[str],
               fingerprint: Optional[str], cascade: bool, reason: str, list_all: bool, undo_id: Optional[int],
               dry_run: bool, db_url: Optional[str], output_format: str) -> None:
    """Stop cache sources from being reused, with --cascade everything derived from them too.

    KFP's records are left as they are: each invalidation is a record of its own (when, why, by
    whom, what was chosen) that lookups, mlmd-lineage explain and show tell, --list lists and
    --undo takes back. The rows of --csv, --tsv and --nl: the invalidations of --list, the
    cache sources an invalidation stops, the invalidation --undo takes back."""
    from ..cache import invalidation

    targets = [t for t, v in (("--artifact", artifact), ("--execution", execution), ("--run", run_name),
                              ("--pipeline", pipeline), ("--fingerprint", fingerprint)) if v is not None]
    modes = [m for m, on in (("--list", list_all), ("--undo", undo_id is not None)) if on]
    if modes and (targets or len(modes) > 1):
        raise click.UsageError(f"{modes[0]} takes no target" if targets else "give either --list or --undo")
    if list_all and (cascade or reason or dry_run):
        raise click.UsageError("--list takes only --db and an output format")
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
        if machine_output(output_format, INVALIDATION_COLUMNS, lambda: [i.to_dict() for i in found],
                          lambda: {"invalidations": [i.to_dict() for i in found]}):
            return
        if not found:
            echo("no invalidations")
            return
        rows = [(str(i.id), invalidation.utc_text(i.invalidated_at), i.target, "yes" if i.cascade else "no",
                 str(i.count), "in force" if i.in_force else f"undone {invalidation.utc_text(i.undone_at)}", i.by,
                 i.reason or "-") for i in found]
        echo_table(("ID", "WHEN", "TARGET", "CASCADE", "SOURCES", "STATE", "BY", "REASON"), rows)
        return
    store = open_store(db_url, read_only=dry_run, create=False)
    if undo_id is not None:
        done = invalidation.undo(store, undo_id, dry_run=dry_run)
        if machine_output(output_format, INVALIDATION_COLUMNS, lambda: [done.to_dict()], done.to_dict):
            return
        verb = "would undo" if dry_run else "undid"
        echo(f"{verb} invalidation {done.id} ({done.target}): its {counted(done.count, 'cache source')} "
             f"{'would be' if dry_run else 'are'} valid again unless another invalidation in force covers them")
        return
    result = invalidation.invalidate(store, artifact=artifact, execution=execution, run=run_name, pipeline=pipeline,
                                     fingerprint=fingerprint, cascade=cascade, reason=reason, dry_run=dry_run)
    if machine_output(output_format, ("execution_id", "task", "fingerprint", "chosen", "via_artifact"),
                      lambda: [source.to_dict() for source in result.sources], result.to_dict):
        return
    if not result.sources:
        echo(f"nothing to invalidate: {result.note}")
        return
    head = f"invalidation {result.id}" if result.id is not None else "dry run (nothing written)"
    verb = "would stop" if dry_run else "stopped"
    how = " with cascade" if cascade else ""
    why = f" (reason: {reason})" if reason else ""
    echo(f"{head}: {result.target}{how}{why}: {verb} {counted(result.count, 'cache source')}")
    for source in result.sources:
        how = "chosen" if source.chosen else f"downstream of artifact {source.via}"
        echo(f"  execution {source.execution_id:<8} task {printable(source.task):<24} {how}")
