"""What differs between the two ML Metadata releases mlmd-cache runs on, 1.17.1 and 1.21, in one place.

MLMD 1.21 removed ``filter_query`` (it was parsed by ZetaSQL, which 1.21 dropped): every list call
that carries one fails with UNIMPLEMENTED, and so does ``get_lineage_subgraph``, whose starting
nodes can only be given as a filter (without one it is INVALID_ARGUMENT). Where MLMD has filters
they are used (the database evaluates them, by index); where it has none, the same records are read
by type, context or ID and filtered here (:func:`has_filter_query` tells which), and lineage is
traced here from events (:func:`lineage_subgraph`), with the same results. Both stores keep schema
version 10, so a store is shared by both ends as it is.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator, Optional, Sequence

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

__all__ = ["has_filter_query", "pages", "executions_where", "lineage_subgraph", "UPSTREAM", "DOWNSTREAM", "BOTH"]

UPSTREAM, DOWNSTREAM, BOTH = "upstream", "downstream", "both"
_INPUTS = (mlmd.Event.INPUT, mlmd.Event.DECLARED_INPUT, mlmd.Event.INTERNAL_INPUT)
_BY_ID = 100  # IDs per by-ID read, as MLMD pages


@functools.lru_cache(maxsize=None)
def has_filter_query() -> bool:
    """Whether the installed MLMD evaluates ``filter_query`` (before 1.21)."""
    from ml_metadata import version

    release = tuple(int(part) for part in version.__version__.split(".")[:2] if part.isdigit())
    return release < (1, 21)


def pages(records: Iterable, size: int) -> Iterator[list]:
    """``records`` (sorted by the caller) in lists of ``size``: the pages a filtered query would
    have returned, for code that pages either way."""
    page: list = []
    for record in records:
        page.append(record)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def executions_where(store: metadata_store.MetadataStore, context_id: int, condition: str,
                     keep: Callable[[mlmd.Execution], bool], size: int = 1000) -> Iterator[list[mlmd.Execution]]:
    """The executions of a context matching ``condition``, a page at a time, by ID (keyset paging);
    on MLMD 1.21, which has no filters, all of them read and those ``keep`` accepts (the same
    condition in Python) kept."""
    if not has_filter_query():
        kept = sorted((e for e in store.get_executions_by_context(context_id) if keep(e)), key=lambda e: e.id)
        yield from pages(kept, size)
        return
    last_id = 0
    while True:
        page = store.get_executions_by_context(context_id, list_options=metadata_store.ListOptions(
            limit=size, order_by=metadata_store.OrderByField.ID, is_asc=True,
            filter_query=f"{condition} AND id > {last_id}"))
        if not page:
            return
        yield page
        if len(page) < size:
            return
        last_id = page[-1].id


def _batches(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _BY_ID):
        yield list(ids[start:start + _BY_ID])


def _is_input(event: mlmd.Event) -> bool:
    return event.type in _INPUTS


def lineage_subgraph(store: metadata_store.MetadataStore, artifact_ids: Sequence[int], execution_ids: Sequence[int],
                     *, hops: int, direction: str = BOTH, stop_at: Optional[Callable[[mlmd.Execution], bool]] = None,
                     associations: bool = True) -> mlmd.LineageGraph:
    """What ``get_lineage_subgraph`` returns (artifacts, executions, the events between them, and
    the executions' associations when ``associations``) for nodes within ``hops`` events of the
    starting ones, traced breadth-first from events, for MLMD 1.21, which takes no starting nodes.
    ``direction``: upstream follows an artifact to the execution that output it and an execution to
    the artifacts it input; downstream the reverse; both follows every event. Executions for which
    ``stop_at`` is true are left out and not passed through (``ending_executions`` with
    ``include_ending_nodes=False``)."""
    artifacts: dict[int, mlmd.Artifact] = {}
    executions: dict[int, mlmd.Execution] = {}
    events: dict[tuple, mlmd.Event] = {}
    frontier_a = sorted(set(artifact_ids))
    frontier_e = []
    for execution in store.get_executions_by_id(sorted(set(execution_ids))) if execution_ids else []:
        if stop_at is None or not stop_at(execution):
            frontier_e.append(execution.id)
            executions[execution.id] = execution
    for batch in _batches(frontier_a):
        artifacts.update((a.id, a) for a in store.get_artifacts_by_id(batch))
    frontier_a = [i for i in frontier_a if i in artifacts]
    for _ in range(hops):
        found_e: set[int] = set()
        found_a: set[int] = set()
        for batch in _batches(frontier_a):
            for event in store.get_events_by_artifact_ids(batch):
                # from an artifact: upstream to its producer (an output event), downstream to its consumers
                if direction == BOTH or (direction == UPSTREAM) != _is_input(event):
                    if event.execution_id not in executions:
                        found_e.add(event.execution_id)
        for batch in _batches(frontier_e):
            for event in store.get_events_by_execution_ids(batch):
                # from an execution: upstream to its inputs, downstream to its outputs
                if direction == BOTH or (direction == UPSTREAM) == _is_input(event):
                    if event.artifact_id not in artifacts:
                        found_a.add(event.artifact_id)
        frontier_e = []
        for batch in _batches(sorted(found_e)):
            for execution in store.get_executions_by_id(batch):
                if stop_at is None or not stop_at(execution):
                    executions[execution.id] = execution
                    frontier_e.append(execution.id)
        frontier_a = []
        for batch in _batches(sorted(found_a)):
            for artifact in store.get_artifacts_by_id(batch):
                artifacts[artifact.id] = artifact
                frontier_a.append(artifact.id)
        if not frontier_a and not frontier_e:
            break
    for batch in _batches(sorted(executions)):
        for event in store.get_events_by_execution_ids(batch):
            if event.artifact_id in artifacts:
                events[(event.artifact_id, event.execution_id, event.type, event.milliseconds_since_epoch,
                        event.path.SerializeToString())] = event
    graph = mlmd.LineageGraph()
    graph.artifacts.extend(artifacts[i] for i in sorted(artifacts))
    graph.executions.extend(executions[i] for i in sorted(executions))
    graph.events.extend(events.values())
    if associations:
        for execution_id in sorted(executions):
            try:
                contexts = store.get_contexts_by_execution(execution_id)
            except mlmd_errors.NotFoundError:
                contexts = []
            graph.associations.extend(mlmd.Association(execution_id=execution_id, context_id=c.id) for c in contexts)
    return graph
