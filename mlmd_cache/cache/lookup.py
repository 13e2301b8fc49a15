"""A task's lookup as its run makes it: the task keyed as the run keys it (input artifacts by content
in a ``key_by_content`` run), the rules a source must meet for it, and the lookup itself, which
remembers the digests it verified for the rest of the run.

>>> import tempfile, os
>>> from mlmd_cache import connect, CacheKey, ExecutionCache, Task
>>> cache = ExecutionCache(connect("sqlite:///" + os.path.join(tempfile.mkdtemp(), "lookup.sqlite")))
>>> run = cache.pipeline_run("demo", "run-1")
>>> look_up(cache.store, run, Task("hello", CacheKey.build(image="python:3.11", command=["true"]))).hit is None
True
"""
from __future__ import annotations

from dataclasses import replace

from ml_metadata.metadata_store import metadata_store

from . import digests, sources
from .model import Lookup, PipelineRun, Task, caching_enabled
from .sources import SourceRules

__all__ = ["keyed", "look_up", "rules"]


def keyed(store: metadata_store.MetadataStore, run: PipelineRun, task: Task) -> Task:
    """``task`` as ``run`` keys it: with its input artifacts named by content in a
    ``key_by_content`` run (one read of the input artifacts, and hashing those not yet verified
    in this run), unchanged otherwise or when it already is."""
    if not run.key_by_content or task.input_digests is not None:
        return task
    named = digests.input_digests(store, task.key.input_artifact_ids, run.verified_digests)
    return replace(task, input_digests=named)


def rules(run: PipelineRun, task: Task) -> SourceRules:
    """What a source must satisfy for ``task`` in ``run`` beyond KFP's rule."""
    staleness = task.max_staleness if task.max_staleness is not None else run.max_staleness
    return SourceRules(max_staleness=staleness, key_mode=task.key_mode,
                       verify_digests=run.uses_digests or task.key_mode == digests.KEY_MODE_CONTENT)


def look_up(store: metadata_store.MetadataStore, run: PipelineRun, task: Task) -> Lookup:
    """The cache hit for ``task`` in ``run`` and the sources passed over (:class:`~.model.Lookup`);
    nothing is read when caching is off for the task or the run."""
    if not caching_enabled(run, task):
        return Lookup(None)
    task = keyed(store, run, task)
    found = sources.look_up(store, run.pipeline, task.fingerprint, rules(run, task))
    if found.hit is not None and run.uses_digests:  # checked just now: a consumer's content key may trust them
        digests.remember(run.verified_digests, found.hit.output_artifacts)
    return found
