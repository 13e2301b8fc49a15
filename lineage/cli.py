"""``mlmd-lineage``: a thin click shell over :mod:`lineage.load`, :mod:`lineage.graph`,
:mod:`lineage.explain` and :mod:`lineage.export`, with mlmd-cache's ``--db`` option and errors."""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import click

from mlmd_cache.store import ids
from mlmd_cache.cli.options import (OneLineUsageErrors, OneLineUsageGroup, RecordIdType, db_option, group_db_options,
                                    open_store, reports_errors)
from mlmd_cache.cli.output import Tree, echo_table, machine_output, output_options
from mlmd_cache.errors import InvalidArgumentError, NotFoundError
from mlmd_cache.terminal import echo, escape_warnings

# Only what building the commands needs (no networkx or ml_metadata): a command imports the rest.
from .options import FORMATS, MAX_HOPS

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _reports(command: Callable[..., Any]) -> Callable[..., Any]:
    """mlmd-cache's error handling, with unknown IDs and names as usage errors (exit 2)."""

    @functools.wraps(command)
    def not_found_is_usage(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NotFoundError as error:
            raise InvalidArgumentError(str(error)) from None

    return reports_errors(not_found_is_usage)


def _time(milliseconds: Optional[int]) -> str:
    if not milliseconds:
        return "-"
    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _in_force(data: dict[str, Any]) -> list[int]:
    """The IDs of the invalidations in force that stop an execution as a cache source."""
    return [r["id"] for r in data.get("invalidations") or [] if r["in_force"]]


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True, default=str))


def _node_json(graph, node: str) -> dict[str, Any]:
    return {"node": node, **graph.nodes[node]}


def _node_text(data: dict[str, Any]) -> str:
    from . import graph as lg

    if data["kind"] == "artifact":
        text = f"artifact #{data['id']} {data.get('name') or ''} ({data.get('type')})  {data.get('uri') or ''}"
    else:
        text = f"execution {data['id']} {data.get('task_name') or data.get('name') or ''} {lg.cache_state(data)}"
        if data.get("cached_execution_id") is not None:
            text += f" (from {data['cached_execution_id']})"
    if data.get("run"):
        text += f"  run {data['run']}"
    return text.rstrip()


class _Commands(OneLineUsageGroup):
    """Subcommands with one-line usage errors, as ``mlmd-cache serve`` has (one line on stderr, always)."""
    command_class = OneLineUsageErrors


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlmd-cache")
@group_db_options
def main() -> None:
    """Lineage of KFP pipeline runs in an ML Metadata store: runs, neighbours, upstream and
    downstream trees, why a task was cached or executed, and exports (JSON, GraphML, DOT, SVG, PNG, HTML).

    IDs: a:6 or #6 is artifact 6, e:6 execution 6 (MLMD numbers the two apart); a plain 6 is an
    artifact for show, upstream and downstream, an execution for explain, or the other kind when
    only that one has the ID."""
    escape_warnings()  # a warning may quote stored text


# A run's state as run_summaries tells it (from its root DAG execution).
RUN_STATES = ("complete", "failed", "running", "interrupted")
RUN_COLUMNS = ("run", "pipeline", "create_time", "state", "executed", "cached", "failed", "interrupted", "other")


@main.command()
@click.option("-n", "--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the N newest runs (of those the other options choose; default: all).")
@click.option("--pipeline", metavar="NAME", help="Only the runs of this pipeline.")
@click.option("--since", metavar="DURATION",
              help="Only the runs created in the last DURATION: 12h, 7d, or ISO 8601 PT12H, P7D.")
@click.option("--state", type=click.Choice(RUN_STATES, case_sensitive=False),
              help="Only the runs in this state (any case: FAILED is failed).")
@db_option
@output_options
@_reports
def runs(limit: Optional[int], pipeline: Optional[str], since: Optional[str], state: Optional[str],
         db_url: Optional[str], output_format: str) -> None:
    """List pipeline runs, newest first, with their executed, cached and failed tasks."""
    from mlmd_cache.durations import parse_duration

    from . import graph as lg, load

    window = parse_duration(since, "--since") if since is not None else None  # before the store is opened
    chosen = pipeline is not None or window is not None or state is not None
    # with a filter, every run is read and the newest N of those chosen kept
    summaries = lg.run_summaries(load.load_runs(open_store(db_url, read_only=True), limit=None if chosen else limit))
    if window is not None:
        earliest = (time.time() - window.total_seconds()) * 1000
        summaries = [s for s in summaries if (s["create_time"] or 0) >= earliest]
    if pipeline is not None:
        summaries = [s for s in summaries if s["pipeline"] == pipeline]
    if state is not None:
        summaries = [s for s in summaries if s["state"] == state.lower()]
    summaries = summaries[:limit]
    if machine_output(output_format, RUN_COLUMNS, lambda: summaries, lambda: {"runs": summaries}):
        return
    if not summaries:
        echo("no pipeline runs" + (" chosen by --pipeline, --since or --state" if chosen else ""))
        return
    rows = [(s["run"], s["pipeline"], _time(s["create_time"]), s["executed"], s["cached"], s["failed"], s["state"])
            for s in summaries]
    echo_table(("RUN", "PIPELINE", "CREATED (UTC)", "EXECUTED", "CACHED", "FAILED", "STATE"), rows)


def _edges_text(graph, node: str, incoming: bool) -> list[tuple[str, str]]:
    edges = graph.in_edges(node, keys=True) if incoming else graph.out_edges(node, keys=True)
    pairs = [(key, u if incoming else v) for u, v, key in edges]
    return sorted(pairs, key=lambda p: (p[0], graph.nodes[p[1]]["id"]))


_KINDS = ("run", "execution", "artifact")
SHOW_RUN_COLUMNS = ("id", "task", "state", "cached_from", "invalidated_by", "inputs", "outputs", "node")
NEIGHBOUR_COLUMNS = ("direction", "key", "node", "kind", "id", "type", "name", "task_name", "state", "run", "uri")
METRICS_TYPE = "system.Metrics"  # metrics.log_metric's values, as KFP keeps them: its custom properties


def _metric_values(data: dict[str, Any]) -> str:
    """A Metrics artifact's values (``mse = 0.0856...``; every digit of a float, as the task logged
    it: lineage.load reads mlmd_cache_exact_metadata), or "" for any other node."""
    from mlmd_cache.store import records

    from . import explain as lx

    if data.get("kind") != "artifact" or data.get("type") != METRICS_TYPE:
        return ""
    values = sorted((k, v) for k, v in (data.get("properties") or {}).items()
                    if k != records.DISPLAY_NAME and not k.startswith("mlmd_cache_"))
    return ", ".join(f"{key} = {lx.format_value(value)}" for key, value in values) or "no values"


@main.command()
@click.argument("what", metavar="run NAME | execution ID | artifact ID | ID")
@click.argument("name", required=False, metavar="")
@db_option
@output_options
@_reports
def show(what: str, name: Optional[str], db_url: Optional[str], output_format: str) -> None:
    """Show a run (by name), an execution or an artifact with its neighbours: `execution 6`,
    `artifact 6`, or one ID (e:6; a:6 or #6; 6: the artifact, else the execution). The metric
    values of Metrics artifacts are shown as their task logged them. The rows of --csv, --tsv and
    --nl: a run's executions, an execution's or artifact's neighbours."""
    from mlmd_cache.cache import invalidation
    from mlmd_cache.store import records

    from . import explain as lx, graph as lg, load

    kind = what if what in _KINDS else None
    if kind is None and name is not None:
        raise click.UsageError(f"{what!r}: expected run NAME, execution ID, artifact ID, or one ID (a:6, #6, e:6)")
    if kind is not None and name is None:
        raise click.UsageError(f"show {kind}: which one? (give its {'name' if kind == 'run' else 'ID'})")
    if kind != "run":  # before the store is opened
        record = ids.parse_id(name, only=kind, label=f"show {kind}") if kind else ids.parse_id(what)
    store = open_store(db_url, read_only=True)
    if kind == "run":
        graph = load.load_run(store, name)
        executions = lg.run_executions(graph, name)
        pipeline = next((d.get("pipeline") for _, d in graph.nodes(data=True) if d.get("pipeline")), None)
        for entry in executions:
            entry["invalidated_by"] = _in_force(graph.nodes[entry["node"]])
            entry["inputs"] = {k: graph.nodes[n]["id"] for k, n in _edges_text(graph, entry["node"], True)}
            entry["outputs"] = {k: graph.nodes[n]["id"] for k, n in _edges_text(graph, entry["node"], False)}
        def document() -> dict[str, Any]:
            artifacts = [_node_json(graph, n) for n, d in graph.nodes(data=True) if d["kind"] == "artifact"]
            return {"run": name, "pipeline": pipeline, "executions": executions,
                    "artifacts": sorted(artifacts, key=lambda a: a["id"])}

        if machine_output(output_format, SHOW_RUN_COLUMNS, lambda: executions, document):
            return
        echo(f"run {name} of pipeline {pipeline}")
        rows = [(e["id"], e["task"], e["state"] + (f" (invalidated: {', '.join(map(str, e['invalidated_by']))})"
                                                   if e["invalidated_by"] else ""), e["cached_from"],
                 ", ".join(f"{k}=#{v}" for k, v in e["inputs"].items()),
                 ", ".join(f"{k}=#{v}" for k, v in e["outputs"].items())) for e in executions]
        echo_table(("EXECUTION", "TASK", "STATE", "CACHED FROM", "INPUTS", "OUTPUTS"), rows, indent="  ")
        for entry in executions:  # what its Metrics artifacts hold, as run-pipeline's summary tells it
            for key, other in _edges_text(graph, entry["node"], False):
                values = _metric_values(graph.nodes[other])
                if values:
                    echo(f"  metrics  {entry['task']}/{key} (#{graph.nodes[other]['id']}): {values}")
        return
    node = load.resolve_node(store, record, prefer=ids.ARTIFACT)
    kind = "artifact" if node.startswith("a:") else "execution"
    graph = load.load_subgraph(store, [node], hops=1, direction="both")
    data = graph.nodes[node]
    inputs, outputs = _edges_text(graph, node, True), _edges_text(graph, node, False)
    if machine_output(output_format, NEIGHBOUR_COLUMNS,
                      lambda: [{"direction": direction, "key": key, **_node_json(graph, other)}
                               for direction, pairs in (("in", inputs), ("out", outputs)) for key, other in pairs],
                      lambda: {**_node_json(graph, node),
                               "in": [{"key": k, **_node_json(graph, n)} for k, n in inputs],
                               "out": [{"key": k, **_node_json(graph, n)} for k, n in outputs]}):
        return
    echo(_node_text(data))
    fields = [("type", data.get("type")), ("state", data.get("state")), ("created", _time(data.get("create_time")))]
    if kind == "execution":
        fields.append(("pipeline", data.get("pipeline")))
        props = data.get("properties", {})
        if lg.cache_state(data) == "INTERRUPTED":  # RUNNING, but nothing will end it: `mlmd-cache recover` will
            fields[1] = ("state", "RUNNING, interrupted: its runner is gone (mlmd-cache recover marks it FAILED)")
        fields += [("runner", props.get("runner")), ("interrupted", props.get("interrupted_reason"))]
        fields += [("image", props.get("image")), ("fingerprint", props.get("cache_fingerprint"))]
        fields += [("cache source", invalidation.describe(record, chosen=record["chosen"]))
                   for record in data.get("invalidations") or []]
        fields += [("parameter " + k, lx.format_value(v)) for k, v in sorted((props.get("inputs") or {}).items())]
    else:  # what its task logged (metrics.log_metric, artifact.metadata): floats exactly, as records.py keeps them
        fields += [("metadata " + k, lx.format_value(v)) for k, v in sorted((data.get("properties") or {}).items())
                   if k != records.DISPLAY_NAME and not k.startswith("mlmd_cache_")]
    for label, value in fields:
        if value not in (None, ""):
            echo(f"  {label + ':':<18} {value}")
    titles = ("inputs", "outputs") if kind == "execution" else ("produced by", "consumed by")
    for title, pairs in zip(titles, (inputs, outputs)):
        echo(f"  {title}:")
        if not pairs:
            echo("    (none)")
        for key, other in pairs:
            echo(f"    {key or '-':<12} {_node_text(graph.nodes[other])}")
            values = _metric_values(graph.nodes[other])
            if values:
                echo(f"    {'':<12} metrics: {values}")


def _tree_label(graph, entry: dict[str, Any]) -> str:
    via = f"[{entry['via']}] " if entry["via"] else ""
    seen = "  (shown above)" if entry["seen"] else ""
    return f"{via}{_node_text(graph.nodes[entry['node']])}{seen}"


def _draw_tree(graph, entry: dict[str, Any]) -> Tree:
    """The tree of :func:`lineage.graph.tree`, drawn by rich."""
    drawn = Tree(_node_text(graph.nodes[entry["node"]]))
    stack = [(drawn, child) for child in reversed(entry["children"])]
    while stack:  # depth first, children in order, without recursion (a lineage may be 100 hops deep)
        parent, child = stack.pop()
        node = parent.add(_tree_label(graph, child))
        stack.extend((node, grandchild) for grandchild in reversed(child["children"]))
    return drawn


TREE_COLUMNS = ("level", "via", "parent", "node", "kind", "id", "type", "name", "task_name", "state",
                "cached_execution_id", "run", "uri")


def _tree_rows(graph, root: dict[str, Any]) -> list[dict[str, Any]]:
    """Each node of the tree once, in the order the tree shows them: its level (0 for the root), the
    event key it was reached by and the node it was reached from, and its attributes."""
    rows, stack = [], [(root, 0, None)]
    while stack:
        entry, level, parent = stack.pop()
        if entry["seen"]:
            continue
        rows.append({"level": level, "via": entry["via"], "parent": parent, **_node_json(graph, entry["node"])})
        stack.extend((child, level + 1, entry["node"]) for child in reversed(entry["children"]))
    return rows


def _tree_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {"node": entry["node"], "via": entry["via"], "seen": entry["seen"],
            "children": [_tree_json(c) for c in entry["children"]]}


def _closure_command(direction: str) -> Callable[..., Any]:
    def command(record_id: str, depth: Optional[int], cached: bool, db_url: Optional[str], output_format: str) -> None:
        from . import graph as lg, load

        record = ids.parse_id(record_id)  # before the store is opened
        store = open_store(db_url, read_only=True)
        node = load.resolve_node(store, record, prefer=ids.ARTIFACT)
        hops = MAX_HOPS if depth is None else depth
        graph = load.load_subgraph(store, [node], hops=hops, direction=direction, cached=cached)
        tree = lg.tree(graph, node, direction=direction, depth=hops, cached=cached)
        def document() -> dict[str, Any]:
            closure = (lg.upstream if direction == "upstream" else lg.downstream)(graph, node, hops, cached=cached)
            return {"root": node, "direction": direction, "depth": depth, "cached": cached,
                    "nodes": lg.nodes_of(graph, closure | {node}), "tree": _tree_json(tree)}

        if machine_output(output_format, TREE_COLUMNS, lambda: _tree_rows(graph, tree), document):
            return
        _draw_tree(graph, tree).echo()

    command.__doc__ = (f"The {direction} lineage of an artifact or execution as a tree: "
                       f"{'what it was made from' if direction == 'upstream' else 'what was made from it'}. "
                       "ID: a:6 or #6 (an artifact), e:6 (an execution), or 6 (the artifact, else the execution). "
                       "--depth counts edges (1: the nodes next to it). The rows of --csv, --tsv and --nl: "
                       "each node once, in the tree's order, with its level.")
    return command


# Both show CACHED executions by default, as lineage.upstream() and lineage.downstream() do (one
# default and one name, cached, in Python and here): a CACHED execution has OUTPUT events to the
# artifacts it reused, as KFP records them, so it stands beside their producer; --no-cached keeps
# what made an artifact, and has MLMD stop its trace at them (cheaper for a much reused artifact).
for _direction in ("upstream", "downstream"):
    main.command(_direction)(
        click.argument("record_id", metavar="ID")(
            click.option("--depth", type=click.IntRange(0, MAX_HOPS), metavar="N",
                         help=f"At most N edges away (default: {MAX_HOPS}).")(
                click.option("--cached/--no-cached", default=True, show_default=True,
                             help="Show CACHED executions (the runs that reused an artifact), as "
                                  f"lineage.{_direction}() does by default (cached=True).")(
                    db_option(output_options(_reports(_closure_command(_direction))))))))


@main.command("explain")
@click.argument("record_id", metavar="ID")
@db_option
@json_option
@_reports
def explain_command(record_id: str, db_url: Optional[str], as_json: bool) -> None:
    """Why an execution was cached (its source) or executed (what changed in its cache key since
    the task's closest earlier execution, caching disabled, or first run); of a DAG execution, what
    it holds. ID: 6 or e:6 (an execution), a:6 or #6 (the execution that made artifact 6)."""
    from . import explain as lx, load

    record = ids.parse_id(record_id)  # before the store is opened
    store = open_store(db_url, read_only=True)
    result = lx.explain(load.load_explanation(store, load.resolve_node(store, record, prefer=ids.EXECUTION)))
    if as_json:
        _echo_json(result)
        return
    for line in lx.describe(result):
        echo(line)


@main.command()
@click.option("--run", "run_name", metavar="NAME", help="Export one pipeline run.")
@click.option("--artifact", "artifact_id", type=RecordIdType(ids.ARTIFACT), metavar="ID",
              help="Export the neighbourhood of an artifact (6, a:6 or #6).")
@click.option("--depth", type=click.IntRange(0, MAX_HOPS), default=4, show_default=True, metavar="N",
              help="With --artifact: at most N edges away, both directions.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Default: from the file's extension (required with -o -).")
@click.option("-o", "--output", required=True, metavar="FILE", help="The file to write; - for standard output.")
@db_option
@_reports
def export(run_name: Optional[str], artifact_id: Optional[int], depth: int, fmt: Optional[str], output: str,
           db_url: Optional[str]) -> None:
    """Export lineage (a run, an artifact's neighbourhood, or the whole store) as node-link JSON,
    GraphML, DOT, an SVG/PNG drawn by Graphviz, or one self-contained HTML page to explore."""
    from . import export as lexport, graph as lg, load

    if run_name and artifact_id is not None:
        raise click.UsageError("give either --run or --artifact, not both")
    if fmt is None:
        if output == "-":
            raise click.UsageError(f"give --format with -o - (standard output has no file extension): "
                                   f"{', '.join(lexport.FORMATS[:-1])} or {lexport.FORMATS[-1]}")
        fmt = os.path.splitext(output)[1].lstrip(".").lower()
        if fmt not in lexport.FORMATS:
            raise click.UsageError(f"cannot tell the format from {output!r}: give --format")
    store = open_store(db_url, read_only=True)
    if run_name:
        graph, subject = load.load_run(store, run_name), f"run {run_name!r}"
    elif artifact_id is not None:
        graph = load.load_subgraph(store, [load.artifact_node(artifact_id)], hops=depth, direction="both")
        subject = f"artifact #{artifact_id}"
    else:
        graph, subject = load.load_store(store), "the store"
    lexport.check_not_empty(graph, subject)
    graph = lg.with_parameter_flow(graph)  # tasks that pass parameters, drawn connected as KFP's UI shows them
    title = f"lineage of {subject}"
    if output == "-":
        sys.stdout.buffer.write(lexport.content(graph, fmt, title))
        sys.stdout.flush()
    else:
        lexport.write(graph, fmt, output, title)
    echo(f"wrote {graph.number_of_nodes()} nodes and {graph.number_of_edges()} edges to "
         f"{'standard output' if output == '-' else output} ({fmt})", err=True)
