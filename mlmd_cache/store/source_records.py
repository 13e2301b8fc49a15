"""A key's cache sources as MLMD records: the ``mlmd_cache.CacheSource`` context of a key and the
COMPLETE executions in it with their output artifacts, read in plain MLMD calls.

These are reads and records only: whether a candidate may be reused is the cache's to decide
(:func:`mlmd_cache.cache.sources.source_problem`). They live in the store because the cache
service's client (:mod:`.cache_service`) falls back to them, and ``mlmd-cache serve`` runs
:func:`read_round` itself next to the database (:mod:`mlmd_cache.server.cache_service`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import records

__all__ = ["CacheHit", "Candidate", "CandidateRound", "assemble_candidates", "new_source_context", "read_candidates",
           "read_round", "source_context"]


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
