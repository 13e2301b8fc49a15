"""Pipeline runs in the store: a run's ``system.Pipeline`` and ``system.PipelineRun`` contexts, found
or created (as KFP's driver finds the run of each task it starts), and the pipelines a store has."""
from __future__ import annotations

import datetime
from typing import Mapping, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import InvalidArgumentError
from ..store import limits, records
from .model import PipelineRun

__all__ = ["pipeline_run", "pipeline_names"]


def _get_or_create_context(store: metadata_store.MetadataStore, types: records.TypeRegistry, type_name: str, name: str,
                           properties: Mapping[str, str]) -> tuple[mlmd.Context, bool]:
    context = store.get_context_by_type_and_name(type_name, name)
    if context is not None:
        return context, False
    new = mlmd.Context(type_id=types.context_type(type_name), name=name)
    for key, value in properties.items():
        new.custom_properties[key].string_value = value
    try:
        [new.id] = store.put_contexts([new])
    except mlmd_errors.AlreadyExistsError:  # another writer created it first
        return store.get_context_by_type_and_name(type_name, name), False
    return store.get_contexts_by_id([new.id])[0], True


def pipeline_run(
    store: metadata_store.MetadataStore,
    types: records.TypeRegistry,
    pipeline: str,
    run: str,
    *,
    enable_caching: Optional[bool] = None,
    pipeline_root: str = "",
    exist_ok: bool = True,
    max_staleness: Optional[datetime.timedelta] = None,
    digest: bool = False,
    key_by_content: bool = False,
) -> PipelineRun:
    """Get or create the ``system.Pipeline`` and ``system.PipelineRun`` contexts of a run.

    An existing run is returned (as KFP's driver finds the run of each task it starts) unless
    ``exist_ok`` is false; a run belongs to one pipeline, so a run of another pipeline by that
    name is an :class:`InvalidArgumentError` either way, and nothing is written then."""
    if not pipeline or not run:
        raise InvalidArgumentError("a pipeline run needs a pipeline name and a run name")
    backend = limits.store_backend(store)
    limits.check_name("pipeline name", pipeline, backend)
    limits.check_name("run name", run, backend)
    limits.check_text("pipeline root", pipeline_root, backend)
    existing = store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run)
    if existing is not None:
        _check_reusable(store, existing, pipeline, exist_ok)
    pipeline_context, _ = _get_or_create_context(store, types, records.PIPELINE_CONTEXT_TYPE, pipeline, {})
    run_properties = {records.PIPELINE_ROOT: pipeline_root} if pipeline_root else {}
    run_context, created = _get_or_create_context(store, types, records.RUN_CONTEXT_TYPE, run, run_properties)
    if created:
        try:
            store.put_parent_contexts([mlmd.ParentContext(child_id=run_context.id, parent_id=pipeline_context.id)])
        except mlmd_errors.AlreadyExistsError:
            pass
    elif existing is None:  # another writer created it since
        _check_reusable(store, run_context, pipeline, exist_ok)
    return PipelineRun(pipeline, run, pipeline_context, run_context, enable_caching, max_staleness, digest=digest,
                       key_by_content=key_by_content)


def _check_reusable(store: metadata_store.MetadataStore, run_context: mlmd.Context, pipeline: str,
                    exist_ok: bool) -> None:
    if not exist_ok:
        raise InvalidArgumentError(f"a pipeline run named {run_context.name!r} is already in the store; "
                                   "a new run needs a new name")
    owners = [c.name for c in store.get_parent_contexts_by_context(run_context.id)]
    if owners and pipeline not in owners:
        raise InvalidArgumentError(f"pipeline run {run_context.name!r} belongs to pipeline {owners[0]!r}, "
                                   f"not {pipeline!r}")


def pipeline_names(store: metadata_store.MetadataStore) -> list[str]:
    """The names of the store's ``system.Pipeline`` contexts, oldest first."""
    try:
        contexts = store.get_contexts_by_type(records.PIPELINE_CONTEXT_TYPE)
    except mlmd_errors.NotFoundError:  # no such type yet: an empty store
        return []
    return [c.name for c in sorted(contexts, key=lambda c: c.id)]
