"""Why an execution was cached or executed: pure functions over a lineage graph (built by
:func:`lineage.load.load_explanation`).

A DAG execution (a run's root, a nested pipeline, a loop) runs nothing and has no cache key: it is
explained by what it holds. A CACHED execution is explained by its cache source. An executed one
is compared with the closest earlier execution of the same task in the same pipeline: the
components of their cache keys (the ``mlmd_cache_key`` property, compared with
:class:`mlmd_cache.key.CacheKey`) that differ are listed: image, command and arguments, parameters,
input artifacts (with the execution that produced the new artifact), output spec, custom key. Records without ``mlmd_cache_key`` (written by KFP itself) are
compared on what KFP records: ``image``, the ``inputs`` parameters and the INPUT events.

A FAILED execution that ``mlmd-cache run-pipeline`` ran names its last attempt's ``stderr.log``
(:data:`mlmd_cache.store.records.STDERR_LOG`): its path and last lines are part of the answer, the
one thing read from outside the graph (:func:`stderr_tail`), so that a failure is diagnosed later
without finding the run's task directory.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import networkx as nx

from mlmd_cache.cache import invalidation
from mlmd_cache.store import records
from mlmd_cache.errors import CacheKeyError
from mlmd_cache.terminal import printable
from mlmd_cache.key.cache_key import CacheKey

from . import graph as lg

__all__ = ["explain", "describe", "stderr_tail", "STDERR_TAIL_LINES"]

STDERR_TAIL_LINES = 10
_TAIL_BYTES = 64 * 1024  # a log's end is read, never the whole of a big one


def _key(data: dict[str, Any]) -> tuple[Optional[CacheKey], dict[str, Any]]:
    stored = (data.get("properties") or {}).get(records.CACHE_KEY)
    if not isinstance(stored, dict) or "cacheKey" not in stored:
        return None, {}
    try:
        return CacheKey.from_json(stored["cacheKey"]), stored
    except CacheKeyError:
        return None, stored


def _inputs_from_edges(g: nx.MultiDiGraph, node: str) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for artifact, _, key in g.in_edges(node, keys=True):
        result.setdefault(key, []).append(g.nodes[artifact]["id"])
    return {name: sorted(ids) for name, ids in result.items()}


def _execution_summary(g: nx.MultiDiGraph, node: str) -> dict[str, Any]:
    data = g.nodes[node] if node in g else {}
    return {"execution_id": int(node[2:]), "task": data.get("task_name") or data.get("name"),
            "run": data.get("run"), "state": lg.cache_state(data) if data else None}


def _artifact_change(g: nx.MultiDiGraph, name: str, before: list[int], after: list[int]) -> dict[str, Any]:
    change: dict[str, Any] = {"component": "input artifact", "name": name, "before": before, "after": after,
                              "producers": []}
    for artifact_id in after:
        if artifact_id in before:
            continue
        node = f"a:{artifact_id}"
        producer = lg.producer(g, node) if node in g else None
        change["producers"].append({"artifact_id": artifact_id, **(_execution_summary(g, producer) if producer
                                                                   else {"execution_id": None})})
    return change


def _differences(g: nx.MultiDiGraph, target: str, previous: str) -> tuple[list[dict[str, Any]], bool]:
    """The key components that differ, and whether full cache keys were compared."""
    new_key, new_stored = _key(g.nodes[target])
    old_key, old_stored = _key(g.nodes[previous])
    changes: list[dict[str, Any]] = []

    def differ(component: str, name: Optional[str], before: Any, after: Any) -> None:
        if before != after:
            changes.append({"component": component, "name": name, "before": before, "after": after})

    if new_key is not None and old_key is not None:
        differ("custom key", None, old_stored.get("customCacheKey"), new_stored.get("customCacheKey"))
        differ("image", None, old_key.image, new_key.image)
        differ("command/args", None, old_key.command_args, new_key.command_args)
        old_params, new_params = old_key.input_parameters, new_key.input_parameters
        old_inputs, new_inputs = old_key.input_artifact_ids, new_key.input_artifact_ids
        differ("output artifacts", None, old_key.output_artifact_types, new_key.output_artifact_types)
        differ("output parameters", None, old_key.output_parameter_types, new_key.output_parameter_types)
        differ("volumes", None, old_key.pvc_names, new_key.pvc_names)
        full = True
    else:  # records without mlmd_cache_key: what KFP itself records
        old_props, new_props = g.nodes[previous]["properties"], g.nodes[target]["properties"]
        differ("image", None, old_props.get(records.IMAGE), new_props.get(records.IMAGE))
        old_params, new_params = old_props.get(records.INPUTS) or {}, new_props.get(records.INPUTS) or {}
        old_inputs, new_inputs = _inputs_from_edges(g, previous), _inputs_from_edges(g, target)
        full = False
    for name in sorted(set(old_params) | set(new_params)):
        differ("parameter", name, old_params.get(name), new_params.get(name))
    for name in sorted(set(old_inputs) | set(new_inputs)):
        before, after = old_inputs.get(name, []), new_inputs.get(name, [])
        if before != after:
            changes.append(_artifact_change(g, name, before, after))
    return changes, full


def explain(g: nx.MultiDiGraph, execution: Optional[str] = None) -> dict[str, Any]:
    """Why ``execution`` (default: the graph's ``"target"``) was cached or executed, as a dict:

    - ``outcome``: ``cached``, ``caching disabled``, ``first run``, ``key changed``,
      ``source invalidated`` (an identical key ran before, but ``mlmd-cache invalidate`` had stopped
      its source: ``invalidation`` is the record, ``reason`` says it in words),
      ``source not usable`` (an identical key ran before but was no valid source), the state of
      a FAILED/RUNNING execution, ``dag`` (a DAG execution, which runs nothing itself: ``dag`` says
      where it is, ``root`` or in which parent, and lists the executions it holds, with ``counts``
      of their states) or ``importer`` (never cached);
    - ``artifact_id``: when the graph was loaded for an artifact (:func:`lineage.load.load_explanation`),
      the artifact that this execution made;
    - ``source`` (cached): the execution reused, its task and run; ``provenance``: the chain;
    - ``previous``: the closest earlier execution of the task; ``changes``: the key components that
      differ, each ``{"component", "name", "before", "after"}`` (input artifacts add ``producers``).

    >>> g = lg.example_graph()
    >>> explain(g, "e:5")["source"]
    {'execution_id': 2, 'task': 'B', 'run': 'r1', 'state': 'EXECUTED'}
    >>> explain(g, "e:1")["outcome"]
    'first run'
    """
    target = execution or g.graph["target"]
    data = g.nodes[target]
    task = data.get("task_name") or data.get("name")
    result: dict[str, Any] = {"execution": _execution_summary(g, target), "outcome": None, "source": None,
                              "provenance": None, "previous": None, "changes": [], "full_key_compared": None}
    asked = g.graph.get("artifact") if target == g.graph.get("target") else None
    if asked:  # the question was about an artifact: this execution made it
        result["artifact_id"] = int(asked[2:])
    if lg.is_dag(data):  # runs nothing itself: no cache lookup
        result["outcome"] = "dag"
        result["dag"] = _dag(g, target)
        return result
    if data.get("type") == records.IMPORTER_EXECUTION_TYPE:
        result["outcome"] = "importer"
        return result
    if data.get("state") == "CACHED":
        source = lg.cache_source(g, target)
        result["outcome"] = "cached"
        if source is not None:
            result["source"] = _execution_summary(g, source)
            result["provenance"] = [int(n[2:]) for n in lg.cache_provenance(g, target)]
        return result
    earlier = sorted((n for n, d in g.nodes(data=True)
                      if d.get("kind") == "execution" and d["id"] < data["id"]
                      and (d.get("task_name") or d.get("name")) == task and d.get("pipeline") == data.get("pipeline")
                      and d.get("type") == data.get("type")),
                     key=lambda n: g.nodes[n]["id"], reverse=True)
    caching_on = records.CACHE_FINGERPRINT in (data.get("properties") or {})
    if earlier:
        previous = earlier[0]
        result["previous"] = _execution_summary(g, previous)
        result["changes"], result["full_key_compared"] = _differences(g, previous=previous, target=target)
    if data.get("state") not in ("COMPLETE", "CACHED"):
        result["outcome"] = data.get("state", "UNKNOWN").lower()
        log = (data.get("properties") or {}).get(records.STDERR_LOG)
        if data.get("state") == "FAILED" and isinstance(log, str) and log:
            result["stderr_log"] = {"path": log, "last_lines": stderr_tail(log)}
    elif not caching_on:
        result["outcome"] = "caching disabled"
    elif not earlier:
        result["outcome"] = "first run"
    elif result["changes"]:
        result["outcome"] = "key changed"
    else:
        previous_data = g.nodes[earlier[0]]
        miss_reason = (data.get("properties") or {}).get(records.MISS_REASON)
        stopped = _invalidated_source(g, earlier[0], data.get("create_time") or 0)
        if stopped is not None and (not miss_reason or str(miss_reason).startswith("invalidated by invalidation")):
            source, record = stopped
            result["outcome"] = "source invalidated"
            result["invalidation"] = record
            result["reason"] = (f"its cache source, execution {g.nodes[source]['id']}, was "
                                f"{invalidation.describe(record, chosen=record.get('chosen', False))}")
        elif miss_reason:  # recorded by the lookup itself: staleness, invalidation, changed bytes, ...
            result["outcome"] = "source not usable"
            result["reason"] = miss_reason
        elif records.CACHE_FINGERPRINT not in (previous_data.get("properties") or {}):
            result["outcome"] = "source not usable"
            result["reason"] = "the earlier execution ran with caching disabled, so it was no cache source"
        elif previous_data.get("state") == "FAILED":
            result["outcome"] = "source not usable"
            result["reason"] = "the earlier execution failed"
        else:
            result["outcome"] = "source not usable"
            result["reason"] = "an identical key ran before, but its outputs were no longer usable (deleted or missing)"
    return result


def stderr_tail(path: str, lines: int = STDERR_TAIL_LINES) -> Optional[list[str]]:
    """The last ``lines`` lines of a log (undecodable bytes replaced, no line endings); None when it
    cannot be read (removed with its pipeline root, another machine's path)."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    found = text.splitlines()
    if size > _TAIL_BYTES and found:
        found = found[1:]  # the first line read may be cut
    return found[-lines:] if lines > 0 else []


def _dag(g: nx.MultiDiGraph, node: str) -> dict[str, Any]:
    """A DAG execution's place in its run and the executions it holds directly (see :func:`explain`)."""
    data = g.nodes[node]
    parent = lg.parent_dag(data)
    children = sorted((d for _, d in g.nodes(data=True) if d.get("kind") == "execution" and lg.parent_dag(d) == node),
                      key=lambda d: d["id"])
    # a DAG's own state stays MLMD's (COMPLETE, FAILED, ...): it executes nothing, nor is it cached
    tasks = [{"execution_id": d["id"], "task": d.get("task_name") or d.get("name"),
              "state": d.get("state") if lg.is_dag(d) else lg.cache_state(d),
              "cached_from": d.get("cached_execution_id"), "dag": lg.is_dag(d)}
             for d in children]
    counts: dict[str, int] = {}
    for entry in tasks:
        if not entry["dag"]:
            counts[entry["state"].lower()] = counts.get(entry["state"].lower(), 0) + 1
    parent_data = g.nodes.get(parent) if parent is not None else None
    return {"root": parent is None, "task": data.get("task_name") or None, "state": data.get("state"),
            "run": data.get("run"),
            "pipeline": data.get("pipeline"), "parent_dag_id": int(parent[2:]) if parent is not None else None,
            "parent_task": (parent_data.get("task_name") or None) if parent_data else None,
            "tasks": tasks, "counts": counts}


def _invalidated_source(g: nx.MultiDiGraph, previous: str, at: int) -> Optional[tuple[str, dict[str, Any]]]:
    """The cache source behind ``previous`` (itself, or the source a CACHED one reused) and the
    newest invalidation that stopped it at the moment ``at`` (ms), if one did."""
    source = lg.cache_source(g, previous) or previous
    if source not in g:
        return None
    records_in_force = [r for r in g.nodes[source].get("invalidations") or [] if invalidation.in_force_at(r, at)]
    if not records_in_force:
        return None
    return source, max(records_in_force, key=lambda r: r["id"])


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():  # protobuf numbers: an int parameter reads back 3.0
        return str(int(value))
    return json.dumps(value) if not isinstance(value, str) else value


def _ids(ids: list[int]) -> str:
    return ", ".join(f"#{i}" for i in ids) or "(none)"


def _describe_dag(e: dict[str, Any], dag: dict[str, Any]) -> list[str]:
    where = f"run {dag['run']} of pipeline {dag['pipeline']}"
    if dag["root"]:
        what = f"the root DAG execution of {where}"
    else:
        inside = f"DAG execution {dag['parent_dag_id']}" + (f" (task {dag['parent_task']})" if dag["parent_task"] else "")
        what = f"the DAG execution of task {dag['task']} in {where}, inside {inside}"
    lines = [f"execution {e['execution_id']}: {what}: {dag['state']}",
             "  a DAG execution runs nothing itself and has no cache key: each of its tasks was cached or executed"]
    tasks = dag["tasks"]
    if not tasks:
        return lines + ["  it holds no executions"]
    counts = ", ".join(f"{n} {state}" for state, n in sorted(dag["counts"].items()))
    lines.append(f"  it holds {len(tasks)} execution{'' if len(tasks) == 1 else 's'}" + (f" ({counts})" if counts else "")
                 + ":")
    width = max(len(str(t["task"] or "")) for t in tasks)
    for t in tasks:
        state = "DAG " + t["state"] if t["dag"] else t["state"]
        if t["cached_from"] is not None:
            state += f" (from {t['cached_from']})"
        lines.append(f"    {t['execution_id']:<6} {str(t['task'] or '-'):<{width}}  {state}")
    # why a task executed is the usual question; a cached one just names its source
    example = next((t for t in tasks if t["state"] == "EXECUTED"), next((t for t in tasks if not t["dag"]), tasks[0]))
    lines.append(f"  to see why a task ran or was cached, explain its execution: mlmd-lineage explain {example['execution_id']}")
    return lines


def describe(result: dict[str, Any]) -> list[str]:
    """:func:`explain`'s answer as lines for humans.

    >>> describe(explain(lg.example_graph(), "e:5"))
    ['execution 5 (task B, run r2): CACHED', '  reused the outputs of execution 2 (task B, run r1)']
    """
    e = result["execution"]
    lines = []
    if result.get("artifact_id") is not None:
        lines.append(f"artifact #{result['artifact_id']} was made by execution {e['execution_id']}: why it ran or was cached")
    outcome = result["outcome"]
    if outcome == "dag":
        return lines + _describe_dag(e, result["dag"])
    lines.append(f"execution {e['execution_id']} (task {e['task']}, run {e['run']}): {e['state']}")
    if outcome == "importer":
        lines.append("  an importer (dsl.importer): it records an artifact from outside the pipeline, "
                     "and is never cached")
        return lines
    if outcome == "cached":
        s = result["source"]
        if s is None:
            lines.append("  cached, but the record names no source execution")
        else:
            lines.append(f"  reused the outputs of execution {s['execution_id']} (task {s['task']}, run {s['run']})")
            if result["provenance"] and len(result["provenance"]) > 2:
                lines.append("  provenance: " + " <- ".join(str(i) for i in result["provenance"]))
        return lines
    if outcome == "caching disabled":
        lines.append("  caching was disabled for this task or run: it executed without looking up the cache")
    elif outcome == "first run":
        lines.append("  first run of this task in its pipeline: nothing to reuse")
    elif outcome in ("failed", "running", "new", "canceled", "unknown"):
        lines.append(f"  the execution is {outcome.upper()}")
        log = result.get("stderr_log")
        if log is not None:
            tail = log["last_lines"]
            if tail is None:
                lines.append(f"  its stderr was {log['path']} (no longer readable here)")
            elif not tail:
                lines.append(f"  its stderr, {log['path']}, is empty")
            else:
                lines.append(f"  its stderr, {log['path']}, ends:")
                lines.extend(f"    {printable(line)}" for line in tail)
    p = result["previous"]
    if p is not None:
        lines.append(f"  closest earlier execution of the task: {p['execution_id']} (run {p['run']}, {p['state']})")
    if outcome in ("source not usable", "source invalidated"):
        lines.append(f"  same cache key; {result['reason']}")
    for change in result["changes"]:
        component, name = change["component"], change["name"]
        if component == "parameter":
            lines.append(f"  parameter {name}: {format_value(change['before']) if change['before'] is not None else '(unset)'}"
                         f" → {format_value(change['after']) if change['after'] is not None else '(unset)'}")
        elif component == "input artifact":
            lines.append(f"  input artifact {name}: {_ids(change['before'])} → {_ids(change['after'])}")
            for producer in change["producers"]:
                if producer["execution_id"] is None:
                    lines.append(f"    #{producer['artifact_id']} has no recorded producer")
                else:
                    how = "executed rather than cached" if producer["state"] == "EXECUTED" else producer["state"]
                    lines.append(f"    #{producer['artifact_id']} was produced by execution {producer['execution_id']}"
                                 f" (task {producer['task']}), {how} in run {producer['run']}")
        elif component == "command/args":
            lines.append(f"  command/args: {' '.join(change['before'])!r} → {' '.join(change['after'])!r}")
        else:
            lines.append(f"  {component}: {format_value(change['before'])} → {format_value(change['after'])}")
    if result.get("full_key_compared") is False:
        lines.append("  (no mlmd_cache_key recorded: compared image, parameters and input artifacts only)")
    return lines
