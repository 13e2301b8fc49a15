"""A lineage graph written as networkx node-link JSON, GraphML, Graphviz DOT, drawn as SVG/PNG by
Graphviz's ``dot`` command (Debian package ``graphviz``), or as one self-contained HTML page (that
drawing, panned and zoomed, with each node's properties and a search box).

Drawings are laid out top to bottom (a chain of tasks is a column, readable at the width of a
README), each pipeline run a frame: the run's root DAG execution is that frame (named after the run
and its pipeline, with the DAG's state), and nested DAGs (sub-pipelines, conditions, loops and their
iterations) are frames inside it. Artifacts are ellipses, executions boxes; CACHED executions are
dashed and grey with the source execution in their label (``cached from 3``, as KFP's UI marks
them), FAILED ones red, SKIPPED ones (a branch not taken) dotted. Tasks that have no execution at
all (NOT_RUN after a failure, SKIPPED after a branch not taken) are counted in a dotted box inside
their DAG's frame (see :func:`lineage.graph.tasks_not_run`). Paths are shortened to their last
components (``…/train/14/model``), cut at ``/`` only.

>>> from lineage.graph import example_graph
>>> print(to_dot(example_graph()).splitlines()[0])
digraph lineage {
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from importlib import resources
from typing import Any, Iterator

import networkx as nx
from markupsafe import Markup, escape

from mlmd_cache.errors import InvalidArgumentError, MlmdCacheError
from mlmd_cache.terminal import printable

from . import graph as lg
from .options import FORMATS

__all__ = ["FORMATS", "to_node_link", "to_graphml_graph", "to_dot", "to_html", "content", "write", "short_path",
           "check_not_empty", "GraphvizError", "NothingToExportError", "FONT_SIZE"]

# Points, as Graphviz measures (an SVG drawn at its own size shows 1 pt as 4/3 px): labels of 14 pt
# and edge labels of 12 pt (16 px) keep 8 px or more in a drawing of up to 1,600 px shown 800 px wide.
FONT_SIZE = 14


class GraphvizError(MlmdCacheError):
    """Graphviz's ``dot`` is missing or failed."""


class NothingToExportError(MlmdCacheError):
    """The selection holds nothing to draw or write."""


def check_not_empty(graph: nx.MultiDiGraph, subject: str) -> None:
    """Refuse a graph with no execution: an empty store or run, or an artifact that no execution
    read or wrote (``subject`` names it: ``the store``, ``run 'x'``, ``artifact #7``).

    >>> check_not_empty(nx.MultiDiGraph(), "the store")
    Traceback (most recent call last):
    ...
    lineage.export.NothingToExportError: nothing to export: the store has no executions
    """
    if not graph.number_of_nodes():
        raise NothingToExportError(f"nothing to export: {subject} has no executions")
    if not any(data.get("kind") == "execution" for _, data in graph.nodes(data=True)):
        artifacts = "it" if subject.startswith("artifact") else f"its {len(graph)} artifact{'s' * (len(graph) > 1)}"
        raise NothingToExportError(f"nothing to export: {subject} has no lineage (no execution read or wrote {artifacts})")


def _plain(value: Any) -> Any:
    """A value JSON can hold (protobuf structs already are)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))


def to_node_link(graph: nx.MultiDiGraph) -> dict[str, Any]:
    """networkx's node-link form (``networkx.node_link_graph(data, edges="edges")`` reads it back).

    >>> from lineage.graph import example_graph
    >>> data = to_node_link(example_graph())
    >>> len(data["nodes"]), len(data["edges"]), data["directed"], data["multigraph"]
    (7, 7, True, True)
    """
    data = nx.node_link_data(graph, edges="edges")
    data["graph"] = {k: _plain(v) for k, v in data["graph"].items()}
    for node in data["nodes"]:
        for key, value in node.items():
            node[key] = _plain(value)
    return data


def to_graphml_graph(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy GraphML can hold: scalar attributes kept, ``properties`` as a JSON string, ``None`` dropped."""
    flat = nx.MultiDiGraph()
    for node, data in graph.nodes(data=True):
        attributes = {}
        for key, value in data.items():
            if value is None:
                continue
            attributes[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)
        flat.add_node(node, **attributes)
    for u, v, key, data in graph.edges(keys=True, data=True):
        flat.add_edge(u, v, key=key, **{k: v2 for k, v2 in data.items() if v2 is not None})
    return flat


def short_path(uri: str, width: int = 32) -> str:
    """``uri`` as its last three path components or fewer, to fit ``width`` characters, after
    ``…/``; cut at ``/`` only (a last component longer than ``width`` is kept whole).

    >>> short_path("/tmp/tour/pipeline-root/lr-0.02/train/14/model")
    '…/train/14/model'
    >>> short_path("gs://bucket/root/run/make-data/2/a-rather-long-output-name")
    '…/2/a-rather-long-output-name'
    >>> short_path("s3://b/x"), short_path("/data/" + "n" * 36)
    ('s3://b/x', '…/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn')
    """
    if len(uri) <= width:
        return uri
    parts = uri.rstrip("/").split("/")
    for keep in (3, 2, 1):
        tail = "…/" + "/".join(parts[-keep:])
        if len(parts) > keep and (len(tail) <= width or keep == 1):
            return tail
    return uri


def _quote(text: Any) -> str:
    """A DOT string. ``&`` is written ``&amp;``: Graphviz reads entities in every string (``&lt;``
    would be drawn ``<``, and an unknown ``&name;`` reaches the SVG undeclared), so text stays the
    text it is. Control characters are drawn escaped as the terminal shows them (``\\x1b``, ``\\r``;
    :func:`mlmd_cache.terminal.printable`): Graphviz would copy them into the SVG, which XML cannot
    hold. A newline starts a new line of the label."""
    text = "\n".join(printable(line) for line in str(text).split("\n"))
    return '"' + text.replace("&", "&amp;").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _quote_left(text: str) -> str:
    """A label whose lines are left-justified (Graphviz's ``\\l`` ends each)."""
    return '"' + "".join(_quote(line)[1:-1] + "\\l" for line in text.split("\n")) + '"'


def _attributes(**attributes: Any) -> str:
    return "[" + ", ".join(f"{k}={_quote(v)}" for k, v in attributes.items() if v is not None) + "]"


def _task_state(data: dict[str, Any]) -> str:
    state = lg.cache_state(data)
    return "SKIPPED" if state == "CANCELED" else state  # a branch not taken, recorded CANCELED as KFP does


def _dag_state(data: dict[str, Any]) -> str:
    return {"EXECUTED": "complete", "SKIPPED": "skipped (condition false)"}.get(_task_state(data),
                                                                               _task_state(data).lower())


class _Frame:
    """A Graphviz cluster: a run (framed by its root DAG execution when loaded) or a nested DAG."""

    def __init__(self, key: str, label: str, style: dict[str, str], element_id: str) -> None:
        self.key, self.label, self.style, self.element_id = key, label, style, element_id
        self.frames: list[_Frame] = []
        self.nodes: list[str] = []


_FRAME_STYLES = {
    "failed": {"color": "#c5221f", "style": "rounded"},
    "skipped (condition false)": {"color": "#9aa0a6", "style": "rounded,dotted", "fontcolor": "#5f6368"},
}


def _dag_label(data: dict[str, Any]) -> str:
    properties = data.get("properties") or {}
    name = data.get("task_name") or data.get("name") or "DAG"
    if isinstance(properties.get("iteration_index"), int):
        name = f"iteration {properties['iteration_index']}"
    elif isinstance(properties.get("iteration_count"), int):
        name += f" (loop of {properties['iteration_count']})"
    return f"{name}: DAG execution {data['id']}, {_dag_state(data)}"


def _frames(graph: nx.MultiDiGraph) -> tuple[list[_Frame], list[str]]:
    """The frames to draw (runs, with nested DAGs; DAG executions are frames, never nodes) and the
    nodes outside every frame."""
    runs: dict[str, _Frame] = {}
    frame_of_dag: dict[str, _Frame] = {}
    pipelines = {d["run"]: d.get("pipeline") for _, d in graph.nodes(data=True) if d.get("run") and d.get("pipeline")}

    def run_frame(run: str) -> _Frame:
        if run not in runs:
            title = f"run {run}" + (f" · pipeline {pipelines[run]}" if pipelines.get(run) else "")
            runs[run] = _Frame(f"run:{run}", title, {"style": "rounded", "color": "#5f6368"}, f"run:{run}")
        return runs[run]

    dags = sorted(((n, d) for n, d in graph.nodes(data=True) if lg.is_dag(d)), key=lambda item: item[1]["id"])
    for node, data in dags:  # a root DAG becomes its run's frame
        if lg.parent_dag(data) is None and data.get("run") and data["run"] not in runs:
            frame = run_frame(data["run"])
            frame.label += f"\nDAG execution {data['id']}, {_dag_state(data)}"
            frame.style = {**frame.style, **_FRAME_STYLES.get(_dag_state(data), {})}
            frame.element_id = node
            frame_of_dag[node] = frame
    for node, data in dags:
        if node not in frame_of_dag:
            frame_of_dag[node] = _Frame(node, _dag_label(data), {"style": "rounded", "color": "#9aa0a6",
                                                                 **_FRAME_STYLES.get(_dag_state(data), {})}, node)
    top: list[_Frame] = []
    for node, data in dags:
        frame = frame_of_dag[node]
        if frame.key.startswith("run:"):
            continue
        parent = lg.parent_dag(data)
        if parent in frame_of_dag:
            frame_of_dag[parent].frames.append(frame)
        elif data.get("run"):
            run_frame(data["run"]).frames.append(frame)
        else:
            top.append(frame)
    loose: list[str] = []
    for node, data in sorted(graph.nodes(data=True), key=lambda item: (item[0][0], item[1].get("id", 0))):
        if lg.is_dag(data):
            continue
        if data.get("kind") == "artifact":
            makers = [p for p in graph.predecessors(node) if not lg.is_dag(graph.nodes[p])
                      and graph.nodes[p].get("state") != "CACHED"]
            owner = lg.parent_dag(graph.nodes[makers[0]]) if makers else None
            run = graph.nodes[makers[0]].get("run") if makers else data.get("run")
        else:
            owner, run = lg.parent_dag(data), data.get("run")
        if owner in frame_of_dag:
            frame_of_dag[owner].nodes.append(node)
        elif run:
            run_frame(run).nodes.append(node)
        else:
            loose.append(node)
    created: dict[str, int] = {}
    for _, data in graph.nodes(data=True):
        if data.get("kind") == "execution" and data.get("run") in runs:
            created[data["run"]] = min(created.get(data["run"], data.get("create_time") or 0), data.get("create_time") or 0)
    newest_first = sorted(runs, key=lambda run: (created.get(run, 0), run), reverse=True)
    return [runs[run] for run in newest_first] + top, loose


# The artifact types whose numbers are metrics, shown in their labels (KFP's ``log_metric`` writes
# each as a double custom property; :mod:`lineage.load` reads back the exact value it logged).
METRICS_TYPES = ("system.Metrics",)
_METRICS_SHOWN = 6


def metric_lines(data: dict[str, Any]) -> list[str]:
    """The metrics of a Metrics artifact as label lines, ``name = value`` by name (ten significant
    digits; the JSON and the HTML page's panel keep every digit), at most six and a count of the rest.

    >>> metric_lines({"type": "system.Metrics", "properties": {"mse": 0.09123456789012, "n": 5,
    ...               "display_name": "metrics", "ok": True}})
    ['mse = 0.09123456789', 'n = 5']
    """
    if data.get("type") not in METRICS_TYPES:
        return []
    numbers = sorted((name, value) for name, value in (data.get("properties") or {}).items()
                     if isinstance(value, (int, float)) and not isinstance(value, bool))
    lines = [f"{name} = {value:.10g}" for name, value in numbers[:_METRICS_SHOWN]]
    if len(numbers) > _METRICS_SHOWN:
        lines.append(f"(+{len(numbers) - _METRICS_SHOWN} more)")
    return lines


def _label_lines(data: dict[str, Any], in_frame: bool) -> list[str]:
    """The lines of a node's label."""
    if data.get("kind") == "artifact":
        lines = [f"#{data['id']} {data.get('name') or ''}".strip(), data.get("type", "")]
        if data.get("uri"):
            lines.append(short_path(data["uri"]))
        lines += metric_lines(data)
    else:
        lines = [data.get("task_name") or data.get("name") or data.get("type") or "execution",
                 f"execution {data['id']} · {_task_state(data)}"]
        if data.get("cached_execution_id") is not None:
            lines.append(f"cached from {data['cached_execution_id']}")
    if data.get("run") and not in_frame:
        lines.append(f"run {data['run']}")
    return lines


def _node_statement(node: str, data: dict[str, Any], in_frame: bool) -> str:
    lines = _label_lines(data, in_frame)
    if data.get("kind") == "artifact":
        return f"  {_quote(node)} " + _attributes(id=node, label="\n".join(lines), shape="ellipse", style="filled",
                                                   fillcolor="#e8f0fe", color="#1a73e8") + ";"
    state = _task_state(data)
    style: dict[str, str] = dict(shape="box", style="rounded,filled", fillcolor="#e6f4ea", color="#188038")
    if state == "CACHED":
        style.update(style="rounded,dashed,filled", fillcolor="#f1f3f4", color="#80868b", fontcolor="#3c4043")
    elif state == "FAILED":
        style.update(fillcolor="#fce8e6", color="#c5221f")
    elif state == "SKIPPED":
        style.update(style="rounded,dotted", fillcolor="white", color="#9aa0a6", fontcolor="#5f6368")
    elif state in ("RUNNING", "INTERRUPTED", "NEW"):
        style.update(fillcolor="#fef7e0", color="#e37400")
    return f"  {_quote(node)} " + _attributes(id=node, label="\n".join(lines), **style) + ";"


def _not_run_key(dag: str) -> str:
    return f"not-run:{dag}"


def _not_run_count(data: dict[str, Any], count: int) -> str:
    """``3 tasks`` of a DAG, ``1 iteration`` of a loop: what a DAG holds that has no execution."""
    loop = isinstance((data.get("properties") or {}).get("iteration_count"), int)
    return f"{count} {'iteration' if loop else 'task'}{'' if count == 1 else 's'}"


def _not_run_statement(dag: str, data: dict[str, Any], count: int) -> str:
    state = _task_state(data)
    why = {"FAILED": "not run (after a failure)", "RUNNING": "not started", "INTERRUPTED": "not started"}.get(
        state, "skipped")
    return f"  {_quote(_not_run_key(dag))} " + _attributes(
        id=_not_run_key(dag), label=f"{_not_run_count(data, count)} {why}\nno execution recorded", shape="box",
        style="rounded,dotted", color="#9aa0a6", fontcolor="#5f6368") + ";"


# The width of a row of runs, in points (4/3 px): a drawing of many runs is about 1,600 px wide,
# its text 10 px or more shown 1,200 px wide.
ROW_WIDTH = 1200


def _drawn_edges(graph: nx.MultiDiGraph) -> list[tuple[str, str, str]]:
    """The edges a drawing shows: between tasks and artifacts (a DAG is drawn as its frame: its
    events repeat those of its tasks)."""
    return [(u, v, key) for u, v, key in sorted(graph.edges(keys=True))
            if not lg.is_dag(graph.nodes[u]) and not lg.is_dag(graph.nodes[v])]


def _frame_nodes(frame: _Frame, not_run: dict[str, int]) -> list[str]:
    """Every node drawn in a frame and the frames inside it."""
    nodes = list(frame.nodes) + ([_not_run_key(frame.element_id)] if frame.element_id in not_run else [])
    for inner in frame.frames:
        nodes += _frame_nodes(inner, not_run)
    return nodes


def _layers(nodes: list[str], edges: list[tuple[str, str, str]]) -> list[list[str]]:
    """``nodes`` in layers as a top-to-bottom drawing places them (each after what leads to it)."""
    inside = nx.DiGraph()
    inside.add_nodes_from(nodes)
    inside.add_edges_from((u, v) for u, v, _ in edges if u in inside and v in inside)
    if not nx.is_directed_acyclic_graph(inside):
        return [nodes]
    return [sorted(layer) for layer in nx.topological_generations(inside)]


def _text_width(lines: list[str], size: float = FONT_SIZE) -> float:
    """About how wide Graphviz draws these lines of Helvetica, in points."""
    return 0.56 * size * max((len(line) for line in lines), default=0)


def _frame_width(frame: _Frame, graph: nx.MultiDiGraph, layers: list[list[str]]) -> float:
    """About how wide a frame is drawn, in points: its widest layer of its own nodes beside the
    frames inside it (which Graphviz sets side by side), or its label, with margins."""
    def node_width(node: str) -> float:
        if node not in graph:
            return 200.0  # a count of tasks not run
        shape = 1.45 if graph.nodes[node].get("kind") == "artifact" else 1.0  # an ellipse holds its text inside
        return shape * _text_width(_label_lines(graph.nodes[node], True)) + 20
    own = set(frame.nodes)
    widest = max((sum(node_width(n) + 18 for n in layer if n in own) for layer in layers), default=0.0)
    inner = sum(_frame_width(child, graph, layers) + 16 for child in frame.frames)
    return max(_text_width(frame.label.split("\n")), widest + inner) + 16


def _grid(runs: list[_Frame], graph: nx.MultiDiGraph, not_run: dict[str, int]) -> list[str]:
    """DOT statements that lay out run frames (newest first) in rows about :data:`ROW_WIDTH` points
    wide, left to right and then top to bottom, instead of one row of every run: each row's first
    nodes share a rank, in order, and an invisible point below each row holds the next one under it."""
    edges = _drawn_edges(graph)
    rows: list[list[tuple[list[str], list[str]]]] = [[]]
    used = 0.0
    for frame in runs:
        nodes = _frame_nodes(frame, not_run)
        if not nodes:
            continue
        layers = _layers(nodes, edges)
        width = _frame_width(frame, graph, layers)
        if rows[-1] and used + width > ROW_WIDTH:
            rows.append([])
            used = 0
        rows[-1].append((layers[0], layers[-1]))
        used += width
    statements: list[str] = []
    for index, row in enumerate(rows):
        if len(row) > 1:
            firsts = [tops[0] for tops, _ in row]
            statements.append("  {rank=same; " + " -> ".join(_quote(n) for n in firsts) + " [style=invis];}")
        if index + 1 < len(rows):
            anchor = _quote(f"row:{index + 1}")
            statements.append(f"  {anchor} [shape=point, style=invis, width=0, height=0, label=\"\"];")
            for _, bottoms in row:
                statements += [f"  {_quote(n)} -> {anchor} [style=invis, weight=0];" for n in bottoms]
            for tops, _ in rows[index + 1]:
                statements += [f"  {anchor} -> {_quote(n)} [style=invis, weight=0];" for n in tops]
    return statements


def to_dot(graph: nx.MultiDiGraph) -> str:
    """Graphviz DOT text: top to bottom, one frame per run and nested DAG, readable labels.

    >>> from lineage.graph import example_graph
    >>> text = to_dot(example_graph())
    >>> "rankdir=TB" in text, text.count("subgraph cluster_"), "cached from 2" in text
    (True, 2, True)
    """
    frames, loose = _frames(graph)
    not_run = lg.tasks_not_run(graph)
    lines = ["digraph lineage {", "  rankdir=TB; newrank=true; nodesep=0.25; ranksep=0.3;",
             f'  graph [fontname="Helvetica", fontsize={FONT_SIZE}];',
             f'  node [fontname="Helvetica", fontsize={FONT_SIZE}, margin="0.12,0.04"];',
             f'  edge [fontname="Helvetica", fontsize={FONT_SIZE - 2}, color="#5f6368", fontcolor="#3c4043", arrowsize=0.7];']
    counter = iter(range(1, 1 << 30))

    def emit(frame: _Frame, indent: str) -> Iterator[str]:
        yield f"{indent}subgraph cluster_{next(counter)} {{"
        yield f"{indent}  label={_quote_left(frame.label)}; " + " ".join(
            f"{k}={_quote(v)};" for k, v in {"id": frame.element_id, "labeljust": "l", **frame.style}.items())
        for node in frame.nodes:
            yield indent + _node_statement(node, graph.nodes[node], True)
        dag = frame.element_id
        if dag in not_run:
            yield indent + _not_run_statement(dag, graph.nodes[dag], not_run[dag])
        for inner in frame.frames:
            yield from emit(inner, indent + "  ")
        yield f"{indent}}}"

    for frame in frames:
        lines += emit(frame, "  ")
    lines += [_node_statement(node, graph.nodes[node], False) for node in loose]
    run_frames = [frame for frame in frames if frame.key.startswith("run:")]
    run_of = {node: frame.key for frame in run_frames for node in _frame_nodes(frame, not_run)}
    for u, v, key in _drawn_edges(graph):
        cached = graph.nodes[u].get("state") == "CACHED"
        parameter = graph.edges[u, v, key].get("event") == lg.PARAMETER
        lines.append(f"  {_quote(u)} -> {_quote(v)} " + _attributes(
            label=key or None, style="dashed" if cached else None,
            color="#9aa0a6" if cached else "#8430ce" if parameter else None,
            fontcolor="#8430ce" if parameter else None,
            # an edge to another run (an artifact it reused) leaves the layout of the runs alone
            constraint="false" if run_of.get(u) != run_of.get(v) else None) + ";")
    lines += _grid(run_frames, graph, not_run)
    for dag in not_run:  # the tasks that failed or were skipped lead to those that did not run
        ends = [n for n in graph.nodes if lg.parent_dag(graph.nodes[n]) == dag
                and _task_state(graph.nodes[n]) in ("FAILED", "SKIPPED") and not lg.is_dag(graph.nodes[n])]
        for end in sorted(ends):
            lines.append(f"  {_quote(end)} -> {_quote(_not_run_key(dag))} [style=dotted, color=\"#9aa0a6\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """``dot_text`` drawn by Graphviz as ``svg`` or ``png``."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizError("Graphviz's 'dot' command is not installed (Debian/Ubuntu: apt-get install graphviz)")
    done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=300)
    if done.returncode != 0:
        raise GraphvizError(f"dot -T{fmt} failed: {done.stderr.decode('utf-8', 'replace').strip()}")
    return done.stdout


# What a Graphviz drawing is made of (its SVG output for our DOT, whatever the labels say): any other
# element (a link, a script, foreignObject) or attribute (an event handler, href, style) is dropped.
_SVG = "{http://www.w3.org/2000/svg}"
_SVG_ELEMENTS = frozenset({"svg", "g", "title", "text", "tspan", "path", "polygon", "polyline", "ellipse", "circle",
                           "line", "rect"})
_SVG_ATTRIBUTES = frozenset({
    "id", "class", "viewBox", "transform", "fill", "fill-opacity", "stroke", "stroke-width", "stroke-dasharray",
    "stroke-opacity", "opacity", "d", "points", "cx", "cy", "rx", "ry", "r", "x", "y", "x1", "y1", "x2", "y2",
    "text-anchor", "font-family", "font-size", "font-weight", "font-style", "text-decoration"})


def _safe_svg(svg: bytes) -> Markup:
    """Graphviz's SVG as markup to put in the page: parsed as XML and written again from the elements
    and attributes a drawing has (:data:`_SVG_ELEMENTS`, :data:`_SVG_ATTRIBUTES`), every text and
    attribute value escaped; the root has the page's ``id`` instead of a fixed size. User strings
    are labels and ``id`` values in it: text, never markup, handlers or ``javascript:`` links."""
    try:
        root = ElementTree.fromstring(svg)  # expat: the DOCTYPE's external DTD is never fetched
    except ElementTree.ParseError as error:
        raise GraphvizError(f"dot -Tsvg wrote an SVG that cannot be read ({error})") from None
    out: list[str] = []

    def write(element: ElementTree.Element, top: bool) -> None:
        tag = element.tag[len(_SVG):] if element.tag.startswith(_SVG) else None
        if tag not in _SVG_ELEMENTS or (tag == "svg") != top:
            return  # dropped with what it holds (its tail, text between siblings, is kept by the caller)
        attributes = {k: v for k, v in element.attrib.items() if k in _SVG_ATTRIBUTES}
        if top:
            attributes = {"id": "lineage-svg", "viewBox": attributes.get("viewBox", "0 0 0 0"),
                          "xmlns": "http://www.w3.org/2000/svg"}
        out.append(f"<{tag}" + "".join(f' {k}="{escape(v)}"' for k, v in attributes.items()) + ">")
        out.append(str(escape(element.text or "")))
        for child in element:
            write(child, False)
            out.append(str(escape(child.tail or "")))
        out.append(f"</{tag}>")

    write(root, True)
    return Markup("".join(out))


def _csp_hash(text: str) -> str:
    """A Content-Security-Policy source that allows exactly this inline script or style."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


@functools.lru_cache(maxsize=1)
def _page_template() -> Any:
    """lineage/export.html, compiled once. Jinja2 with autoescaping: every value put in the page is
    escaped for where it goes (the title as HTML text, the data by ``tojson`` for its
    ``<script type="application/json">`` element), in one pass, so no value is read again as part
    of the page or of the template."""
    from jinja2 import Environment, StrictUndefined

    environment = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters["csp_hash"] = _csp_hash
    return environment.from_string(resources.files("lineage").joinpath("export.html").read_text(encoding="utf-8"))


def _run_summaries(graph: nx.MultiDiGraph) -> list[dict[str, Any]]:
    """The runs of ``graph``, newest first, as the page's panel lists them before a node is chosen:
    ``{"run", "pipeline", "frame", "created", "state", "executed", "cached", "failed"}``
    (``frame``: the element of the run's frame; ``state`` of its root DAG, None without one)."""
    frames, _ = _frames(graph)
    summaries = []
    for frame in frames:
        if not frame.key.startswith("run:"):
            continue
        run = frame.key[len("run:"):]
        tasks = [d for _, d in graph.nodes(data=True)
                 if d.get("kind") == "execution" and d.get("run") == run and not lg.is_dag(d)]
        states = [lg.cache_state(d) for d in tasks]
        root = graph.nodes[frame.element_id] if frame.element_id in graph else {}
        summaries.append({
            "run": run, "pipeline": next((d.get("pipeline") for d in tasks if d.get("pipeline")), None),
            "frame": frame.element_id,
            "created": min((d.get("create_time") or 0 for d in tasks), default=root.get("create_time")),
            "state": _dag_state(root) if root else None,
            "executed": states.count("EXECUTED"), "cached": states.count("CACHED"), "failed": states.count("FAILED")})
    return summaries


def to_html(graph: nx.MultiDiGraph, title: str = "lineage") -> str:
    """One self-contained HTML page (nothing fetched when it opens): the SVG drawing of
    :func:`to_dot`, panned and zoomed, each node's properties shown on a click, and a search box.

    The page is the template lineage/export.html filled in one pass (:func:`_page_template`); its
    Content-Security-Policy runs only the page's own script and style (by their hashes) and no
    inline handler, and the drawing is rebuilt from what a drawing holds (:func:`_safe_svg`)."""
    svg = _safe_svg(render(to_dot(graph), "svg"))
    data = {
        "nodes": {node: {("mlmd_id" if k == "id" else k): _plain(v) for k, v in attributes.items()}
                  for node, attributes in graph.nodes(data=True)},
        "edges": [[u, v, key, graph.edges[u, v, key].get("event")] for u, v, key in sorted(graph.edges(keys=True))],
        "runs": _run_summaries(graph),
        "not_run": {_not_run_key(dag): {"dag": dag, "tasks": _not_run_count(graph.nodes[dag], count)}
                    for dag, count in lg.tasks_not_run(graph).items()},
    }
    return _page_template().render(title=title, svg=svg, data=data, font_size=FONT_SIZE)


def content(graph: nx.MultiDiGraph, fmt: str, title: str = "lineage") -> bytes:
    """``graph`` in ``fmt`` (one of :data:`FORMATS`), as the bytes of a file."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    if fmt == "json":
        return (json.dumps(to_node_link(graph), indent=1, sort_keys=True) + "\n").encode("utf-8")
    if fmt == "graphml":
        return "\n".join(nx.generate_graphml(to_graphml_graph(graph))).encode("utf-8") + b"\n"
    if fmt == "dot":
        return to_dot(graph).encode("utf-8")
    if fmt == "html":
        return to_html(graph, title).encode("utf-8")
    return render(to_dot(graph), fmt)


def write(graph: nx.MultiDiGraph, fmt: str, path: str, title: str = "lineage") -> None:
    """Write ``graph`` to ``path`` in ``fmt`` (one of :data:`FORMATS`); nothing is written when the
    graph cannot be drawn, and a file that cannot be written is an :class:`InvalidArgumentError`."""
    data = content(graph, fmt, title)
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        raise InvalidArgumentError(f"cannot write {path!r}: {error.strerror or error}") from None
