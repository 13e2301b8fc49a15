"""MLMD records as a :class:`networkx.MultiDiGraph`: the one module of :mod:`lineage` that reads a store.

Nodes are ``"a:ID"`` (artifacts) and ``"e:ID"`` (executions); edges run from a producing execution
to the artifacts of its OUTPUT events and from an artifact to the executions of its INPUT events,
keyed by the event's path key (the input or output name). Node attributes:

===================== =========================================================================
``kind``              ``"artifact"`` or ``"execution"``
``id``                the MLMD ID
``type``              the MLMD type name (``system.Model``, ``system.ContainerExecution``, ...)
``name``              artifact: ``display_name`` (else the MLMD name); execution: ``task_name``
``uri``               artifacts only
``state``             the MLMD state name (``LIVE``, ``COMPLETE``, ``CACHED``, ``FAILED``, ...)
``create_time``       milliseconds since the epoch
``task_name``         executions: KFP's ``task_name`` (``""`` when the record has none)
``run``               the ``system.PipelineRun`` context of an execution; of an artifact, the run
                      of the execution that produced it (``None`` when unknown)
``properties``        properties and custom properties as JSON values
``cached_execution_id`` CACHED executions: the ID of the execution whose outputs they reused
``invalidations``     cache sources that ``mlmd-cache invalidate`` stopped (only on those): each
                      invalidation, in force or undone, as :meth:`mlmd_cache.cache.invalidation.Invalidation.to_dict`
                      (no ``sources``) with ``chosen`` (the target chose it, rather than the cascade)
===================== =========================================================================

Stores written by KFP itself (no ``mlmd_cache_key`` property, maybe no ``cached_execution_id``) load
the same way: missing attributes are ``None`` or empty.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import networkx as nx
from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mlmd_cache.store import ids, limits, mlmd_compat, records
from mlmd_cache.cache import invalidation
from mlmd_cache.errors import InvalidArgumentError, NotFoundError

from . import graph as lg
from .options import MAX_HOPS

__all__ = [
    "artifact_node",
    "execution_node",
    "parse_node",
    "resolve_node",
    "load_subgraph",
    "load_run",
    "load_store",
    "run_names",
    "run_context",
    "load_task_history",
    "load_dag",
    "load_explanation",
]

_BATCH = 1000


def artifact_node(artifact_id: int) -> str:
    return f"a:{artifact_id}"


def execution_node(execution_id: int) -> str:
    return f"e:{execution_id}"


def parse_node(text: str) -> str:
    """A node key from ``a:12``, ``#12``, ``e:7`` (or ``artifact:12``/``execution:7``)."""
    try:
        record = ids.parse_id(text)
    except InvalidArgumentError:
        record = None
    if record is None or record.kind is None:
        raise InvalidArgumentError(f"not a node: {text!r} (expected a:ID or e:ID)")
    return record.node


def _exists(store: metadata_store.MetadataStore, kind: str, record_id: int) -> bool:
    read = store.get_artifacts_by_id if kind == ids.ARTIFACT else store.get_executions_by_id
    return bool(read([record_id]))


def resolve_node(store: metadata_store.MetadataStore, text: Union[str, ids.RecordId], *, prefer: str) -> str:
    """The node an ID as a user writes it names (:func:`mlmd_cache.store.ids.parse_id`): ``a:N``/``#N`` an
    artifact, ``e:N`` an execution, a plain ``N`` a record of kind ``prefer`` when there is one,
    else of the other kind. :class:`NotFoundError` when there is none, saying what ``N`` is instead.

    MLMD numbers artifacts and executions separately: when only one kind has an ``N``, that is
    surely the one meant, so a plain number that names only an execution works on the execution."""
    record = text if isinstance(text, ids.RecordId) else ids.parse_id(text)
    other = ids.EXECUTION if (record.kind or prefer) == ids.ARTIFACT else ids.ARTIFACT
    if record.kind is None:
        for kind in (prefer, other):
            if _exists(store, kind, record.id):
                return record.of(kind).node
        raise NotFoundError(f"no artifact or execution with ID {record.id}")
    if _exists(store, record.kind, record.id):
        return record.node
    instead = ""
    if _exists(store, other, record.id):
        instead = f" ({'artifact #' if other == ids.ARTIFACT else 'execution '}{record.id} exists: " \
                  f"{record.of(other).node})"
    raise NotFoundError(f"no {record.kind} with ID {record.id}{instead}")


# A whole store repeats the same few keys and short strings millions of times (property names,
# images, task names): one shared copy of each keeps a graph of 2M nodes at a third less memory.
_SHARED_STRING_MAX = 63
_intern = sys.intern


def _leaf(value: Any) -> Any:
    if type(value) is str and len(value) <= _SHARED_STRING_MAX:
        return _intern(value)
    return value


def _json(value: Any) -> Any:
    """A ``google.protobuf.Value`` as a JSON value (as ``MessageToDict`` gives, several times faster)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {_intern(k): _json(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_json(v) for v in value.list_value.values]
    if kind == "null_value" or kind is None:
        return None
    return _leaf(getattr(value, kind))


def _value(value: mlmd.Value) -> Any:
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        return {_intern(k): _json(v) for k, v in value.struct_value.fields.items()}
    if kind == "proto_value":
        return value.proto_value.type_url
    return _leaf(getattr(value, kind)) if kind else None


def _properties(node: Any) -> dict[str, Any]:
    result = {_intern(name): _value(value) for name, value in node.properties.items()}
    result.update({_intern(name): _value(value) for name, value in node.custom_properties.items()})
    if records.EXACT_METADATA in node.custom_properties:  # floats a task logged, as logged (records.py)
        result = records.exact_doubles(node, result)
    return result


_EXECUTION_STATES = {number: name for name, number in mlmd.Execution.State.items()}
_ARTIFACT_STATES = {number: name for name, number in mlmd.Artifact.State.items()}


class _Types:
    """Type names by ID, read once per kind."""

    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.artifacts = {t.id: t.name for t in store.get_artifact_types()}
        self.executions = {t.id: t.name for t in store.get_execution_types()}
        self.contexts = {t.id: t.name for t in store.get_context_types()}

    def context_type_id(self, name: str) -> Optional[int]:
        return next((type_id for type_id, type_name in self.contexts.items() if type_name == name), None)


def _add_execution(graph: nx.MultiDiGraph, execution: mlmd.Execution, types: _Types, run: Optional[str],
                   pipeline: Optional[str] = None) -> None:
    properties = _properties(execution)
    task_name = properties.get(records.TASK_NAME)
    attributes = dict(
        kind="execution", id=execution.id, type=types.executions.get(execution.type_id, ""),
        name=task_name or execution.name or properties.get(records.DISPLAY_NAME) or "",
        state=_EXECUTION_STATES.get(execution.last_known_state, "UNKNOWN"),
        create_time=execution.create_time_since_epoch, task_name=task_name or "", run=run,
        pipeline=pipeline, properties=properties,
    )
    cached = properties.get(records.CACHED_EXECUTION_ID)
    if cached not in (None, ""):
        try:
            attributes["cached_execution_id"] = int(cached)
        except (TypeError, ValueError):
            pass
    graph.add_node(execution_node(execution.id), **attributes)


def _add_artifact(graph: nx.MultiDiGraph, artifact: mlmd.Artifact, types: _Types) -> None:
    properties = _properties(artifact)
    graph.add_node(
        artifact_node(artifact.id), kind="artifact", id=artifact.id, type=types.artifacts.get(artifact.type_id, ""),
        name=properties.get(records.DISPLAY_NAME) or artifact.name or "", uri=artifact.uri,
        state=_ARTIFACT_STATES.get(artifact.state, "UNKNOWN"), create_time=artifact.create_time_since_epoch,
        run=None, properties=properties,
    )


def _add_event(graph: nx.MultiDiGraph, event: mlmd.Event) -> None:
    key = event.path.steps[0].key if event.path.steps and event.path.steps[0].HasField("key") else ""
    artifact, execution = artifact_node(event.artifact_id), execution_node(event.execution_id)
    if artifact not in graph or execution not in graph:
        return
    if event.type in (mlmd.Event.OUTPUT, mlmd.Event.DECLARED_OUTPUT, mlmd.Event.INTERNAL_OUTPUT, mlmd.Event.PENDING_OUTPUT):
        graph.add_edge(execution, artifact, key=key, event=mlmd.Event.Type.Name(event.type), name=key)
    elif event.type in (mlmd.Event.INPUT, mlmd.Event.DECLARED_INPUT, mlmd.Event.INTERNAL_INPUT):
        graph.add_edge(artifact, execution, key=key, event=mlmd.Event.Type.Name(event.type), name=key)


def _artifact_runs(graph: nx.MultiDiGraph) -> None:
    """An artifact's run: the run of the execution that produced it (not a CACHED reuser)."""
    for node, data in graph.nodes(data=True):
        if data["kind"] != "artifact":
            continue
        producers = [graph.nodes[p] for p in graph.predecessors(node) if graph.nodes[p].get("state") != "CACHED"]
        producers.sort(key=lambda p: p["id"])
        if producers:  # else (only CACHED reusers loaded) the caller's attributions tell
            data["run"] = producers[0].get("run")


def _batches(ids: Sequence[int], size: int = _BATCH) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


def _fill(store: metadata_store.MetadataStore, graph: nx.MultiDiGraph, types: _Types,
          executions: Iterable[mlmd.Execution], artifacts: Iterable[mlmd.Artifact], events: Iterable[mlmd.Event],
          runs: dict[int, str], pipelines: Optional[dict[int, str]] = None,
          artifact_runs: Optional[dict[int, str]] = None) -> nx.MultiDiGraph:
    pipelines = pipelines or {}
    for execution in executions:
        _add_execution(graph, execution, types, runs.get(execution.id), pipelines.get(execution.id))
    for artifact in artifacts:
        _add_artifact(graph, artifact, types)
    for event in events:
        _add_event(graph, event)
    _artifact_runs(graph)
    for artifact_id, run in (artifact_runs or {}).items():  # artifacts whose producer was not loaded
        node = graph.nodes.get(artifact_node(artifact_id))
        if node is not None and node["run"] is None:
            node["run"] = run
    return graph


def _runs_of(store: metadata_store.MetadataStore, types: _Types,
             execution_ids: Iterable[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Execution ID -> PipelineRun context name, and -> Pipeline context name, for a few executions
    (one read per execution)."""
    run_type = types.context_type_id(records.RUN_CONTEXT_TYPE)
    pipeline_type = types.context_type_id(records.PIPELINE_CONTEXT_TYPE)
    runs, pipelines = {}, {}
    for execution_id in execution_ids:
        for context in store.get_contexts_by_execution(execution_id):
            if context.type_id == run_type:
                runs[execution_id] = context.name
            elif context.type_id == pipeline_type:
                pipelines[execution_id] = context.name
    return runs, pipelines


def load_subgraph(store: metadata_store.MetadataStore, start: Sequence[str], *, hops: int = 20,
                  direction: str = "both", runs: bool = True, cached: bool = True) -> nx.MultiDiGraph:
    """The neighbourhood of ``start`` nodes (``a:ID``/``e:ID``) within ``hops`` edges, traced by MLMD
    itself (``get_lineage_subgraph``, server side). ``direction``: ``upstream``, ``downstream`` or
    ``both``. Unknown start nodes raise :class:`NotFoundError`. ``cached=False`` has MLMD stop at
    CACHED executions and leave them out (an artifact reused 10,000 times then costs nothing).

    ``runs=False`` leaves the ``run`` and ``pipeline`` attributes ``None``: MLMD indexes
    associations and attributions by context, not by execution or artifact, so finding the
    contexts of a few nodes scans them, and its cost grows with the store (about 1.5 ms at 30k
    nodes, 13 ms at 200k on SQLite), while the lineage itself does not."""
    if not 0 <= hops <= MAX_HOPS:
        raise InvalidArgumentError(f"depth {hops}: MLMD traces 0 to {MAX_HOPS} hops")
    directions = {"upstream": mlmd.LineageSubgraphQueryOptions.UPSTREAM,
                  "downstream": mlmd.LineageSubgraphQueryOptions.DOWNSTREAM,
                  "both": mlmd.LineageSubgraphQueryOptions.BIDIRECTIONAL}
    if direction not in directions:
        raise InvalidArgumentError(f"direction {direction!r}: expected upstream, downstream or both")
    nodes = [parse_node(node) for node in start]
    artifact_ids = [int(n[2:]) for n in nodes if n.startswith("a:")]
    execution_ids = [int(n[2:]) for n in nodes if n.startswith("e:")]
    _check_exist(store, artifact_ids, execution_ids)
    graph = nx.MultiDiGraph()
    if not nodes:
        return graph
    types = _Types(store)
    if not mlmd_compat.has_filter_query():  # MLMD 1.21: no starting nodes without a filter; traced here
        subgraph = mlmd_compat.lineage_subgraph(
            store, artifact_ids, execution_ids, hops=hops, direction=direction, associations=runs,
            stop_at=None if cached else (lambda e: e.last_known_state == mlmd.Execution.CACHED))
    else:
        subgraph = _mlmd_subgraph(store, artifact_ids, execution_ids, hops, directions[direction], cached, runs)
    run_type = types.context_type_id(records.RUN_CONTEXT_TYPE)
    pipeline_type = types.context_type_id(records.PIPELINE_CONTEXT_TYPE)
    context_ids = sorted({a.context_id for a in subgraph.associations})
    contexts = store.get_contexts_by_id(context_ids) if context_ids else []
    run_names = {c.id: c.name for c in contexts if c.type_id == run_type}
    pipeline_names = {c.id: c.name for c in contexts if c.type_id == pipeline_type}
    runs_of = {a.execution_id: run_names[a.context_id] for a in subgraph.associations if a.context_id in run_names}
    pipelines = {a.execution_id: pipeline_names[a.context_id] for a in subgraph.associations
                 if a.context_id in pipeline_names}
    _fill(store, graph, types, subgraph.executions, subgraph.artifacts, subgraph.events, runs_of, pipelines)
    if runs:
        _boundary_artifact_runs(store, graph, run_type)
    _invalidations(store, graph, types)
    return graph


def _mlmd_subgraph(store: metadata_store.MetadataStore, artifact_ids: list[int], execution_ids: list[int],
                   hops: int, direction: int, cached: bool, runs: bool) -> mlmd.LineageGraph:
    """The subgraph as MLMD traces it (server side), before MLMD 1.21."""
    options = mlmd.LineageSubgraphQueryOptions(max_num_hops=hops, direction=direction)
    if artifact_ids:
        options.starting_artifacts.filter_query = f"id IN ({', '.join(map(str, artifact_ids))})"
    if execution_ids:
        options.starting_executions.filter_query = f"id IN ({', '.join(map(str, execution_ids))})"
    if not cached:
        options.ending_executions.filter_query = "last_known_state = CACHED"
        options.ending_executions.include_ending_nodes = False
    # contexts and attributions in the subgraph cost MLMD's core several times the rest: the few
    # contexts are read by ID instead, and the runs of boundary artifacts one by one
    return store.get_lineage_subgraph(
        options, ["artifacts", "executions", "events"] + (["associations"] if runs else []))


def _boundary_artifact_runs(store: metadata_store.MetadataStore, graph: nx.MultiDiGraph, run_type: Optional[int]) -> None:
    """The run of artifacts whose producer was not loaded: the earliest run they are attributed to."""
    for _, data in graph.nodes(data=True):
        if data["kind"] == "artifact" and data["run"] is None and run_type is not None:
            try:
                contexts = store.get_contexts_by_artifact(data["id"])
            except mlmd_errors.NotFoundError:  # what MLMD says of an artifact in no context
                contexts = []
            names = [c.name for c in sorted(contexts, key=lambda c: c.id) if c.type_id == run_type]
            data["run"] = names[0] if names else None


def _invalidations(store: metadata_store.MetadataStore, graph: nx.MultiDiGraph, types: _Types) -> None:
    """The ``invalidations`` of the graph's executions. There are few invalidations: each one's
    members among the graph's executions are read by context (indexed), never the contexts of each
    execution (a scan of every association)."""
    if types.context_type_id(invalidation.INVALIDATION_CONTEXT_TYPE) is None:
        return
    ids = sorted(d["id"] for _, d in graph.nodes(data=True) if d["kind"] == "execution")
    if not ids:
        return
    for context in sorted(store.get_contexts_by_type(invalidation.INVALIDATION_CONTEXT_TYPE), key=lambda c: c.id):
        if len(ids) <= 4 * _BATCH and mlmd_compat.has_filter_query():
            members = [e.id for batch in _batches(ids) for e in store.get_executions_by_context(
                context.id, list_options=metadata_store.ListOptions(filter_query=f"id IN ({', '.join(map(str, batch))})"))]
        else:
            wanted = set(ids)
            members = [e.id for e in store.get_executions_by_context(context.id) if e.id in wanted]
        if not members:
            continue
        record = invalidation.from_context(context).to_dict()
        del record["sources"], record["artifacts"], record["dry_run"], record["note"]
        outputs = {m: [graph.nodes[a]["id"] for a in graph.successors(execution_node(m))] for m in members}
        every_output = sorted({a for values in outputs.values() for a in values})
        attributed: set[int] = set()
        if record["cascade"] and every_output and not mlmd_compat.has_filter_query():
            wanted_outputs = set(every_output)
            attributed = {a.id for a in store.get_artifacts_by_context(context.id) if a.id in wanted_outputs}
        elif record["cascade"] and every_output:
            attributed = {a.id for batch in _batches(every_output) for a in store.get_artifacts_by_context(
                context.id, list_options=metadata_store.ListOptions(filter_query=f"id IN ({', '.join(map(str, batch))})"))}
        for member in members:
            chosen = not record["cascade"] or any(a in attributed for a in outputs[member])
            graph.nodes[execution_node(member)].setdefault("invalidations", []).append({**record, "chosen": chosen})


def _check_exist(store: metadata_store.MetadataStore, artifact_ids: list[int], execution_ids: list[int]) -> None:
    for kind, numbers in (("artifact", artifact_ids), ("execution", execution_ids)):
        beyond = [i for i in numbers if not 0 <= i <= ids.MAX_ID]
        if beyond:
            raise NotFoundError(f"no {kind} with ID {beyond[0]}")
    if artifact_ids:
        found = {a.id for a in store.get_artifacts_by_id(artifact_ids)}
        missing = [i for i in artifact_ids if i not in found]
        if missing:
            raise NotFoundError(f"no artifact with ID {missing[0]}")
    if execution_ids:
        found = {e.id for e in store.get_executions_by_id(execution_ids)}
        missing = [i for i in execution_ids if i not in found]
        if missing:
            raise NotFoundError(f"no execution with ID {missing[0]}")


def run_context(store: metadata_store.MetadataStore, run: str) -> mlmd.Context:
    """The ``system.PipelineRun`` context named ``run``; :class:`NotFoundError` when there is none."""
    context = None
    if limits.storable(run, limits.store_backend(store)):  # else no store holds it, and MLMD must not see it
        try:
            context = store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
        except mlmd_errors.NotFoundError:
            pass
    if context is None:
        raise NotFoundError(f"no pipeline run named {run!r}")
    return context


def run_names(store: metadata_store.MetadataStore) -> list[str]:
    """Names of every ``system.PipelineRun`` context."""
    try:
        return [c.name for c in store.get_contexts_by_type(records.RUN_CONTEXT_TYPE)]
    except mlmd_errors.NotFoundError:
        return []


def load_run(store: metadata_store.MetadataStore, run: str) -> nx.MultiDiGraph:
    """A whole run: its executions, every artifact they read or wrote (including artifacts of
    earlier runs that it consumed or reused), and the events between them."""
    types = _Types(store)
    [(context, pipeline, executions)] = _executions_by_run(store, types, [run_context(store, run)])
    events = store.get_events_by_execution_ids([e.id for e in executions]) if executions else []
    artifact_ids = sorted({event.artifact_id for event in events})
    artifacts = [a for batch in _batches(artifact_ids) for a in store.get_artifacts_by_id(batch)]
    # the producers of consumed artifacts from other runs are not loaded: the artifacts' runs come
    # from their attributions instead
    graph = _fill(store, nx.MultiDiGraph(), types, executions, artifacts, events,
                  {e.id: context.name for e in executions}, {e.id: pipeline for e in executions})
    _boundary_artifact_runs(store, graph, types.context_type_id(records.RUN_CONTEXT_TYPE))
    _invalidations(store, graph, types)
    graph.graph[lg.WHOLE_RUNS] = True
    return graph


def _progress_bar(total: int, enabled: Optional[bool]) -> Progress:
    """rich's progress bar on standard error for loading a store, cleared when done: shown on a
    terminal (``enabled`` None), always (True) or never (False)."""
    console = Console(file=sys.stderr, force_terminal=True if enabled else None, highlight=False)
    shown = console.is_terminal and not console.is_dumb_terminal if enabled is None else enabled
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not shown)
    bar.add_task("loading lineage", total=max(total, 1))
    return bar


def _max_id(list_records: Any) -> int:
    """The largest ID of a kind of record (0 when there is none), from a ``get_*`` list method."""
    newest = list_records(list_options=metadata_store.ListOptions(
        limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
    return newest[0].id if newest else 0


def _run_contexts(store: metadata_store.MetadataStore, types: _Types) -> list[mlmd.Context]:
    """Every ``system.PipelineRun`` context, oldest first."""
    if types.context_type_id(records.RUN_CONTEXT_TYPE) is None:
        return []
    return sorted(store.get_contexts_by_type(records.RUN_CONTEXT_TYPE), key=lambda c: c.id)


def _newest_run_contexts(store: metadata_store.MetadataStore, types: _Types, limit: Optional[int]) -> list[mlmd.Context]:
    """The ``limit`` newest ``system.PipelineRun`` contexts (all when ``limit`` is None), newest first."""
    if types.context_type_id(records.RUN_CONTEXT_TYPE) is None:
        return []
    if limit is not None and limit <= metadata_store.MAX_NUM_RESULT and mlmd_compat.has_filter_query():
        # one page of MLMD's list query; each further page re-sorts every context, and reading
        # them all costs about as much as eight pages
        return store.get_contexts(list_options=metadata_store.ListOptions(
            limit=limit, order_by=metadata_store.OrderByField.CREATE_TIME, is_asc=False,
            filter_query=f"type = {records.filter_string(records.RUN_CONTEXT_TYPE)}"))
    newest = sorted(_run_contexts(store, types), key=lambda c: (c.create_time_since_epoch, c.id), reverse=True)
    return newest[:limit]


def _executions_by_run(store: metadata_store.MetadataStore, types: _Types, runs: Sequence[mlmd.Context]
                       ) -> Iterator[tuple[mlmd.Context, Optional[str], list[mlmd.Execution]]]:
    """Each run context with its pipeline's name and its executions (read by context, which MLMD
    indexes). For many runs the pipelines' children are read, one read per pipeline (there are
    few); for a few runs, each run's parent."""
    pipeline_of_run: dict[int, str] = {}
    if len(runs) <= _BATCH:
        for run in runs:
            parents = sorted(store.get_parent_contexts_by_context(run.id), key=lambda c: c.id)
            if parents:
                pipeline_of_run[run.id] = parents[0].name
    elif types.context_type_id(records.PIPELINE_CONTEXT_TYPE) is not None:
        for pipeline in sorted(store.get_contexts_by_type(records.PIPELINE_CONTEXT_TYPE), key=lambda c: c.id):
            for child in store.get_children_contexts_by_context(pipeline.id):
                pipeline_of_run.setdefault(child.id, pipeline.name)
    for run in runs:
        yield run, pipeline_of_run.get(run.id), store.get_executions_by_context(run.id)


def load_store(store: metadata_store.MetadataStore, *, progress: Optional[bool] = None) -> nx.MultiDiGraph:
    """Every execution, artifact and event of the store (a progress bar on standard error when it
    is a terminal, or when ``progress=True``).

    Executions are read run by run (``get_executions_by_context``, indexed by context), which
    names each one's run as it goes: asking MLMD for the contexts of executions instead scans
    every association, per batch. Executions in no run are then read by ID, as are artifacts;
    events in batches of executions. Nothing is held twice: the records of one batch become
    nodes before the next is read."""
    types = _Types(store)
    graph = nx.MultiDiGraph()
    run_contexts = _run_contexts(store, types)
    last_execution = _max_id(store.get_executions)
    last_artifact = _max_id(store.get_artifacts)
    with _progress_bar(len(run_contexts) + 2 * last_execution + last_artifact, progress) as shown:
        [task] = shown.task_ids
        advance = functools.partial(shown.advance, task)
        seen: set[int] = set()
        # an execution in two runs belongs to the older one
        for context, pipeline, executions in _executions_by_run(store, types, run_contexts):
            for execution in executions:
                if execution.id not in seen:
                    seen.add(execution.id)
                    _add_execution(graph, execution, types, context.name, pipeline)
            advance(1)
        for batch in _batches([i for i in range(1, last_execution + 1) if i not in seen]):
            for execution in store.get_executions_by_id(batch):
                _add_execution(graph, execution, types, None, None)
            advance(len(batch))
        advance(len(seen))
        del seen
        for batch in _batches(range(1, last_artifact + 1)):
            for artifact in store.get_artifacts_by_id(batch):
                _add_artifact(graph, artifact, types)
            advance(len(batch))
        for batch in _batches(range(1, last_execution + 1)):
            for event in store.get_events_by_execution_ids(batch):
                _add_event(graph, event)
            advance(len(batch))
        _artifact_runs(graph)
        _invalidations(store, graph, types)
    graph.graph[lg.WHOLE_RUNS] = True
    return graph


def load_task_history(store: metadata_store.MetadataStore, execution_id: int, *, limit: int = 10) -> nx.MultiDiGraph:
    """What explaining an execution's cache outcome needs: the execution, up to ``limit`` earlier
    executions of the same task in the same pipeline (newest first), the artifacts they read and
    wrote, the executions that produced those input artifacts, and, for a CACHED execution, its
    cache source. The graph's ``"target"`` attribute names the execution's node."""
    _check_exist(store, [], [execution_id])
    [execution] = store.get_executions_by_id([execution_id])
    types = _Types(store)
    wanted = {execution_id}
    task_name = records.read_property(execution, records.TASK_NAME)
    pipeline_type = types.context_type_id(records.PIPELINE_CONTEXT_TYPE)
    pipeline = next((c for c in store.get_contexts_by_execution(execution_id) if c.type_id == pipeline_type), None)
    if pipeline is not None and isinstance(task_name, str) and task_name:
        wanted.update(_earlier_of_task(store, pipeline.id, task_name, execution_id, limit))
    cached = records.read_property(execution, records.CACHED_EXECUTION_ID)
    if cached and str(cached).isdigit():
        wanted.add(int(cached))
    # the sources of earlier CACHED executions: whether a source was still valid explains a miss
    for earlier in store.get_executions_by_id(sorted(wanted - {execution_id})):
        source = records.read_property(earlier, records.CACHED_EXECUTION_ID)
        if earlier.last_known_state == mlmd.Execution.CACHED and source and str(source).isdigit():
            wanted.add(int(source))
    wanted = {e.id for e in store.get_executions_by_id(sorted(wanted))}
    events = store.get_events_by_execution_ids(sorted(wanted))
    inputs = sorted({e.artifact_id for e in events if e.type == mlmd.Event.INPUT})
    if inputs:  # the producers of the artifacts these executions read
        wanted.update(e.execution_id for e in store.get_events_by_artifact_ids(inputs) if e.type == mlmd.Event.OUTPUT)
        events = store.get_events_by_execution_ids(sorted(wanted))
    executions = store.get_executions_by_id(sorted(wanted))
    artifact_ids = sorted({e.artifact_id for e in events})
    artifacts = [a for batch in _batches(artifact_ids) for a in store.get_artifacts_by_id(batch)]
    runs, pipelines = _runs_of(store, types, sorted(wanted))
    graph = _fill(store, nx.MultiDiGraph(), types, executions, artifacts, events, runs, pipelines)
    _invalidations(store, graph, types)
    graph.graph["target"] = execution_node(execution_id)
    return graph


def load_dag(store: metadata_store.MetadataStore, execution_id: int) -> nx.MultiDiGraph:
    """What explaining a DAG execution (``system.DAGExecution``: a run's root, a nested pipeline,
    a loop or one of its iterations) needs: the DAG, the executions it holds directly (those whose
    ``parent_dag_id`` it is) and its parent DAG, without artifacts. The graph's ``"target"``
    attribute names the DAG's node."""
    _check_exist(store, [], [execution_id])
    [dag] = store.get_executions_by_id([execution_id])
    types = _Types(store)
    contexts = store.get_contexts_by_execution(execution_id)
    run = next((c for c in contexts if c.type_id == types.context_type_id(records.RUN_CONTEXT_TYPE)), None)
    pipeline = next((c.name for c in contexts if c.type_id == types.context_type_id(records.PIPELINE_CONTEXT_TYPE)),
                    None)
    # the children, by a filter MLMD evaluates (within the run's context, which it indexes)
    if mlmd_compat.has_filter_query():
        children_only = metadata_store.ListOptions(
            filter_query=f"custom_properties.{records.PARENT_DAG_ID}.int_value = {execution_id}")
        children = (store.get_executions_by_context(run.id, list_options=children_only) if run is not None
                    else store.get_executions(list_options=children_only))
    else:  # MLMD 1.21: no filters; the run's executions (or the store's) read and compared here
        children = [e for e in (store.get_executions_by_context(run.id) if run is not None else store.get_executions())
                    if records.read_property(e, records.PARENT_DAG_ID) == execution_id]
    parent = records.read_property(dag, records.PARENT_DAG_ID)
    parents = store.get_executions_by_id([parent]) if isinstance(parent, int) and 0 < parent <= ids.MAX_ID else []
    executions = [dag, *children, *parents]
    run_name = run.name if run is not None else None
    graph = _fill(store, nx.MultiDiGraph(), types, executions, [], [], {e.id: run_name for e in executions},
                  {e.id: pipeline for e in executions})
    graph.graph["target"] = execution_node(execution_id)
    return graph


def load_explanation(store: metadata_store.MetadataStore, node: str) -> nx.MultiDiGraph:
    """What explaining ``node`` (``e:ID`` or ``a:ID``) needs: :func:`load_task_history` of an
    execution, or :func:`load_dag` of a DAG execution; of an artifact, the same for the execution
    that made it (:func:`lineage.graph.producer`), with the graph's ``"artifact"`` attribute naming
    the artifact. An artifact without a recorded producer is a :class:`NotFoundError`."""
    node = parse_node(node)
    artifact = None
    if node.startswith("a:"):
        around = load_subgraph(store, [node], hops=1, direction="upstream", runs=False)
        made_by = lg.producer(around, node)
        if made_by is None:
            raise NotFoundError(f"artifact #{node[2:]} has no recorded producer: no execution made it to explain")
        artifact, node = node, made_by
    execution_id = int(node[2:])
    _check_exist(store, [], [execution_id])
    [execution] = store.get_executions_by_id([execution_id])
    [execution_type] = store.get_execution_types_by_id([execution.type_id])
    if execution_type.name == records.DAG_EXECUTION_TYPE:
        graph = load_dag(store, execution_id)
    else:
        graph = load_task_history(store, execution_id)
    graph.graph["artifact"] = artifact
    return graph


def _earlier_of_task(store: metadata_store.MetadataStore, pipeline_id: int, task_name: str, before: int,
                     limit: int) -> list[int]:
    """IDs of the ``limit`` newest executions of the pipeline older than ``before`` whose task is
    ``task_name``. The filter finds them and maybe others (see :func:`records.filter_matching`), so
    each page is compared exactly, and read on until there are enough."""
    if not mlmd_compat.has_filter_query():  # MLMD 1.21: no filters; the pipeline's executions compared here
        older = [e.id for e in store.get_executions_by_context(pipeline_id)
                 if e.id < before and records.read_property(e, records.TASK_NAME) == task_name]
        return sorted(older, reverse=True)[:limit]
    condition = records.filter_matching(f"custom_properties.{records.TASK_NAME}.string_value", task_name)
    found: list[int] = []
    while len(found) < limit:
        page = store.get_executions_by_context(pipeline_id, list_options=metadata_store.ListOptions(
            limit=limit, order_by=metadata_store.OrderByField.ID, is_asc=False,
            filter_query=f"{condition} AND id < {before}"))
        found += [e.id for e in page if records.read_property(e, records.TASK_NAME) == task_name]
        if len(page) < limit:
            break
        before = page[-1].id
    return found[:limit]


def load_runs(store: metadata_store.MetadataStore, *, limit: Optional[int] = None) -> nx.MultiDiGraph:
    """The executions of every run, or of the ``limit`` newest (no artifacts, no events): enough to
    count what each run executed, reused and failed. ``graph.graph["runs"]`` maps each run name to
    ``{"pipeline", "create_time", "id"}`` (runs without executions included)."""
    if limit is not None and limit < 1:
        raise InvalidArgumentError(f"limit {limit}: expected 1 or more runs")
    types = _Types(store)
    graph = nx.MultiDiGraph(runs={})
    for context, pipeline, executions in _executions_by_run(store, types, _newest_run_contexts(store, types, limit)):
        graph.graph["runs"][context.name] = {"pipeline": pipeline, "create_time": context.create_time_since_epoch,
                                             "id": context.id}
        for execution in executions:
            _add_execution(graph, execution, types, context.name, pipeline)
    return graph
