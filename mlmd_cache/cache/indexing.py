"""Indexing a store KFP wrote: making its COMPLETE executions with a fingerprint cache sources.

KFP's own driver finds sources with a filter over all executions; mlmd-cache finds them through the
``mlmd_cache.CacheSource`` context of each key (:mod:`mlmd_cache.cache.sources`). A store written by KFP
(or by any other writer) has no such contexts: :func:`index_sources` adds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import NotFoundError
from ..store import limits, mlmd_compat, records
from ..store.source_records import new_source_context

__all__ = ["SourceIndex", "index_sources"]

# Executions read per page when indexing a pipeline's cache sources.
_INDEX_PAGE = 1000


@dataclass(frozen=True)
class SourceIndex:
    """What :func:`index_sources` found in a pipeline: ``sources`` COMPLETE executions
    with a fingerprint, of ``keys`` distinct fingerprints; ``added`` of them were not yet cache
    sources (with ``dry_run``: would be added)."""

    pipeline: str
    sources: int
    keys: int
    added: int
    dry_run: bool = False

    @property
    def already_indexed(self) -> int:
        return self.sources - self.added



def index_sources(store: metadata_store.MetadataStore, types: records.TypeRegistry, pipeline: str, *, dry_run: bool = False) -> SourceIndex:
    """Make the executions of ``pipeline`` that KFP (or anyone) recorded as it does (COMPLETE,
    with a ``cache_fingerprint``) cache sources, as :meth:`ExecutionCache.publish` makes its own: each joins
    the ``mlmd_cache.CacheSource`` context of its fingerprint. Executions already there are
    left alone, so indexing again adds only what came since. ``dry_run`` counts and writes nothing.

    Executions that ran with caching off carry no fingerprint, and CACHED and FAILED ones never
    become sources, as in :meth:`ExecutionCache.publish`. Their outputs are validated at lookup, not here."""
    context = None
    if limits.storable(pipeline, limits.store_backend(store)):  # else in no store, and kept from MLMD
        context = store.get_context_by_type_and_name(records.PIPELINE_CONTEXT_TYPE, pipeline)
    if context is None:
        raise NotFoundError(f"no pipeline named {pipeline!r} in the store")
    sources = added = 0
    fingerprints: set[str] = set()
    complete = mlmd.Execution.COMPLETE
    for page in mlmd_compat.executions_where(store, context.id, "last_known_state = COMPLETE",
                                             lambda execution: execution.last_known_state == complete, _INDEX_PAGE):
        by_fingerprint: dict[str, list[int]] = {}
        for execution in page:
            fingerprint = records.read_property(execution, records.CACHE_FINGERPRINT)
            if isinstance(fingerprint, str) and fingerprint:
                by_fingerprint.setdefault(fingerprint, []).append(execution.id)
        sources += sum(len(ids) for ids in by_fingerprint.values())
        fingerprints.update(by_fingerprint)
        added += _join_sources(store, types, pipeline, by_fingerprint, dry_run)
    return SourceIndex(pipeline, sources, len(fingerprints), added, dry_run)


def _join_sources(store: metadata_store.MetadataStore, types: records.TypeRegistry, pipeline: str, by_fingerprint: Mapping[str, list[int]], dry_run: bool) -> int:
    """Associate executions with the source contexts of their fingerprints; the number that were not yet."""
    associations: list[mlmd.Association] = []
    not_yet = 0
    for fingerprint, execution_ids in by_fingerprint.items():
        name = records.cache_source_context_name(pipeline, fingerprint)
        source = store.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE, name)
        members = {e.id for e in store.get_executions_by_context(source.id)} if source else set()
        missing = [i for i in execution_ids if i not in members]
        not_yet += len(missing)
        if not missing or dry_run:
            continue
        if source is None:
            try:
                [source_id] = store.put_contexts([new_source_context(types.context_type(records.CACHE_SOURCE_CONTEXT_TYPE), pipeline, fingerprint)])
            except mlmd_errors.AlreadyExistsError:  # another writer made it first
                source_id = store.get_context_by_type_and_name(records.CACHE_SOURCE_CONTEXT_TYPE, name).id
        else:
            source_id = source.id
        associations.extend(mlmd.Association(context_id=source_id, execution_id=i) for i in missing)
    if associations:
        store.put_attributions_and_associations([], associations)
    return not_yet

