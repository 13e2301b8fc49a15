"""Cache sources: finding the executions a task may reuse, and deciding whether each is still valid.

A *cache source* is an execution that really ran and completed with caching on. Every source is a
member of the ``mlmd_cache.CacheSource`` context named after its pipeline and fingerprint, so the
candidates of a key are an indexed read (:func:`read_candidates`). Whether a candidate may be reused
is decided in one place, :func:`source_problem`, which lookup, ``explain`` and ``plan`` all use:
KFP's rule (its outputs are usable) and the rules mlmd-cache adds (:class:`SourceRules`).

>>> import tempfile, os
>>> from mlmd_cache import connect, CacheKey, ExecutionCache, Task, Outputs
>>> cache = ExecutionCache(connect("sqlite:///" + os.path.join(tempfile.mkdtemp(), "doc.sqlite")))
>>> task = Task("hello", CacheKey.build(image="python:3.11", command=["true"]))
>>> first = cache.execute(cache.pipeline_run("demo", "run-1"), task, lambda started: None)
>>> [(c.execution.id == first.id, problem) for c, problem in examine_sources(cache.store, "demo", task.fingerprint)]
[(True, None)]
"""
from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Optional, Sequence
from urllib.parse import unquote, urlparse

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import digests, invalidation
from ..store import records
from .staleness import staleness_problem

__all__ = ["CacheHit", "Candidate", "CandidateRound", "SourceRules", "artifact_is_usable",
           "artifact_problem", "assemble_candidates", "local_path", "read_candidates", "read_round", "source_problem",
           "Lookup", "look_up", "find_source", "examine_sources", "source_context", "new_source_context",
           "rule_context_ids"]

_UNUSABLE_ARTIFACT_STATES = frozenset(
    {mlmd.Artifact.PENDING, mlmd.Artifact.DELETED, mlmd.Artifact.MARKED_FOR_DELETION, mlmd.Artifact.ABANDONED}
)
# Candidates fetched per round of lookup; almost always one source exists per key, and a round with
# several candidates costs the same reads as a round with one.
_FIRST_ROUND = 4


@dataclass(frozen=True)
class SourceRules:
    """What a lookup demands of a source beyond KFP's rule (outputs usable). The default demands
    nothing more, which is KFP's behaviour.

    ``max_staleness``: a source that started longer ago is not reused (:mod:`mlmd_cache.cache.staleness`).
    ``verify_digests``: output artifacts that carry a digest must still hash to it
    (:func:`mlmd_cache.cache.digests.artifact_change`). ``key_mode``: how the looked-up fingerprint names
    input artifacts, ``"id"`` (KFP's) or ``"content"``; a source of the other mode is never reused.
    """

    max_staleness: Optional[datetime.timedelta] = None
    verify_digests: bool = False
    key_mode: str = digests.KEY_MODE_ID


@dataclass(frozen=True)
class CacheHit:
    """A valid cache source found by :meth:`ExecutionCache.lookup` and the outputs it would give."""

    source: mlmd.Execution = field(repr=False)
    output_artifacts: dict[str, list[mlmd.Artifact]] = field(repr=False)
    output_parameters: dict[str, Any]

    @property
    def source_execution_id(self) -> int:
        return self.source.id


@dataclass(frozen=True)
class Candidate:
    """A COMPLETE execution of a fingerprint, with its output artifacts by output name.
    ``missing_artifact_ids`` are outputs its OUTPUT events name but the store no longer has.
    ``context`` is the ``mlmd_cache.CacheSource`` context it was found in."""

    execution: mlmd.Execution = field(repr=False)
    output_artifacts: dict[str, list[mlmd.Artifact]] = field(repr=False)
    missing_artifact_ids: tuple[int, ...] = ()
    context: Optional[mlmd.Context] = field(default=None, repr=False)

    def hit(self) -> CacheHit:
        parameters = records.read_property(self.execution, records.OUTPUTS) or {}
        return CacheHit(self.execution, self.output_artifacts, parameters)


def local_path(uri: str) -> Optional[str]:
    """The file a URI names on this machine (plain paths and ``file://``), None for remote schemes
    (gs://, s3://, ...)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return uri
    return None


def artifact_problem(artifact: mlmd.Artifact) -> Optional[str]:
    """Why a cached output cannot be reused, or None: its state is PENDING, DELETED,
    MARKED_FOR_DELETION or ABANDONED, or a local file URI no longer exists."""
    if artifact.state in _UNUSABLE_ARTIFACT_STATES:
        return f"output artifact {artifact.id} is {mlmd.Artifact.State.Name(artifact.state)}"
    path = local_path(artifact.uri)
    if path is not None and not os.path.exists(path):
        return f"output artifact {artifact.id}'s file {path} no longer exists"
    return None


def artifact_is_usable(artifact: mlmd.Artifact) -> bool:
    """Whether a cached output can be reused (see :func:`artifact_problem`)."""
    return artifact_problem(artifact) is None


def source_context(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str) -> Optional[mlmd.Context]:
    """The ``mlmd_cache.CacheSource`` context of a key, or None when it never had a source."""
    return store.get_context_by_type_and_name(
        records.CACHE_SOURCE_CONTEXT_TYPE, records.cache_source_context_name(pipeline, fingerprint))


def new_source_context(type_id: int, pipeline: str, fingerprint: str) -> mlmd.Context:
    """A (not yet stored) ``mlmd_cache.CacheSource`` context for a key."""
    source = mlmd.Context(type_id=type_id, name=records.cache_source_context_name(pipeline, fingerprint))
    source.custom_properties[records.SOURCE_PIPELINE].string_value = pipeline
    source.custom_properties[records.CACHE_FINGERPRINT].string_value = fingerprint
    return source


def _complete(executions: Sequence[mlmd.Execution], fingerprint: str) -> list[mlmd.Execution]:
    return [
        execution for execution in executions
        if execution.last_known_state == mlmd.Execution.COMPLETE
        and records.read_property(execution, records.CACHE_FINGERPRINT) == fingerprint
    ]


def read_candidates(store: metadata_store.MetadataStore, context: mlmd.Context, fingerprint: str,
                    executions: Sequence[mlmd.Execution]) -> list[Candidate]:
    """The COMPLETE executions among ``executions`` that carry ``fingerprint``, newest first as
    given, each with its output artifacts: two reads (events, then artifacts) for them all."""
    executions = _complete(executions, fingerprint)
    if not executions:
        return []
    events = [event for event in store.get_events_by_execution_ids([execution.id for execution in executions])
              if event.type == mlmd.Event.OUTPUT]
    artifact_ids = sorted({event.artifact_id for event in events})
    artifacts = store.get_artifacts_by_id(artifact_ids) if artifact_ids else []
    return assemble_candidates(context, executions, events, artifacts)


def assemble_candidates(context: Optional[mlmd.Context], executions: Sequence[mlmd.Execution],
                        output_events: Sequence[mlmd.Event], artifacts: Sequence[mlmd.Artifact]) -> list[Candidate]:
    """The candidates of :func:`read_candidates` from what it read (the cache service sends the same
    records): each execution, in the order given, with its OUTPUT events' artifacts by output name;
    an event whose artifact is not among ``artifacts`` names a missing one."""
    outputs: dict[int, list[mlmd.Event]] = {execution.id: [] for execution in executions}
    for event in output_events:
        if event.execution_id in outputs:
            outputs[event.execution_id].append(event)
    by_id = {artifact.id: artifact for artifact in artifacts}
    candidates = []
    for execution in executions:
        by_name: dict[str, list[mlmd.Artifact]] = {}
        missing = []
        for event in outputs[execution.id]:
            artifact = by_id.get(event.artifact_id)
            if artifact is None:
                missing.append(event.artifact_id)
                continue
            by_name.setdefault(event.path.steps[0].key if event.path.steps else "", []).append(artifact)
        candidates.append(Candidate(execution, by_name, tuple(missing), context))
    return candidates


class CandidateRound(NamedTuple):
    """One round of a lookup (:func:`read_round`): the key's ``CacheSource`` context, the candidates
    found among the newest ``executions_read`` executions of it (beyond those of earlier rounds),
    and ``facts``, the store :func:`source_problem` reads anything else from (the store itself, or
    a view of it that the cache service filled in advance)."""

    context: mlmd.Context
    candidates: list[Candidate]
    executions_read: int
    facts: Any


def read_round(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, limit: int, skip: int = 0,
               context: Optional[mlmd.Context] = None) -> Optional[CandidateRound]:
    """One round of a lookup in plain MLMD reads: the newest ``limit`` executions of the key's
    ``CacheSource`` context (read first unless ``context`` is given), the candidates among them
    after the first ``skip``; None when the key never had a source. ``mlmd-cache serve``'s cache
    service runs this very function next to the database (:mod:`mlmd_cache.server.cache_service`)."""
    if context is None:
        context = source_context(store, pipeline, fingerprint)
        if context is None:
            return None
    executions = store.get_executions_by_context(context.id, list_options=metadata_store.ListOptions(
        limit=limit, order_by=metadata_store.OrderByField.ID, is_asc=False))
    return CandidateRound(context, read_candidates(store, context, fingerprint, executions[skip:]), len(executions),
                          store)


def rule_context_ids(context: mlmd.Context) -> list[int]:
    """The IDs of the contexts that the rules of :func:`source_problem` read with
    ``get_contexts_by_id`` for the candidates of the key whose ``CacheSource`` context this is (e.g.
    the invalidations its properties name). The cache service reads them next to the database and
    sends them with the candidates, so that such a rule costs no round trip of its own; a rule that
    reads anything else still works over gRPC, with calls of its own. Here: the invalidations that
    the key's ``invalidation_<ID>`` flags name (:func:`mlmd_cache.cache.invalidation.invalidations_of`
    reads those it needs by ID); none for a key never invalidated."""
    prefix = invalidation.FLAG_PREFIX
    return [int(name[len(prefix):]) for name in context.custom_properties
            if name.startswith(prefix) and name[len(prefix):].isdigit()]


def source_problem(store: metadata_store.MetadataStore, candidate: Candidate,
                   rules: SourceRules = SourceRules()) -> Optional[str]:
    """Why ``candidate`` may not be reused under ``rules``, or None when it is a valid source.

    The one place that decides validity: KFP's rule (every output artifact exists and is usable),
    then the rules of :class:`SourceRules`."""
    if candidate.missing_artifact_ids:
        return f"output artifact {candidate.missing_artifact_ids[0]} no longer exists"
    for artifacts in candidate.output_artifacts.values():
        for artifact in artifacts:
            problem = artifact_problem(artifact)
            if problem:
                return problem
    # cheapest first: the rules that read nothing, an invalidation (a read only when the key was
    # ever invalidated), then the bytes
    return (staleness_problem(candidate.execution, rules.max_staleness)
            or _key_mode_problem(candidate, rules) or _invalidated(store, candidate)
            or _digest_problem(candidate, rules))


def _key_mode_problem(candidate: Candidate, rules: SourceRules) -> Optional[str]:
    """A source keyed in the other mode (by content vs by MLMD ID) is never reused: their
    fingerprints differ anyway (a content-mode one is salted), this says so should two ever meet."""
    mode = records.read_property(candidate.execution, digests.KEY_MODE) or digests.KEY_MODE_ID
    if mode != rules.key_mode:
        return (f"execution {candidate.execution.id} keys input artifacts by {_MODE_WORDS.get(mode, mode)}, "
                f"this lookup by {_MODE_WORDS.get(rules.key_mode, rules.key_mode)}")
    return None


_MODE_WORDS = {digests.KEY_MODE_ID: "MLMD ID", digests.KEY_MODE_CONTENT: "content (--key-by-content)"}


def _digest_problem(candidate: Candidate, rules: SourceRules) -> Optional[str]:
    """With digests on, every output artifact that carries a digest must still hash to it. Last of
    the rules: it reads the bytes."""
    if not rules.verify_digests:
        return None
    for artifacts in candidate.output_artifacts.values():
        for artifact in artifacts:
            problem = digests.artifact_change(artifact)
            if problem:
                return problem
    return None


def _invalidated(store: metadata_store.MetadataStore, candidate: Candidate) -> Optional[str]:
    """An invalidation in force stops the source (``mlmd-cache invalidate``). Reads nothing unless
    the key's CacheSource context carries an ``invalidation_<ID>`` flag naming the source."""
    return invalidation.invalidation_problem(store, candidate.execution.id, candidate.context)


def _candidates(store: metadata_store.MetadataStore, pipeline: str,
                fingerprint: str) -> Iterator[tuple[Candidate, Any]]:
    """Candidates of a key, newest first, each with the store its rules read, fetched in growing
    rounds so that the usual single source costs one round: one call of the cache service when the
    store has one (a ``grpc://`` store on ``mlmd-cache serve``), else the reads of :func:`read_round`."""
    service = getattr(store, "cache_service", None)
    read = service.lookup if service is not None else functools.partial(read_round, store)
    seen, limit, context = 0, _FIRST_ROUND, None
    while True:
        found = read(pipeline, fingerprint, limit, seen, context)
        if found is None:
            return
        for candidate in found.candidates:
            yield candidate, found.facts
        if found.executions_read < limit:
            return
        seen, limit, context = found.executions_read, limit * 4, found.context


def examine_sources(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str,
                    rules: SourceRules = SourceRules()) -> Iterator[tuple[Candidate, Optional[str]]]:
    """Every candidate source of a key, newest first, with why it is not valid (None: valid)."""
    for candidate, facts in _candidates(store, pipeline, fingerprint):
        yield candidate, source_problem(facts, candidate, rules)


@dataclass(frozen=True)
class Lookup:
    """What a lookup found: the ``hit`` (None on a miss) and the newer candidates it passed over,
    as ``(execution ID, why not valid)``, newest first."""

    hit: Optional[CacheHit]
    rejected: tuple[tuple[int, str], ...] = ()

    @property
    def miss_reason(self) -> Optional[str]:
        """On a miss with candidates, why the newest was not reused; None for a hit or no candidate."""
        if self.hit is not None or not self.rejected:
            return None
        return self.rejected[0][1]


def look_up(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str,
            rules: SourceRules = SourceRules()) -> Lookup:
    """The newest valid cache source of ``fingerprint`` in ``pipeline``, and what was passed over:
    invalid sources are skipped in favour of older ones. The reads are indexed: by context type and
    name, then by context, then events and artifacts by ID; over ``mlmd-cache serve`` they are one
    call of its cache service, and the rules run here (local files are checked where the caller runs)."""
    rejected = []
    for candidate, problem in examine_sources(store, pipeline, fingerprint, rules):
        if problem is None:
            return Lookup(candidate.hit(), tuple(rejected))
        rejected.append((candidate.execution.id, problem))
    return Lookup(None, tuple(rejected))


def find_source(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str,
                rules: SourceRules = SourceRules()) -> Optional[CacheHit]:
    """The newest valid cache source of ``fingerprint`` in ``pipeline``, or None (see :func:`look_up`)."""
    return look_up(store, pipeline, fingerprint, rules).hit
