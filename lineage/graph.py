"""Pure functions over a lineage graph (:mod:`lineage.load` builds one from MLMD).

A lineage graph is a :class:`networkx.MultiDiGraph` whose nodes are ``"a:ID"`` (artifacts) and
``"e:ID"`` (executions), with edges execution → artifact (OUTPUT) and artifact → execution (INPUT).
The examples use a small one: A made dataset #1, B trained model #2 on it, C evaluated it into #3,
and a second run reused B (a CACHED execution, 5, pointing at its source, 2):

>>> g = example_graph()
>>> sorted(g)
['a:1', 'a:2', 'a:3', 'e:1', 'e:2', 'e:3', 'e:5']
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable, Optional

import networkx as nx

from mlmd_cache.store import records
from mlmd_cache.errors import NotFoundError
from mlmd_cache.cache.recovery import RUNNER, runner_gone

__all__ = [
    "example_graph",
    "upstream",
    "downstream",
    "path",
    "all_paths",
    "run_executions",
    "task_path",
    "cache_source",
    "cache_provenance",
    "producer",
    "consumers",
    "tree",
    "cache_state",
    "run_summaries",
    "nodes_of",
    "tasks_not_run",
    "is_dag",
    "parent_dag",
    "parameter_flow",
    "with_parameter_flow",
    "WHOLE_RUNS",
    "PARAMETER",
]

# A graph attribute set by the loaders that read every execution of the graph's runs
# (``load_run``, ``load_store``): only then do a DAG's loaded tasks tell which of its tasks never ran.
WHOLE_RUNS = "whole_runs"
# The ``event`` of an edge that :func:`with_parameter_flow` adds: a parameter passed from one task to
# another (MLMD records no event for it).
PARAMETER = "PARAMETER"


def example_graph() -> nx.MultiDiGraph:
    """The small lineage graph of the examples (see the module's docstring)."""
    g = nx.MultiDiGraph()
    for i, (task, state, run) in {1: ("A", "COMPLETE", "r1"), 2: ("B", "COMPLETE", "r1"),
                                  3: ("C", "COMPLETE", "r1"), 5: ("B", "CACHED", "r2")}.items():
        g.add_node(f"e:{i}", kind="execution", id=i, type="system.ContainerExecution", task_name=task, name=task,
                   state=state, run=run, pipeline="p", create_time=i, properties={"cache_fingerprint": task})
    g.nodes["e:5"]["cached_execution_id"] = 2
    for i in (1, 2, 3):
        g.add_node(f"a:{i}", kind="artifact", id=i, type="system.Artifact", name=f"art{i}", state="LIVE", run="r1")
    g.add_edges_from([("e:1", "a:1", "data"), ("a:1", "e:2", "data"), ("e:2", "a:2", "model"),
                      ("a:2", "e:3", "model"), ("e:3", "a:3", "metrics"),
                      ("a:1", "e:5", "data"), ("e:5", "a:2", "model")])
    return g


def _require(graph: nx.MultiDiGraph, node: str) -> None:
    if node not in graph:
        kind = "artifact" if node.startswith("a:") else "execution" if node.startswith("e:") else "node"
        raise NotFoundError(f"no {kind} {node[2:] if kind != 'node' else node!r} in the lineage graph")


def _is_cached(graph: nx.MultiDiGraph, node: str) -> bool:
    data = graph.nodes[node]
    return data.get("kind") == "execution" and data.get("state") == "CACHED"


def _closure(graph: nx.MultiDiGraph, node: str, depth: Optional[int], forward: bool, cached: bool) -> set[str]:
    _require(graph, node)
    neighbours = graph.successors if forward else graph.predecessors
    seen, frontier, level = {node}, [node], 0
    while frontier and (depth is None or level < depth):
        level += 1
        following = []
        for current in frontier:
            for other in neighbours(current):
                if other not in seen and (cached or not _is_cached(graph, other)):
                    seen.add(other)
                    following.append(other)
        frontier = following
    seen.discard(node)
    return seen


def upstream(graph: nx.MultiDiGraph, node: str, depth: Optional[int] = None, *, cached: bool = True) -> set[str]:
    """Every node ``node`` depends on, within ``depth`` edges (``None``: no limit).

    A CACHED execution has OUTPUT edges to the artifacts it reused, as KFP records it, so it
    stands beside their producer; ``cached=False`` leaves CACHED executions out (and what lies
    behind them only), which keeps what made the artifact.

    >>> g = example_graph()
    >>> sorted(upstream(g, "a:3"))
    ['a:1', 'a:2', 'e:1', 'e:2', 'e:3', 'e:5']
    >>> sorted(upstream(g, "a:3", depth=2))
    ['a:2', 'e:3']
    >>> sorted(upstream(g, "a:3", cached=False))
    ['a:1', 'a:2', 'e:1', 'e:2', 'e:3']
    """
    return _closure(graph, node, depth, forward=False, cached=cached)


def downstream(graph: nx.MultiDiGraph, node: str, depth: Optional[int] = None, *, cached: bool = True) -> set[str]:
    """Every node that depends on ``node``, within ``depth`` edges (``None``: no limit);
    ``cached=False`` leaves CACHED executions out, as in :func:`upstream`.

    >>> g = example_graph()
    >>> sorted(downstream(g, "a:1"))
    ['a:2', 'a:3', 'e:2', 'e:3', 'e:5']
    >>> sorted(downstream(g, "a:1", depth=1))
    ['e:2', 'e:5']
    >>> sorted(downstream(g, "a:1", depth=1, cached=False))
    ['e:2']
    """
    return _closure(graph, node, depth, forward=True, cached=cached)


def path(graph: nx.MultiDiGraph, source: str, target: str) -> Optional[list[str]]:
    """A shortest directed path from ``source`` to ``target``, or None.

    >>> g = example_graph()
    >>> path(g, "a:1", "a:3")
    ['a:1', 'e:2', 'a:2', 'e:3', 'a:3']
    >>> path(g, "a:3", "a:1") is None
    True
    """
    _require(graph, source)
    _require(graph, target)
    try:
        return nx.shortest_path(graph, source, target)
    except nx.NetworkXNoPath:
        return None


def all_paths(graph: nx.MultiDiGraph, source: str, target: str, cutoff: Optional[int] = None) -> list[list[str]]:
    """Every simple directed path from ``source`` to ``target`` (at most ``cutoff`` edges), shortest first.

    >>> g = example_graph()
    >>> all_paths(g, "a:1", "a:2")
    [['a:1', 'e:2', 'a:2'], ['a:1', 'e:5', 'a:2']]
    """
    _require(graph, source)
    _require(graph, target)
    found = {tuple(p) for p in nx.all_simple_paths(graph, source, target, cutoff=cutoff)}
    return sorted((list(p) for p in found), key=lambda p: (len(p), p))


def cache_state(data: dict[str, Any]) -> str:
    """How a task execution went, in the runner's words: EXECUTED, CACHED, FAILED, RUNNING, ...;
    INTERRUPTED for a RUNNING one whose runner is gone (killed: nothing will end it, see
    :mod:`mlmd_cache.cache.recovery` and ``mlmd-cache recover``).

    >>> g = example_graph()
    >>> cache_state(g.nodes["e:5"]), cache_state(g.nodes["e:2"])
    ('CACHED', 'EXECUTED')
    """
    state = data.get("state", "UNKNOWN")
    if state == "RUNNING" and runner_gone((data.get("properties") or {}).get(RUNNER)):
        return "INTERRUPTED"
    return "EXECUTED" if state == "COMPLETE" else state


def is_dag(data: dict[str, Any]) -> bool:
    """Whether a node is a DAG execution (a run's root, a nested pipeline, a condition, a loop or an
    iteration), which runs nothing itself."""
    return data.get("type") == records.DAG_EXECUTION_TYPE


def parent_dag(data: dict[str, Any]) -> Optional[str]:
    """The node of the DAG execution that holds an execution (its ``parent_dag_id``); None for a
    run's root DAG, an artifact, or a record without one.

    >>> parent_dag({"properties": {"parent_dag_id": 9}}), parent_dag({"properties": {}})
    ('e:9', None)
    """
    parent = (data.get("properties") or {}).get(records.PARENT_DAG_ID)
    return f"e:{parent}" if isinstance(parent, int) else None


def task_path(graph: nx.MultiDiGraph, node: str) -> str:
    """An execution's task path in its run, as ``run-pipeline`` reports it: the ``task_name`` of each
    enclosing DAG in the graph (by ``parent_dag_id``) but the run's root, a loop iteration as its
    index (KFP names an iteration's DAG as its loop). A parent not in the graph ends the path.

    >>> g = nx.MultiDiGraph()
    >>> g.add_node("e:1", kind="execution", task_name="", properties={})
    >>> g.add_node("e:2", kind="execution", task_name="for-loop-2", properties={"parent_dag_id": 1})
    >>> g.add_node("e:3", kind="execution", task_name="for-loop-2",
    ...            properties={"parent_dag_id": 2, "iteration_index": 0})
    >>> g.add_node("e:4", kind="execution", task_name="fit", properties={"parent_dag_id": 3})
    >>> task_path(g, "e:4"), task_path(g, "e:3"), task_path(g, "e:1")
    ('for-loop-2/0/fit', 'for-loop-2/0', '')
    """
    parts: list[str] = []
    seen: set[str] = set()
    current: Optional[str] = node
    while current is not None and current in graph and current not in seen:
        seen.add(current)
        data = graph.nodes[current]
        properties = data.get("properties") or {}
        if properties.get("iteration_index") is not None:
            parts.append(str(int(properties["iteration_index"])))
        elif data.get("task_name"):
            parts.append(str(data["task_name"]))
        parent = properties.get("parent_dag_id")
        current = f"e:{int(parent)}" if parent else None
    return "/".join(reversed(parts))


def run_executions(graph: nx.MultiDiGraph, run: str, *, include_dags: bool = False) -> list[dict[str, Any]]:
    """The executions of ``run`` in ID order, each as ``{"node", "id", "task", "state", "cached_from"}``
    (``task`` as :func:`task_path`; ``state`` as :func:`cache_state`; ``cached_from`` the source
    execution ID of a CACHED one).
    DAG executions (``system.DAGExecution``) are left out unless ``include_dags``.

    >>> g = example_graph()
    >>> [(e["task"], e["state"], e["cached_from"]) for e in run_executions(g, "r2")]
    [('B', 'CACHED', 2)]
    """
    result = []
    for node, data in graph.nodes(data=True):
        if data.get("kind") != "execution" or data.get("run") != run:
            continue
        if not include_dags and is_dag(data):
            continue
        result.append({"node": node, "id": data["id"], "task": task_path(graph, node),
                       "state": cache_state(data), "cached_from": data.get("cached_execution_id")})
    return sorted(result, key=lambda e: e["id"])


def cache_source(graph: nx.MultiDiGraph, node: str) -> Optional[str]:
    """The node of the execution whose outputs a CACHED execution reused (it may lie outside a
    partially loaded graph), or None for an execution that was not cached.

    >>> g = example_graph()
    >>> cache_source(g, "e:5"), cache_source(g, "e:2")
    ('e:2', None)
    """
    _require(graph, node)
    source = graph.nodes[node].get("cached_execution_id")
    return f"e:{source}" if source is not None else None


def cache_provenance(graph: nx.MultiDiGraph, node: str) -> list[str]:
    """``node`` and the chain of cache sources behind it, ending at the execution that really ran
    (KFP records the source itself, so the chain is usually two long).

    >>> g = example_graph()
    >>> cache_provenance(g, "e:5")
    ['e:5', 'e:2']
    """
    chain = [node]
    seen = {node}
    while True:
        source = cache_source(graph, chain[-1]) if chain[-1] in graph else None
        if source is None or source in seen:
            return chain
        chain.append(source)
        seen.add(source)


def producer(graph: nx.MultiDiGraph, artifact: str) -> Optional[str]:
    """The execution that made ``artifact``: the one OUTPUT edge from an execution that is not
    CACHED (CACHED executions point at the artifacts they reused) nor a DAG (a nested pipeline
    or loop points at the outputs of its tasks), else the earliest one.

    >>> g = example_graph()
    >>> producer(g, "a:2")
    'e:2'
    """
    _require(graph, artifact)
    writers = sorted(graph.predecessors(artifact),
                     key=lambda e: (is_dag(graph.nodes[e]),
                                    graph.nodes[e].get("state") == "CACHED", graph.nodes[e]["id"]))
    return writers[0] if writers else None


def consumers(graph: nx.MultiDiGraph, artifact: str) -> list[str]:
    """The executions that read ``artifact`` (INPUT edges), in ID order.

    >>> g = example_graph()
    >>> consumers(g, "a:1")
    ['e:2', 'e:5']
    """
    _require(graph, artifact)
    return sorted(graph.successors(artifact), key=lambda e: graph.nodes[e]["id"])


def tree(graph: nx.MultiDiGraph, root: str, *, direction: str = "upstream", depth: Optional[int] = None,
         cached: bool = True) -> dict[str, Any]:
    """``root`` and what lies upstream (or downstream) of it as a nested tree for display:
    ``{"node", "via", "children", "seen"}``; ``via`` is the edge's event path key, and a node met
    a second time is not expanded again (``seen`` is True). ``cached=False`` leaves CACHED
    executions out, as in :func:`upstream`.

    >>> g = example_graph()
    >>> t = tree(g, "a:2", direction="upstream")
    >>> [(c["node"], c["via"]) for c in t["children"]]
    [('e:2', 'model'), ('e:5', 'model')]
    >>> [(c["node"], c["seen"]) for c in t["children"][1]["children"]]
    [('a:1', True)]
    >>> [c["node"] for c in tree(g, "a:2", direction="upstream", cached=False)["children"]]
    ['e:2']
    """
    _require(graph, root)
    if direction not in ("upstream", "downstream"):
        raise ValueError(f"direction {direction!r}: expected upstream or downstream")
    expanded: set[str] = set()

    def build(node: str, via: Optional[str], level: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"node": node, "via": via, "children": [], "seen": node in expanded}
        if entry["seen"]:
            return entry
        expanded.add(node)
        if depth is not None and level >= depth:
            return entry
        if direction == "upstream":
            edges = sorted(((u, k) for u, _, k in graph.in_edges(node, keys=True)), key=lambda e: (graph.nodes[e[0]]["id"], e[1]))
        else:
            edges = sorted(((v, k) for _, v, k in graph.out_edges(node, keys=True)), key=lambda e: (graph.nodes[e[0]]["id"], e[1]))
        for other, key in edges:
            if cached or not _is_cached(graph, other):
                entry["children"].append(build(other, key, level + 1))
        return entry

    return build(root, None, 0)


def nodes_of(graph: nx.MultiDiGraph, nodes: Iterable[str]) -> list[dict[str, Any]]:
    """The attributes of ``nodes`` with their keys, executions first, then by ID."""
    return sorted(({"node": n, **graph.nodes[n]} for n in nodes), key=lambda d: (d["kind"] != "execution", d["id"]))


def run_summaries(graph: nx.MultiDiGraph) -> list[dict[str, Any]]:
    """One entry per run of ``graph.graph["runs"]`` (see :func:`lineage.load.load_runs`), newest
    first: ``{"run", "pipeline", "create_time", "state", "executed", "cached", "failed",
    "interrupted", "other"}``, counting task executions (DAG executions left out). ``state`` is the
    run's, from its root DAG execution: ``complete``, ``failed``, ``running``, ``interrupted`` (its
    runner was killed), or None when the run has no root DAG (KFP writes one; a bare
    :class:`~mlmd_cache.ExecutionCache` does not).

    >>> g = example_graph()
    >>> g.graph["runs"] = {"r1": {"pipeline": "p", "create_time": 1}, "r2": {"pipeline": "p", "create_time": 2}}
    >>> [(s["run"], s["executed"], s["cached"]) for s in run_summaries(g)]
    [('r2', 0, 1), ('r1', 3, 0)]
    """
    summaries = {name: {"run": name, "pipeline": info.get("pipeline"), "create_time": info.get("create_time"),
                        "state": None, "executed": 0, "cached": 0, "failed": 0, "interrupted": 0, "other": 0}
                 for name, info in graph.graph.get("runs", {}).items()}
    for _, data in graph.nodes(data=True):
        if data.get("kind") != "execution":
            continue
        summary = summaries.get(data.get("run"))
        if summary is None:
            continue
        if is_dag(data):
            if (data.get("properties") or {}).get(records.PARENT_DAG_ID) in (None, ""):  # the run's root DAG
                summary["state"] = {"EXECUTED": "complete"}.get(cache_state(data), cache_state(data).lower())
            continue
        word = {"EXECUTED": "executed", "CACHED": "cached", "FAILED": "failed",
                "INTERRUPTED": "interrupted"}.get(cache_state(data), "other")
        summary[word] += 1
    return sorted(summaries.values(), key=lambda s: (s["create_time"] or 0, s["run"]), reverse=True)


def tasks_not_run(graph: nx.MultiDiGraph) -> dict[str, int]:
    """How many tasks of each DAG execution have no execution, by the DAG's node: the tasks a
    failure left NOT_RUN, or SKIPPED after a branch not taken (the runner, as KFP, records neither).
    The store keeps no pipeline spec, so their names are unknown; their number is the DAG's
    ``total_dag_tasks`` (a loop's ``iteration_count``) less its children's executions
    (``parent_dag_id``). Empty unless the graph
    holds whole runs (:data:`WHOLE_RUNS`), where a missing execution may merely not be loaded.

    >>> g = example_graph()
    >>> g.add_node("e:9", kind="execution", id=9, type="system.DAGExecution", state="FAILED", run="r1",
    ...            properties={"total_dag_tasks": 4})
    >>> for task in ("e:1", "e:2", "e:3"):
    ...     g.nodes[task]["properties"]["parent_dag_id"] = 9
    >>> tasks_not_run(g), tasks_not_run(nx.MultiDiGraph(g, whole_runs=True))
    ({}, {'e:9': 1})
    """
    if not graph.graph.get(WHOLE_RUNS):
        return {}
    held = Counter(parent_dag(data) for _, data in graph.nodes(data=True) if data.get("kind") == "execution")
    missing = {}
    for node, data in graph.nodes(data=True):
        properties = data.get("properties") or {}
        # a loop's children are its iterations; an iteration's (and any other DAG's) are its tasks
        total = properties.get("iteration_count", properties.get("total_dag_tasks"))
        if is_dag(data) and isinstance(total, int) and total > held[node]:
            missing[node] = total - held[node]
    return missing


def _meaningful(value: Any) -> bool:
    """Whether a parameter value is specific enough to tell where it came from: not null, not a
    boolean, not an empty string, list or struct (such values are as often constants of the
    pipeline as another task's output)."""
    return value is not None and not isinstance(value, bool) and value not in ("", [], {})


def _value_key(value: Any) -> str:
    """One text for equal JSON values (MLMD keeps every number as a double: ``9`` and ``9.0`` are one)."""
    def normal(item: Any) -> Any:
        if isinstance(item, bool) or item is None or isinstance(item, str):
            return item
        if isinstance(item, (int, float)):
            return float(item)
        if isinstance(item, dict):
            return {k: normal(v) for k, v in item.items()}
        if isinstance(item, list):
            return [normal(v) for v in item]
        return str(item)
    return json.dumps(normal(value), sort_keys=True)


def _dag_chain(graph: nx.MultiDiGraph, node: str) -> list[str]:
    """The DAG executions that hold ``node``, innermost first."""
    chain: list[str] = []
    parent = parent_dag(graph.nodes[node])
    while parent is not None and parent in graph and parent not in chain:
        chain.append(parent)
        parent = parent_dag(graph.nodes[parent])
    return chain


def _can_see(graph: nx.MultiDiGraph, producer_chain: list[str], consumer_chain: list[str]) -> bool:
    """Whether a task could read the output of a task held by ``producer_chain``: their DAGs meet,
    and the producer is not inside a loop iteration the consumer is not in (an iteration's outputs
    reach the rest of the run only gathered into a list)."""
    common = set(consumer_chain)
    for dag in producer_chain:
        if dag in common:
            return True
        if isinstance((graph.nodes[dag].get("properties") or {}).get("iteration_index"), int):
            return False
    return not producer_chain and not consumer_chain


def parameter_flow(graph: nx.MultiDiGraph) -> list[dict[str, Any]]:
    """The parameters passed from task to task, inferred from the values that executions record:
    ``{"producer", "consumer", "input", "output"}`` (nodes and parameter names), in the consumer's
    ID order. MLMD records a task's input and output parameters as values (the ``inputs`` and
    ``outputs`` structs KFP writes), not where an input came from, and the store keeps no pipeline
    spec; so the rule is conservative:

    - an input comes from an output of an earlier task (a smaller ID) of the same run with an equal
      value, in a scope the consumer sees (the same DAG or one around it, or a nested pipeline or
      condition within those; never another loop iteration);
    - null, booleans and empty values are never matched (they are as often constants);
    - when several tasks hold the value, one that itself received it from the others is taken
      (a value passed along a chain comes from its last link); if several remain, or the run's own
      parameters (its root DAG's ``inputs``) hold it too, nothing is drawn.

    Only graphs of whole runs (:data:`WHOLE_RUNS`) are read: a partial one would hide the other
    holders of a value.

    >>> g = example_graph()
    >>> for node, outputs in (("e:1", {"Output": 9.0}), ("e:2", {"Output": 81.0})):
    ...     g.nodes[node]["properties"]["outputs"] = outputs
    >>> g.nodes["e:2"]["properties"]["inputs"] = {"x": 9.0}
    >>> g.nodes["e:3"]["properties"]["inputs"] = {"a": 9.0, "b": 81.0, "verbose": True}
    >>> g.graph[WHOLE_RUNS] = True
    >>> [(f["producer"], f["consumer"], f["input"]) for f in parameter_flow(g)]
    [('e:1', 'e:2', 'x'), ('e:1', 'e:3', 'a'), ('e:2', 'e:3', 'b')]
    """
    if not graph.graph.get(WHOLE_RUNS):
        return []
    runs: dict[str, list[str]] = {}
    roots: dict[str, str] = {}
    for node, data in graph.nodes(data=True):
        if data.get("kind") != "execution" or not data.get("run"):
            continue
        if is_dag(data):
            if parent_dag(data) is None:
                roots.setdefault(data["run"], node)
        else:
            runs.setdefault(data["run"], []).append(node)
    flow: list[dict[str, Any]] = []
    for run, tasks in runs.items():
        tasks.sort(key=lambda n: graph.nodes[n]["id"])
        chains = {task: _dag_chain(graph, task) for task in tasks}
        root_inputs = (graph.nodes[roots[run]].get("properties") or {}).get("inputs") if run in roots else None
        pipeline_values = {_value_key(v) for v in (root_inputs or {}).values() if _meaningful(v)} \
            if isinstance(root_inputs, dict) else set()
        # value -> [(task, output name)], for the tasks seen so far
        holders: dict[str, list[tuple[str, str]]] = {}
        # (task, value) -> the tasks it received the value from, directly or along a chain
        received: dict[tuple[str, str], set[str]] = {}
        for task in tasks:
            properties = graph.nodes[task].get("properties") or {}
            inputs = properties.get("inputs")
            for name, value in sorted(inputs.items()) if isinstance(inputs, dict) else ():
                if not _meaningful(value):
                    continue
                key = _value_key(value)
                candidates = {holder for holder, _ in holders.get(key, ())
                              if _can_see(graph, chains[holder], chains[task])}
                passed_on = set().union(*(received.get((c, key), set()) for c in candidates)) if candidates else set()
                latest = candidates - passed_on
                if len(latest) != 1 or key in pipeline_values:
                    continue
                [producer] = latest
                outputs = [n for h, n in holders[key] if h == producer]
                received[(task, key)] = {producer} | received.get((producer, key), set())
                flow.append({"producer": producer, "consumer": task, "input": name, "output": outputs[0]})
            outputs = properties.get("outputs")
            for name, value in sorted(outputs.items()) if isinstance(outputs, dict) else ():
                if _meaningful(value):
                    holders.setdefault(_value_key(value), []).append((task, name))
    return sorted(flow, key=lambda f: (graph.nodes[f["consumer"]]["id"], f["input"]))


def with_parameter_flow(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy of ``graph`` with an edge producer → consumer for each parameter of
    :func:`parameter_flow`, keyed by the consumer's input name, ``event`` :data:`PARAMETER` and
    ``output`` the producer's output name.

    >>> g = example_graph()
    >>> g.nodes["e:1"]["properties"]["outputs"] = {"Output": "s3://b/x"}
    >>> g.nodes["e:3"]["properties"]["inputs"] = {"source": "s3://b/x"}
    >>> flowing = with_parameter_flow(nx.MultiDiGraph(g, whole_runs=True))
    >>> flowing.number_of_edges() - g.number_of_edges(), flowing.get_edge_data("e:1", "e:3")
    (1, {'source': {'event': 'PARAMETER', 'name': 'source', 'output': 'Output'}})
    """
    flowing = graph.copy()
    for found in parameter_flow(graph):
        flowing.add_edge(found["producer"], found["consumer"], key=found["input"], event=PARAMETER,
                         name=found["input"], output=found["output"])
    return flowing
