"""Invalidating cache sources, with a cascade along lineage: ``mlmd-cache invalidate``.

An *invalidation* is one act of taking cache sources out of use. It is recorded as one context of
type ``mlmd_cache.Invalidation`` (KFP's own records are left as they are) holding

* custom properties ``target`` (what was chosen: ``artifact 12``, ``execution 7``, ``run r1``,
  ``pipeline P fingerprint FP``), ``reason``, ``cascade``, ``by`` (user@host), ``invalidated_at``
  (ms since the epoch, a double: MySQL's ``int_value`` has 32 bits), ``count`` (the sources it stops) and, once undone, ``undone_at`` (absent or
  0: in force);
* an association with every source it stops, and an attribution to each chosen artifact (for
  targets other than an artifact: the chosen sources' outputs, where the cascade starts).

Lookup pays nothing for keys never invalidated: after the associations, the ``mlmd_cache.CacheSource``
context of each stopped source's key gets a set-only flag, the property ``invalidation_<ID>`` = the
key's sources it stops (``12:target 15:cascade``), written with a field mask (that property only),
so that two invalidations at once cannot lose each other's (and a publish into the context keeps
it: MLMD reuses an existing context as it is).
:func:`invalidation_problem`, called by :func:`mlmd_cache.cache.sources.source_problem`, reads further only
when the key's context has the flag: the invalidations that name the source, by ID, to see whether
they are in force. (Not ``get_contexts_by_execution``: MLMD indexes associations by context only,
so asking for an execution's contexts scans every association; nor a query of the invalidation's
members, which costs MLMD milliseconds per thousand members.)

The cascade walks MLMD's events in batches, from artifacts to the executions with an INPUT event to
them, to those executions' OUTPUT artifacts, and on. A CACHED execution leads to its cache source
(``cached_execution_id``), which is stopped, and whose outputs are followed. DAG executions are not
followed (a DAG's OUTPUT events name its tasks' outputs, which may not derive from the artifact; its
tasks have INPUT events of their own), nor importers (they have no inputs). Nothing lists all
executions: the cost grows with what lies downstream, not with the store.
"""
from __future__ import annotations

import datetime
import getpass
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import InvalidArgumentError, NotFoundError
from ..store import limits, mlmd_compat, records
from ..store.source_records import new_source_context

__all__ = ["INVALIDATION_CONTEXT_TYPE", "FLAG_PREFIX", "InvalidatedSource", "Invalidation", "invalidate",
           "list_invalidations", "undo", "from_context", "utc_text", "in_force_at", "invalidation_problem", "invalidations_of", "describe", "resolve_source"]

INVALIDATION_CONTEXT_TYPE = "mlmd_cache.Invalidation"
# The set-only flag an invalidation puts on a key's mlmd_cache.CacheSource context: invalidation_<ID>.
FLAG_PREFIX = "invalidation_"
_FLAG_PREFIX = FLAG_PREFIX

# Custom properties of an Invalidation context.
TARGET, REASON, CASCADE, BY, INVALIDATED_AT, UNDONE_AT, COUNT = (
    "target", "reason", "cascade", "by", "invalidated_at", "undone_at", "count")

_CHUNK = 500  # IDs per read: well inside every backend's limit of bound values
_MAX_ID = 2**63 - 1
_CACHED_CHAIN = 16  # cached_execution_id hops followed (KFP records the source itself: one)


@dataclass(frozen=True)
class InvalidatedSource:
    """A cache source an invalidation stops: ``chosen`` by the target itself, else reached by the
    cascade through artifact ``via``."""

    execution_id: int
    task: str
    fingerprint: str
    chosen: bool
    via: Optional[int] = None

    def to_dict(self) -> dict:
        return {"execution_id": self.execution_id, "task": self.task, "fingerprint": self.fingerprint,
                "chosen": self.chosen, "via_artifact": self.via}


@dataclass(frozen=True)
class Invalidation:
    """One invalidation: what :func:`invalidate` did (or, with ``dry_run``, would do; ``id`` is
    then None), or one recorded act as :func:`list_invalidations` reads it (``sources`` empty).
    ``note`` says why nothing stops, when nothing does."""

    id: Optional[int]
    target: str
    reason: str
    cascade: bool
    invalidated_at: int
    by: str
    count: int
    undone_at: Optional[int] = None
    sources: tuple[InvalidatedSource, ...] = ()
    artifacts: tuple[int, ...] = ()
    dry_run: bool = False
    note: str = ""

    @property
    def in_force(self) -> bool:
        return self.id is not None and not self.undone_at

    def to_dict(self) -> dict:
        return {"id": self.id, "target": self.target, "reason": self.reason, "cascade": self.cascade,
                "invalidated_at": self.invalidated_at, "invalidated_at_utc": utc_text(self.invalidated_at),
                "by": self.by, "count": self.count, "undone_at": self.undone_at or None,
                "in_force": self.in_force, "dry_run": self.dry_run, "note": self.note or None,
                "artifacts": list(self.artifacts), "sources": [s.to_dict() for s in self.sources]}


def utc_text(milliseconds: Optional[int]) -> Optional[str]:
    """``2026-12-02 14:03 UTC`` for milliseconds since the epoch (None for none)."""
    if not milliseconds:
        return None
    return datetime.datetime.fromtimestamp(milliseconds / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def describe(record: Mapping[str, Any], *, chosen: bool = False) -> str:
    """The words for a source an invalidation stops, as lookup, ``explain`` and ``show`` tell it:
    ``invalidated by invalidation 17 (reason: bad labels) on 2026-12-02 14:03 UTC, by cascade from
    artifact 12``. ``record`` is :meth:`Invalidation.to_dict` (or any mapping with its keys)."""
    reason = f" (reason: {record['reason']})" if record.get("reason") else ""
    how = (f"target {record['target']}" if chosen or not record.get("cascade")
           else f"by cascade from {record['target']}")
    text = f"invalidated by invalidation {record['id']}{reason} on {utc_text(record['invalidated_at'])}, {how}"
    if record.get("undone_at"):
        text += f" (undone on {utc_text(record['undone_at'])})"
    return text


def in_force_at(record: Mapping[str, Any], milliseconds: int) -> bool:
    """Whether an invalidation (:meth:`Invalidation.to_dict`) was in force at a moment: made
    before it, and not undone by then."""
    undone = record.get("undone_at") or 0
    return record["invalidated_at"] <= milliseconds and not (undone and undone <= milliseconds)


# -- reading records ------------------------------------------------------------------------------

def _chunks(ids: Sequence[int], size: int = _CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start:start + size])


def _executions(store: metadata_store.MetadataStore, ids: Iterable[int]) -> dict[int, mlmd.Execution]:
    ids = sorted(set(ids))
    return {e.id: e for chunk in _chunks(ids) for e in store.get_executions_by_id(chunk)}


def _events_of_artifacts(store: metadata_store.MetadataStore, ids: Iterable[int]) -> list[mlmd.Event]:
    return [e for chunk in _chunks(sorted(set(ids))) for e in store.get_events_by_artifact_ids(chunk)]


def _events_of_executions(store: metadata_store.MetadataStore, ids: Iterable[int]) -> list[mlmd.Event]:
    return [e for chunk in _chunks(sorted(set(ids))) for e in store.get_events_by_execution_ids(chunk)]


def _fingerprint(execution: mlmd.Execution) -> str:
    value = records.read_property(execution, records.CACHE_FINGERPRINT)
    return value if isinstance(value, str) else ""


def _is_source(execution: mlmd.Execution) -> bool:
    """A COMPLETE execution with a fingerprint: what lookup takes as a cache source."""
    return execution.last_known_state == mlmd.Execution.COMPLETE and bool(_fingerprint(execution))


def _cached_from(execution: mlmd.Execution) -> Optional[int]:
    value = records.read_property(execution, records.CACHED_EXECUTION_ID)
    return int(value) if value is not None and str(value).isdigit() else None


def _task(execution: mlmd.Execution) -> str:
    return str(records.read_property(execution, records.TASK_NAME) or execution.name or "")


class _Types:
    def __init__(self, store: metadata_store.MetadataStore) -> None:
        self.executions = {t.id: t.name for t in store.get_execution_types()}

    def name(self, execution: mlmd.Execution) -> str:
        return self.executions.get(execution.type_id, "")

    def followed(self, execution: mlmd.Execution) -> bool:
        """Whether the cascade goes through an execution: not DAGs, not importers."""
        return self.name(execution) not in (records.DAG_EXECUTION_TYPE, records.IMPORTER_EXECUTION_TYPE)


def resolve_source(store: metadata_store.MetadataStore, execution: mlmd.Execution) -> Optional[mlmd.Execution]:
    """The cache source behind an execution: itself when it is one, a CACHED execution's source
    (``cached_execution_id``, followed as far as it leads), else None."""
    seen = set()
    while execution is not None and execution.id not in seen:
        if _is_source(execution):
            return execution
        seen.add(execution.id)
        source_id = _cached_from(execution) if execution.last_known_state == mlmd.Execution.CACHED else None
        if source_id is None or len(seen) > _CACHED_CHAIN:
            return None
        execution = _executions(store, [source_id]).get(source_id)
    return None


# -- what a target chooses ------------------------------------------------------------------------

@dataclass
class _Choice:
    target: str
    sources: dict[int, mlmd.Execution] = field(default_factory=dict)  # the chosen sources
    artifacts: set[int] = field(default_factory=set)  # where a cascade starts
    note: str = ""


def _check_id(kind: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_ID:
        raise InvalidArgumentError(f"--{kind} {value!r}: an MLMD ID is a positive integer")
    return value


def _what_else(store: metadata_store.MetadataStore, kind: str, record_id: int) -> str:
    """``no artifact with ID 7``, and what 7 is instead when it names another kind of record."""
    others = []
    if kind != "artifact" and store.get_artifacts_by_id([record_id]):
        others.append(f"artifact {record_id} exists: use --artifact {record_id}")
    if kind != "execution" and store.get_executions_by_id([record_id]):
        others.append(f"execution {record_id} exists: use --execution {record_id}")
    if kind != "context":
        contexts = store.get_contexts_by_id([record_id])
        if contexts and contexts[0].type == records.RUN_CONTEXT_TYPE:
            others.append(f"{record_id} is the ID of run {contexts[0].name!r}: use --run {contexts[0].name!r}")
    return f"no {kind} with ID {record_id}" + (f" ({'; '.join(others)})" if others else "")


def _source_outputs(store: metadata_store.MetadataStore, source_ids: Iterable[int]) -> set[int]:
    return {e.artifact_id for e in _events_of_executions(store, source_ids) if e.type == mlmd.Event.OUTPUT}


def _choose_artifact(store: metadata_store.MetadataStore, types: _Types, artifact_id: int) -> _Choice:
    if not store.get_artifacts_by_id([artifact_id]):
        raise NotFoundError(_what_else(store, "artifact", artifact_id))
    choice = _Choice(f"artifact {artifact_id}", artifacts={artifact_id})
    writers = _executions(store, [e.execution_id for e in _events_of_artifacts(store, [artifact_id])
                                  if e.type == mlmd.Event.OUTPUT])
    others = []
    for writer in writers.values():
        if types.name(writer) == records.DAG_EXECUTION_TYPE:
            continue  # a DAG names its tasks' outputs as its own: the task is the producer
        source = resolve_source(store, writer)
        if source is not None:
            choice.sources[source.id] = source
        else:
            others.append(writer)
    if not choice.sources:
        if others:
            made = min(others, key=lambda e: e.id)
            choice.note = (f"artifact {artifact_id} was made by {_kind(types, made)} {made.id}, which is no cache "
                           "source")
        else:
            choice.note = f"artifact {artifact_id} has no recorded producer"
    return choice


def _kind(types: _Types, execution: mlmd.Execution) -> str:
    name = types.name(execution)
    if name == records.IMPORTER_EXECUTION_TYPE:
        return "importer execution"
    if name == records.DAG_EXECUTION_TYPE:
        return "DAG execution"
    state = mlmd.Execution.State.Name(execution.last_known_state)
    if execution.last_known_state == mlmd.Execution.COMPLETE and not _fingerprint(execution):
        return "execution (run with caching disabled)"
    return f"{state} execution"


def _choose_execution(store: metadata_store.MetadataStore, types: _Types, execution_id: int) -> _Choice:
    execution = _executions(store, [execution_id]).get(execution_id)
    if execution is None:
        raise NotFoundError(_what_else(store, "execution", execution_id))
    choice = _Choice(f"execution {execution_id}")
    if types.name(execution) == records.DAG_EXECUTION_TYPE:
        task = _task(execution)
        raise InvalidArgumentError(
            f"execution {execution_id} is a DAG execution ({'task ' + repr(task) if task else 'a run root'}), "
            "no cache source: give one of its tasks' executions, or --run")
    source = resolve_source(store, execution)
    if source is not None:
        choice.sources[source.id] = source
        return choice
    # No source: a cascade still starts from what it wrote.
    choice.artifacts = {e.artifact_id for e in _events_of_executions(store, [execution_id]) if e.type == mlmd.Event.OUTPUT}
    choice.note = f"execution {execution_id} is an {_kind(types, execution)}, which is no cache source"
    if execution.last_known_state == mlmd.Execution.CACHED:
        choice.note = f"execution {execution_id} is CACHED, but its cache source is not in the store"
    return choice


def _choose_run(store: metadata_store.MetadataStore, run: str) -> _Choice:
    context = None
    if isinstance(run, str) and run and limits.storable(run, limits.store_backend(store)):
        try:
            context = store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
        except mlmd_errors.NotFoundError:
            pass
    if context is None:
        raise NotFoundError(f"no pipeline run named {run!r}")
    choice = _Choice(f"run {run}")
    executions = store.get_executions_by_context(context.id)
    choice.sources.update((e.id, e) for e in executions if _is_source(e))
    # a CACHED task's source ran in an earlier run: read in one go, then followed if need be
    reused = _executions(store, {_cached_from(e) for e in executions
                                 if e.last_known_state == mlmd.Execution.CACHED and _cached_from(e)} - set(choice.sources))
    for execution in reused.values():
        source = resolve_source(store, execution)
        if source is not None:
            choice.sources[source.id] = source
    if not choice.sources:
        choice.note = f"run {run!r} has no cache sources (no task of it completed with caching on)"
    return choice


def _choose_key(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str) -> _Choice:
    backend = limits.store_backend(store)
    for what, value in (("--pipeline", pipeline), ("--fingerprint", fingerprint)):
        if not isinstance(value, str) or not value:
            raise InvalidArgumentError(f"{what} must not be empty")
    if not limits.storable(pipeline, backend) or store.get_context_by_type_and_name(
            records.PIPELINE_CONTEXT_TYPE, pipeline) is None:
        raise NotFoundError(f"no pipeline named {pipeline!r} in the store")
    context = store.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE,
                                                 records.cache_source_context_name(pipeline, fingerprint))
    choice = _Choice(f"pipeline {pipeline} fingerprint {fingerprint}")
    if context is not None:
        for execution in store.get_executions_by_context(context.id):
            if _is_source(execution) and _fingerprint(execution) == fingerprint:
                choice.sources[execution.id] = execution
    if not choice.sources:
        raise NotFoundError(f"no cache source of fingerprint {fingerprint!r} in pipeline {pipeline!r} (a store "
                            "written by KFP itself: run mlmd-cache index first)")
    return choice


# -- the cascade ----------------------------------------------------------------------------------

def _cascade(store: metadata_store.MetadataStore, types: _Types, start: Iterable[int],
             known: Mapping[int, mlmd.Execution]) -> dict[int, tuple[mlmd.Execution, int]]:
    """Every cache source downstream of the ``start`` artifacts, with the start artifact it derives
    from, walking events a frontier at a time. ``known`` sources are not returned again, but their
    outputs are followed."""
    found: dict[int, tuple[mlmd.Execution, int]] = {}
    seen_artifacts = set(start)
    origin = {a: a for a in seen_artifacts}  # artifact -> the start artifact it derives from
    seen_executions: set[int] = set()
    frontier = sorted(seen_artifacts)
    while frontier:
        via: dict[int, int] = {}  # consumer -> the artifact it read
        for event in _events_of_artifacts(store, frontier):
            if event.type == mlmd.Event.INPUT and event.execution_id not in seen_executions:
                via.setdefault(event.execution_id, origin[event.artifact_id])
        seen_executions.update(via)
        consumers = _executions(store, via)
        followed: dict[int, int] = {}  # executions whose outputs lead on -> start artifact
        pending_sources: dict[int, int] = {}
        for execution in consumers.values():
            if not types.followed(execution):
                continue
            if _is_source(execution):
                followed[execution.id] = via[execution.id]
                if execution.id not in known:
                    found.setdefault(execution.id, (execution, via[execution.id]))
            elif execution.last_known_state == mlmd.Execution.CACHED:
                # Its OUTPUT events name its source's very outputs: the source leads on.
                source_id = _cached_from(execution)
                if source_id is not None:
                    pending_sources.setdefault(source_id, via[execution.id])
            else:  # ran with caching off, failed, running: what it wrote still derives from the start
                followed[execution.id] = via[execution.id]
        unresolved = {i: v for i, v in pending_sources.items() if i not in seen_executions}
        for source_id, start_artifact in unresolved.items():
            seen_executions.add(source_id)
            execution = _executions(store, [source_id]).get(source_id)
            source = resolve_source(store, execution) if execution is not None else None
            if source is None:
                continue
            seen_executions.add(source.id)
            followed[source.id] = start_artifact
            if source.id not in known:
                found.setdefault(source.id, (source, start_artifact))
        frontier = []
        for event in _events_of_executions(store, followed):
            if event.type == mlmd.Event.OUTPUT and event.artifact_id not in seen_artifacts:
                seen_artifacts.add(event.artifact_id)
                origin[event.artifact_id] = followed[event.execution_id]
                frontier.append(event.artifact_id)
        frontier.sort()
    return found


# -- writing ---------------------------------------------------------------------------------------

def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (a container's arbitrary UID) and no $USER
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _flag_value(stopped: Sequence[InvalidatedSource]) -> str:
    """``12:target 15:cascade``: the sources of one key an invalidation stops, and how."""
    return " ".join(f"{s.execution_id}:{'target' if s.chosen else 'cascade'}" for s in sorted(
        stopped, key=lambda s: s.execution_id))


def _parse_flag(value: Any) -> dict[int, bool]:
    """Execution ID -> chosen by the target, from a flag's value (see :func:`_flag_value`)."""
    found = {}
    for part in str(value or "").split():
        number, _, how = part.partition(":")
        if number.isdigit():
            found[int(number)] = how != "cascade"
    return found


def _flag_source_keys(store: metadata_store.MetadataStore, invalidation_id: int,
                      stopped: Sequence[InvalidatedSource], executions: Mapping[int, mlmd.Execution]) -> None:
    """Set the flag on the CacheSource context of every stopped source's key: ``invalidation_<ID>``
    naming the key's sources it stops (so that a lookup needs one read by ID to tell, not a query
    of the invalidation's members). One property per context: MLMD's update costs by the property. Contexts are found by their fingerprint
    property (indexed): a fingerprint shared by two pipelines flags both keys, which changes
    nothing for the other (its sources are not named) and costs its lookups one read. A key without
    a context (a store KFP wrote, not yet indexed) gets one now, so that indexing it keeps the flag."""
    flag = f"{_FLAG_PREFIX}{invalidation_id}"
    mask = [f"custom_properties.{flag}"]
    by_fingerprint: dict[str, list[InvalidatedSource]] = {}
    for source in stopped:
        by_fingerprint.setdefault(source.fingerprint, []).append(source)
    fingerprints = sorted(by_fingerprint)
    try:
        store.get_context_type(records.CACHE_SOURCE_CONTEXT_TYPE)
        contexts: list[mlmd.Context] = []
        if not mlmd_compat.has_filter_query():  # MLMD 1.21: no filters; every key's context read, compared below
            fingerprints = []
            contexts = store.get_contexts_by_type(records.CACHE_SOURCE_CONTEXT_TYPE)
        # 100 at a time: MLMD returns 100 records a page and runs the query again for each page
        for start in range(0, len(fingerprints), 100):
            wanted = ", ".join(records.filter_string(f) for f in fingerprints[start:start + 100])
            contexts += store.get_contexts(list_options=metadata_store.ListOptions(filter_query=(
                f"type = {records.filter_string(records.CACHE_SOURCE_CONTEXT_TYPE)} AND "
                f"custom_properties.{records.CACHE_FINGERPRINT}.string_value IN ({wanted})")))
    except mlmd_errors.NotFoundError:  # no CacheSource context at all yet
        contexts = []
    have = set()
    updates = []
    for context in contexts:
        key = records.read_property(context, records.CACHE_FINGERPRINT)
        if key not in by_fingerprint:
            continue
        have.add(key)
        update = mlmd.Context(id=context.id, type_id=context.type_id, name=context.name)
        update.custom_properties[flag].string_value = _flag_value(by_fingerprint[key])
        updates.append(update)
    for start in range(0, len(updates), _CHUNK):
        store.put_contexts(updates[start:start + _CHUNK], field_mask_paths=mask)
    for key in fingerprints:
        if key not in have:
            first = by_fingerprint[key][0]
            _new_flagged_context(store, executions[first.execution_id], flag, _flag_value(by_fingerprint[key]), mask)


def _new_flagged_context(store: metadata_store.MetadataStore, source: mlmd.Execution, flag: str, value: str,
                         mask: list[str]) -> None:
    try:
        pipeline_type = store.get_context_type(records.PIPELINE_CONTEXT_TYPE).id
    except mlmd_errors.NotFoundError:
        return
    # the one scan of associations, for a key that has no CacheSource context (rare: a store KFP wrote)
    pipeline = next((c.name for c in store.get_contexts_by_execution(source.id) if c.type_id == pipeline_type), None)
    if pipeline is None:
        return  # in no pipeline: no lookup can find it
    type_id = records.TypeRegistry(store).context_type(records.CACHE_SOURCE_CONTEXT_TYPE)
    context = new_source_context(type_id, pipeline, _fingerprint(source))
    context.custom_properties[flag].string_value = value
    try:
        store.put_contexts([context])
    except mlmd_errors.AlreadyExistsError:  # made meanwhile (indexing): flag it
        existing = store.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE, context.name)
        context.id = existing.id
        store.put_contexts([context], field_mask_paths=mask)


def invalidate(store: metadata_store.MetadataStore, *, artifact: Optional[int] = None,
               execution: Optional[int] = None, run: Optional[str] = None, pipeline: Optional[str] = None,
               fingerprint: Optional[str] = None, cascade: bool = False, reason: str = "",
               dry_run: bool = False, now: Optional[float] = None) -> Invalidation:
    """Stop the cache sources a target chooses, and with ``cascade`` every cache source downstream.

    Exactly one target: ``artifact`` (the sources that produced it; a CACHED producer leads to its
    source), ``execution`` (a source, or a CACHED execution's source), ``run`` (the sources the run
    produced and the sources its CACHED tasks reused), or ``pipeline`` with ``fingerprint`` (every
    source of that key). ``cascade`` also stops every cache source downstream of the chosen
    artifacts (the given one; for other targets the chosen sources' outputs). Everything is checked
    before anything is written; ``dry_run`` writes nothing. When nothing would stop (an imported
    artifact without ``cascade``), nothing is written and ``note`` says why."""
    targets = [name for name, value in (("artifact", artifact), ("execution", execution), ("run", run))
               if value is not None]
    if pipeline is not None or fingerprint is not None:
        if pipeline is None or fingerprint is None:
            raise InvalidArgumentError("--pipeline and --fingerprint go together")
        targets.append("pipeline")
    if len(targets) != 1:
        raise InvalidArgumentError("give exactly one target: --artifact ID, --execution ID, --run NAME, or "
                                   "--pipeline P --fingerprint FP" + (f" (got {', '.join(targets)})" if targets else ""))
    reason = "" if reason is None else reason
    limits.check_text("--reason", reason, limits.store_backend(store))
    types = _Types(store)
    if artifact is not None:
        choice = _choose_artifact(store, types, _check_id("artifact", artifact))
    elif execution is not None:
        choice = _choose_execution(store, types, _check_id("execution", execution))
    elif run is not None:
        choice = _choose_run(store, run)
    else:
        choice = _choose_key(store, pipeline, fingerprint)
    if artifact is None:
        choice.artifacts |= _source_outputs(store, choice.sources)
    chosen = [InvalidatedSource(e.id, _task(e), _fingerprint(e), True) for _, e in sorted(choice.sources.items())]
    reached: list[InvalidatedSource] = []
    executions = dict(choice.sources)
    if cascade and choice.artifacts:
        for source_id, (source, via) in sorted(_cascade(store, types, choice.artifacts, choice.sources).items()):
            reached.append(InvalidatedSource(source_id, _task(source), _fingerprint(source), False, via))
            executions[source_id] = source
    stopped = tuple(chosen + reached)
    note = choice.note
    if not stopped and not note:
        note = "nothing lies downstream that is a cache source"
    if note and not stopped and not cascade and choice.artifacts:
        consumers = {e.execution_id for e in _events_of_artifacts(store, choice.artifacts) if e.type == mlmd.Event.INPUT}
        if consumers:
            note += "; its consumers still hit: --cascade stops what was made from it"
    stamp = int((time.time() if now is None else now) * 1000)
    result = Invalidation(None, choice.target, reason, bool(cascade), stamp, _actor(), len(stopped), None, stopped,
                          tuple(sorted(choice.artifacts)), dry_run, note if not stopped else "")
    if dry_run or not stopped:
        return result
    context = mlmd.Context(type_id=records.TypeRegistry(store).context_type(INVALIDATION_CONTEXT_TYPE),
                           name=f"{stamp}-{uuid.uuid4().hex[:12]}")
    properties = context.custom_properties
    properties[TARGET].string_value = choice.target
    properties[REASON].string_value = reason
    properties[CASCADE].bool_value = bool(cascade)
    properties[BY].string_value = result.by
    properties[INVALIDATED_AT].double_value = stamp  # MySQL's int_value is 32 bits
    properties[COUNT].int_value = len(stopped)
    [context_id] = store.put_contexts([context])
    # One write for the record (associations, attributions) before the flags that make lookups look.
    store.put_attributions_and_associations(
        [mlmd.Attribution(context_id=context_id, artifact_id=a) for a in sorted(choice.artifacts)],
        [mlmd.Association(context_id=context_id, execution_id=s.execution_id) for s in stopped])
    _flag_source_keys(store, context_id, stopped, executions)
    return replace(result, id=context_id)


def from_context(context: mlmd.Context) -> Invalidation:
    """An ``mlmd_cache.Invalidation`` context as an :class:`Invalidation` (``sources`` empty)."""
    read = lambda name: records.read_property(context, name)  # noqa: E731
    return Invalidation(context.id, str(read(TARGET) or ""), str(read(REASON) or ""), bool(read(CASCADE)),
                        int(read(INVALIDATED_AT) or context.create_time_since_epoch), str(read(BY) or ""),
                        int(read(COUNT) or 0), int(read(UNDONE_AT) or 0) or None)


def list_invalidations(store: metadata_store.MetadataStore) -> list[Invalidation]:
    """Every invalidation recorded, oldest first (in force or undone)."""
    try:
        contexts = store.get_contexts_by_type(INVALIDATION_CONTEXT_TYPE)
    except mlmd_errors.NotFoundError:
        return []
    return [from_context(c) for c in sorted(contexts, key=lambda c: c.id)]


def _invalidation_context(store: metadata_store.MetadataStore, invalidation_id: Any) -> mlmd.Context:
    invalidation_id = _check_id("undo", invalidation_id)
    [context] = store.get_contexts_by_id([invalidation_id]) or [None]
    if context is None or context.type != INVALIDATION_CONTEXT_TYPE:
        what = f" ({invalidation_id} is a {context.type} context)" if context is not None else ""
        raise NotFoundError(f"no invalidation with ID {invalidation_id}{what}; mlmd-cache invalidate --list "
                            "shows them")
    return context


def undo(store: metadata_store.MetadataStore, invalidation_id: int, *, dry_run: bool = False,
         now: Optional[float] = None) -> Invalidation:
    """Take an invalidation back: it records ``undone_at``, and its sources are valid again unless
    another invalidation in force covers them. Undoing one already undone is an
    :class:`InvalidArgumentError`."""
    context = _invalidation_context(store, invalidation_id)
    found = from_context(context)
    if found.undone_at:
        raise InvalidArgumentError(f"invalidation {found.id} was already undone on {utc_text(found.undone_at)}")
    stamp = int((time.time() if now is None else now) * 1000)
    if dry_run:
        return replace(found, dry_run=True)
    update = mlmd.Context(id=context.id, type_id=context.type_id, name=context.name)
    update.custom_properties[UNDONE_AT].double_value = stamp
    store.put_contexts([update], field_mask_paths=[f"custom_properties.{UNDONE_AT}"])
    return replace(found, undone_at=stamp)


# -- lookup ---------------------------------------------------------------------------------------

def invalidations_of(store: metadata_store.MetadataStore, execution_id: int,
                     source_context: Optional[mlmd.Context]) -> list[tuple[Invalidation, bool]]:
    """The invalidations in force that stop the source ``execution_id`` of the key whose CacheSource
    context is ``source_context``, newest first, each with whether its target chose the source
    (rather than its cascade). Nothing is read when the key was never invalidated, and one read by
    ID when it was."""
    if source_context is None:
        return []
    naming: dict[int, bool] = {}  # invalidation ID -> chosen, of those that name this execution
    for name, value in source_context.custom_properties.items():  # a key's few properties
        if name.startswith(_FLAG_PREFIX) and name[len(_FLAG_PREFIX):].isdigit():
            chosen = _parse_flag(value.string_value).get(int(execution_id))
            if chosen is not None:
                naming[int(name[len(_FLAG_PREFIX):])] = chosen
    if not naming:
        return []
    found = []
    for context in sorted(store.get_contexts_by_id(sorted(naming)), key=lambda c: -c.id):
        invalidation = from_context(context)
        if context.type == INVALIDATION_CONTEXT_TYPE and invalidation.in_force:
            found.append((invalidation, naming[context.id]))
    return found


def invalidation_problem(store: metadata_store.MetadataStore, execution_id: int,
                         source_context: Optional[mlmd.Context]) -> Optional[str]:
    """Why source ``execution_id`` is not valid because of an invalidation, or None (see
    :func:`invalidations_of`)."""
    found = invalidations_of(store, execution_id, source_context)
    if not found:
        return None
    invalidation, chosen = found[0]
    return describe(invalidation.to_dict(), chosen=chosen)
