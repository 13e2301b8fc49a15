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
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import digests, invalidation
from ..store import records
from ..store.source_records import (CacheHit, Candidate, CandidateRound, assemble_candidates, new_source_context,
                                    read_candidates, read_round, source_context)
from .model import Lookup
from .staleness import staleness_problem
from .uris import local_path

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
