"""A lineage graph written as networkx node-link JSON, GraphML, Graphviz DOT, or drawn as SVG/PNG by
Graphviz's ``dot`` command (Debian package ``graphviz``).

In drawings artifacts are ellipses, executions boxes; CACHED executions are dashed and grey with the
source execution in their label (``cached from 3``), FAILED ones red.

>>> from lineage.graph import example_graph
>>> print(to_dot(example_graph()).splitlines()[0])
digraph lineage {
"""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from mlmd_cache.errors import InvalidArgumentError, MlmdCacheError

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["FORMATS", "to_node_link", "to_graphml_graph", "to_dot", "write", "GraphvizError"]

FORMATS = ("json", "graphml", "dot", "svg", "png")


class GraphvizError(MlmdCacheError):
    """Graphviz's ``dot`` is missing or failed."""


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
    import networkx as nx  # here: mlmd-lineage imports this module for its --format choices

    data = nx.node_link_data(graph, edges="edges")
    data["graph"] = {k: _plain(v) for k, v in data["graph"].items()}
    for node in data["nodes"]:
        for key, value in node.items():
            node[key] = _plain(value)
    return data


def to_graphml_graph(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy GraphML can hold: scalar attributes kept, ``properties`` as a JSON string, ``None`` dropped."""
    import networkx as nx

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


def _quote(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _label(node: str, data: dict[str, Any]) -> str:
    if data.get("kind") == "artifact":
        lines = [f"#{data['id']} {data.get('name') or ''}".strip(), data.get("type", "")]
        if data.get("uri"):
            lines.append(_short(data["uri"]))
        if data.get("run"):
            lines.append(f"run {data['run']}")
        return "\n".join(lines)
    state = data.get("state", "")
    lines = [f"{data.get('task_name') or data.get('name') or ''} (execution {data['id']})",
             "EXECUTED" if state == "COMPLETE" else state]
    if data.get("type") == "system.DAGExecution":
        lines[1] = f"pipeline DAG, {state}"
    if data.get("cached_execution_id") is not None:
        lines[-1] += f", cached from {data['cached_execution_id']}"
    if data.get("run"):
        lines.append(f"run {data['run']}")
    return "\n".join(lines)


def to_dot(graph: nx.MultiDiGraph) -> str:
    """Graphviz DOT text, left to right, with readable labels."""
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for node, data in sorted(graph.nodes(data=True), key=lambda item: (item[0][0], item[1].get("id", 0))):
        attributes = {"label": _label(node, data)}
        if data.get("kind") == "artifact":
            attributes.update(shape="ellipse", style="filled", fillcolor="#e8f0fe")
        else:
            attributes.update(shape="box", style="rounded,filled", fillcolor="#e6f4ea")
            if data.get("state") == "CACHED":
                attributes.update(style="rounded,dashed,filled", fillcolor="#eeeeee", color="#777777",
                                  fontcolor="#444444")
            elif data.get("state") == "FAILED":
                attributes.update(fillcolor="#fce8e6", color="#c5221f")
            if data.get("type") == "system.DAGExecution":
                attributes.update(shape="component")
        lines.append(f"  {_quote(node)} [" + ", ".join(f"{k}={_quote(v)}" for k, v in attributes.items()) + "];")
    for u, v, key in sorted(graph.edges(keys=True)):
        style = ', style="dashed"' if graph.nodes[u].get("state") == "CACHED" else ""
        lines.append(f"  {_quote(u)} -> {_quote(v)} [label={_quote(key)}{style}];")
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


def write(graph: nx.MultiDiGraph, fmt: str, path: str) -> None:
    """Write ``graph`` to ``path`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
    if fmt == "json":
        content = (json.dumps(to_node_link(graph), indent=1, sort_keys=True) + "\n").encode("utf-8")
    elif fmt == "graphml":
        import networkx as nx

        content = "\n".join(nx.generate_graphml(to_graphml_graph(graph))).encode("utf-8") + b"\n"
    elif fmt == "dot":
        content = to_dot(graph).encode("utf-8")
    else:
        content = render(to_dot(graph), fmt)
    with open(path, "wb") as file:
        file.write(content)
