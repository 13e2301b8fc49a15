#!/usr/bin/env python
"""Benchmark cache lookup and hit registration on KFP-shaped MLMD stores of 10k and 1M executions.

For each size N the script builds (or reuses, see below) one SQLite MLMD store holding:

* N executions of KFP-shaped pipeline runs: 8 pipelines, 5 ``system.ContainerExecution`` tasks per
  run (ingest -> validate, preprocess -> train -> evaluate) with KFP's custom properties
  (``display_name``, ``task_name``, ``image``, ``inputs``, ``outputs``, ``cache_fingerprint``,
  ``mlmd_cache_key``), associated with their ``system.Pipeline`` and ``system.PipelineRun``
  contexts; LIVE output artifacts with OUTPUT events keyed by output name, INPUT events from the
  upstream outputs; every COMPLETE execution associated with its ``mlmd_cache.CacheSource`` context,
  as :meth:`ExecutionCache.publish` does. Every 10th run of a pipeline is a fully cached re-run of
  an earlier run (5 CACHED executions with ``cached_execution_id``, as :meth:`ExecutionCache.reuse`
  writes them).
* a **hot key**: one source made by the real ``ExecutionCache.execute`` at the start, and 10,000
  CACHED hits of it (each in its own run), spread over the whole build;
* a **cold key**: one source made by the real ``ExecutionCache.execute`` at the end, no hits.

So a store of size N holds N + 10,002 executions. The bulk is written in batches through the real
MLMD API (``put_contexts``, ``put_artifacts``, ``put_executions``, ``put_events``,
``put_attributions_and_associations``), never raw SQL, with execution records built by the library's
own ``ExecutionCache._execution``. Before each build, a self-check writes a small scenario both with
``ExecutionCache.execute`` and with the batch writer and asserts that the two stores hold the same
records (ids and timestamps aside).

Then, in one process and on one SQLite file, it measures the median of (for the cold and hot key):

(a) ``ExecutionCache.lookup``: the cache lookup with output validation (the hit it returns is the
    key's source; its artifacts are LIVE and their files exist).
(b) a full hit: ``lookup`` + ``reuse`` (validation and the CACHED registration); every sample
    writes one new CACHED execution.
(c) one ``get_executions_by_id`` of one execution (the source): the floor of an MLMD read.
(d) one bare ``put_execution`` of the same shape as ``reuse`` writes (a CACHED execution with the same
    custom properties, INPUT/OUTPUT events as ``(None, Event(artifact_id=...))`` pairs, the pipeline
    and run contexts, ``force_reuse_context=True``): the floor of an MLMD hit registration.
(e) a TFX-style lookup: every execution of the fingerprint fetched with the filter
    ``custom_properties.cache_fingerprint.string_value = '...'``, then filtered (COMPLETE, outputs
    valid) and sorted (newest first) client-side.
(f) one bare indexed SQL query on the same file with Python's ``sqlite3``: the first
    ``ExecutionProperty`` row whose ``cache_fingerprint`` string value is the key's fingerprint
    (``EXPLAIN QUERY PLAN`` must show ``idx_execution_property_string``): the floor of the database.

and prints the ratios a/c, b/d, e/a and a/f with the targets a/c <= 6 and b/d <= 1.5 at every size
for both keys, and, when two sizes are measured, "flat": (a) and (b) grow at most 1.5x from the
smallest to the largest size.

Files (``--dir``, default ``.bench/`` in the repository, which git ignores):
``store-N.sqlite`` is a finished build, reused as is by later runs (delete it, or pass
``--rebuild``, to build again; an interrupted build leaves only ``store-N.sqlite.partial``, which is
never reused). Measurements write (b and d add CACHED executions), so they run on a fresh copy,
``store-N.measure.sqlite``, deleted afterwards: every run measures the same, untouched store.
``files/`` holds the few real files the artifact URIs point to.

Usage::

    python scripts/bench_lookup.py                        # both sizes, 500 samples per median
    python scripts/bench_lookup.py --sizes 10000 --repeat 200
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import click
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlmd_cache import CacheKey, ExecutionCache, Outputs, PipelineRun, Task, TaskExecution, connect  # noqa: E402
from mlmd_cache import records  # noqa: E402
from mlmd_cache.cache import artifact_is_usable  # noqa: E402

BUILD_VERSION = 1
PIPELINES = 8
HOT_HITS = 10_000
RERUN_EVERY = 10  # every 10th run of a pipeline is a fully cached re-run of an earlier run
BATCH_RUNS = 200  # runs per batch of MLMD writes (about 1,000 executions)
SHARED_FILES = 8
BUILD_CONTEXT_TYPE = "mlmd_cache.bench.Build"
DEFAULT_SIZES = (10_000, 1_000_000)
TARGET_A_OVER_C = 6.0
TARGET_B_OVER_D = 1.5
TARGET_FLAT = 1.5
TIME_BUDGET_S = 120.0  # per measurement; a slow one (e on the hot key) stops early, with >= MIN_SAMPLES
MIN_SAMPLES = 20


# -- the pipelines --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    """One task of the benchmark pipelines. ``inputs`` maps an input name to (upstream task, output)."""

    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    inputs: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    output_artifacts: Mapping[str, str] = field(default_factory=dict)
    output_parameters: Mapping[str, str] = field(default_factory=dict)

    def task(self, artifact_ids: Mapping[str, int], run_parameters: Mapping[str, Any] = {}) -> Task:
        key = CacheKey.build(
            image=self.image,
            command=self.command,
            args=self.args,
            input_artifacts={name: [artifact_ids[name]] for name in self.inputs},
            input_parameters={**self.parameters, **run_parameters},
            output_artifacts=self.output_artifacts,
            output_parameters=self.output_parameters,
        )
        return Task(self.name, key)

    def outputs(self, seed: int) -> dict[str, Any]:
        values = {"NUMBER_INTEGER": 1000 + seed % 977, "NUMBER_DOUBLE": (seed % 97) / 97, "BOOLEAN": True,
                  "STRING": f"value-{seed}"}
        return {name: values.get(kind, "") for name, kind in self.output_parameters.items()}


_PY = ("sh", "-c", "python3 -m kfp.dsl.executor_main \"$@\"", "--")
PIPELINE_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("ingest", "gcr.io/bench/ingest:2.1", _PY, ("--executor_input", "{{$}}", "--function_to_execute", "ingest"),
             parameters={"source": "gs://bench-data/raw/events", "sample_rate": 0.25},
             output_artifacts={"dataset": "system.Dataset"}, output_parameters={"rows": "NUMBER_INTEGER"}),
    TaskSpec("validate", "gcr.io/bench/validate:2.1", _PY, ("--executor_input", "{{$}}", "--function_to_execute", "validate"),
             inputs={"dataset": ("ingest", "dataset")},
             output_artifacts={"statistics": "system.Artifact"}, output_parameters={"valid": "BOOLEAN"}),
    TaskSpec("preprocess", "gcr.io/bench/preprocess:2.1", _PY, ("--executor_input", "{{$}}", "--function_to_execute", "preprocess"),
             inputs={"dataset": ("ingest", "dataset")}, parameters={"test_fraction": 0.2, "seed": 42},
             output_artifacts={"train": "system.Dataset", "test": "system.Dataset"}),
    TaskSpec("train", "gcr.io/bench/train:2.1", _PY, ("--executor_input", "{{$}}", "--function_to_execute", "train"),
             inputs={"train": ("preprocess", "train")}, parameters={"learning_rate": 0.01, "epochs": 10},
             output_artifacts={"model": "system.Model"}, output_parameters={"loss": "NUMBER_DOUBLE"}),
    TaskSpec("evaluate", "gcr.io/bench/evaluate:2.1", _PY, ("--executor_input", "{{$}}", "--function_to_execute", "evaluate"),
             inputs={"model": ("train", "model"), "test": ("preprocess", "test")},
             output_artifacts={"metrics": "system.Metrics"}, output_parameters={"accuracy": "NUMBER_DOUBLE"}),
)
HOT_SPEC = TaskSpec("fetch-reference", "gcr.io/bench/reference:1.0", _PY,
                    ("--executor_input", "{{$}}", "--function_to_execute", "fetch_reference"),
                    parameters={"table": "reference.customers", "snapshot": "2024-01-01"},
                    output_artifacts={"reference": "system.Dataset"}, output_parameters={"rows": "NUMBER_INTEGER"})
COLD_SPEC = TaskSpec("train-candidate", "gcr.io/bench/train:2.2", _PY,
                     ("--executor_input", "{{$}}", "--function_to_execute", "train"),
                     inputs={"train": ("fetch-reference", "reference")}, parameters={"learning_rate": 0.003},
                     output_artifacts={"model": "system.Model"}, output_parameters={"loss": "NUMBER_DOUBLE"})
TASKS_PER_RUN = len(PIPELINE_TASKS)


def pipeline_name(index: int) -> str:
    return f"bench-pipeline-{index}"


# -- batched writes, mirroring ExecutionCache.publish and ExecutionCache.reuse --------------------

@dataclass
class TaskRecord:
    """A stored execution that is (or reuses) a cache source, with what a hit on it gives."""

    task: Task
    execution_id: int
    fingerprint: str
    output_artifacts: dict[str, list[int]]
    output_parameters: dict[str, Any]


@dataclass
class FreshRun:
    """A run whose tasks all execute: COMPLETE executions, new artifacts, new cache sources.
    ``context`` is the run's context when it exists already (else the writer creates it)."""

    pipeline: mlmd.Context
    name: str
    seed: int
    context: Optional[mlmd.Context] = None
    records: list[TaskRecord] = field(default_factory=list)


@dataclass
class CachedRun:
    """A run whose tasks all hit: one CACHED execution per source, reusing its artifacts."""

    pipeline: mlmd.Context
    name: str
    sources: Sequence[TaskRecord]
    context: Optional[mlmd.Context] = None


def _event(kind: int, name: str, execution_id: int, artifact_id: int) -> mlmd.Event:
    event = mlmd.Event(type=kind, execution_id=execution_id, artifact_id=artifact_id)
    event.path.steps.add(key=name)
    return event


class BatchWriter:
    """Writes many runs in a few MLMD calls, with the records ``execute``/``publish``/``reuse`` write.

    Per execution: the custom properties of ``ExecutionCache._execution``; INPUT events (path key =
    input name) and OUTPUT events (path key = output name); associations with the pipeline and run
    contexts, plus the ``CacheSource`` context for a COMPLETE one; every artifact an execution's
    events name is attributed to the pipeline and run contexts, and a new output artifact also to
    the ``CacheSource`` context. Run contexts are children of their pipeline context.
    """

    def __init__(self, cache: ExecutionCache, files: Sequence[str], pipeline_root: str) -> None:
        self.cache = cache
        self.store = cache.store
        self.files = list(files)
        self.pipeline_root = pipeline_root
        self._types = records.TypeRegistry(cache.store)

    def write(self, fresh: Sequence[FreshRun], cached: Sequence[CachedRun]) -> None:
        """Write the runs; fills each fresh run's ``records``."""
        store = self.store
        self._put_run_contexts([*fresh, *cached])

        # New output artifacts of the fresh runs, in task order (the order execute() creates them),
        # with the URIs execute_spec() gives them.
        artifacts: list[mlmd.Artifact] = []
        for run in fresh:
            for spec in PIPELINE_TASKS:
                for index, (output, schema) in enumerate(spec.output_artifacts.items()):
                    artifact = mlmd.Artifact(type_id=self._types.artifact_type(schema), state=mlmd.Artifact.LIVE,
                                             uri=self.files[(run.seed + index) % len(self.files)])
                    artifact.custom_properties[records.DISPLAY_NAME].string_value = output
                    artifacts.append(artifact)
        artifact_ids = iter(store.put_artifacts(artifacts)) if artifacts else iter(())

        # Executions: (execution, run, task record, new output artifacts?, input artifact ids by name).
        executions: list[mlmd.Execution] = []
        plan: list[tuple[FreshRun | CachedRun, TaskRecord, bool, dict[str, list[int]]]] = []
        for run in fresh:
            produced: dict[tuple[str, str], int] = {}
            for spec in PIPELINE_TASKS:
                outputs = {name: [next(artifact_ids)] for name in spec.output_artifacts}
                produced.update({(spec.name, name): ids[0] for name, ids in outputs.items()})
                inputs = {name: produced[upstream] for name, upstream in spec.inputs.items()}
                run_parameters = {"date": f"run-{run.seed}"} if spec.name == "ingest" else {}
                task = spec.task(inputs, run_parameters)
                record = TaskRecord(task, 0, task.fingerprint, outputs, spec.outputs(run.seed))
                execution = self.cache._execution(task, mlmd.Execution.COMPLETE, record.fingerprint)
                execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(record.output_parameters))
                executions.append(execution)
                plan.append((run, record, True, task.key.input_artifact_ids))
                run.records.append(record)
        for run in cached:
            for source in run.sources:
                execution = self.cache._execution(source.task, mlmd.Execution.CACHED, source.fingerprint)
                execution.custom_properties[records.CACHED_EXECUTION_ID].string_value = str(source.execution_id)
                execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(source.output_parameters))
                executions.append(execution)
                plan.append((run, source, False, source.task.key.input_artifact_ids))

        # One CacheSource context per fingerprint of a COMPLETE execution, as publish() creates it.
        sources: dict[str, mlmd.Context] = {}
        for run, record, is_source, _ in plan:
            if is_source:
                name = records.cache_source_context_name(run.pipeline.name, record.fingerprint)
                context = mlmd.Context(type_id=self._types.context_type(records.CACHE_SOURCE_CONTEXT_TYPE), name=name)
                context.custom_properties[records.SOURCE_PIPELINE].string_value = run.pipeline.name
                context.custom_properties[records.CACHE_FINGERPRINT].string_value = record.fingerprint
                sources.setdefault(name, context)
        if sources:
            for context, context_id in zip(sources.values(), store.put_contexts(list(sources.values()))):
                context.id = context_id

        execution_ids = store.put_executions(executions)
        events: list[mlmd.Event] = []
        attributions: dict[tuple[int, int], None] = {}
        associations: list[mlmd.Association] = []
        for (run, record, is_source, inputs), execution_id in zip(plan, execution_ids):
            assert run.context is not None
            contexts = [run.pipeline.id, run.context.id]
            for name, ids in inputs.items():
                for artifact_id in ids:
                    events.append(_event(mlmd.Event.INPUT, name, execution_id, artifact_id))
                    attributions.update(((context_id, artifact_id), None) for context_id in contexts)
            output_contexts = contexts
            if is_source:
                record.execution_id = execution_id
                output_contexts = [*contexts, sources[records.cache_source_context_name(run.pipeline.name,
                                                                                        record.fingerprint)].id]
            for name, ids in record.output_artifacts.items():
                for artifact_id in ids:
                    events.append(_event(mlmd.Event.OUTPUT, name, execution_id, artifact_id))
                    attributions.update(((context_id, artifact_id), None) for context_id in output_contexts)
            associations.extend(mlmd.Association(context_id=context_id, execution_id=execution_id)
                                for context_id in output_contexts)
        store.put_events(events)
        store.put_attributions_and_associations(
            [mlmd.Attribution(context_id=context_id, artifact_id=artifact_id) for context_id, artifact_id in attributions],
            associations,
        )

    def _put_run_contexts(self, runs: Sequence[FreshRun | CachedRun]) -> None:
        """Create the missing ``system.PipelineRun`` contexts as ``ExecutionCache.pipeline_run``
        does (a child of the pipeline context) and set every run's ``context``."""
        new = []
        for run in runs:
            if run.context is None:
                context = mlmd.Context(type_id=self._types.context_type(records.RUN_CONTEXT_TYPE), name=run.name)
                if self.pipeline_root:
                    context.custom_properties[records.PIPELINE_ROOT].string_value = self.pipeline_root
                new.append((run, context))
        if new:
            for (run, context), context_id in zip(new, self.store.put_contexts([c for _, c in new])):
                context.id = context_id
                run.context = context
            self.store.put_parent_contexts([mlmd.ParentContext(child_id=context.id, parent_id=run.pipeline.id)
                                            for run, context in new])


def record_of(result: TaskExecution) -> TaskRecord:
    """The TaskRecord of an execution written by ``ExecutionCache.execute``."""
    return TaskRecord(result.task, result.id, result.task.fingerprint, result.output_artifact_ids,
                      dict(result.output_parameters))


def execute_spec(cache: ExecutionCache, run: PipelineRun, spec: TaskSpec, inputs: Mapping[str, int],
                 files: Sequence[str], seed: int, run_parameters: Mapping[str, Any] = {}) -> TaskExecution:
    """Run one task through the real ``ExecutionCache.execute`` (a hit when one is valid)."""
    outputs = Outputs(artifacts={name: files[(seed + i) % len(files)] for i, name in enumerate(spec.output_artifacts)},
                      parameters=spec.outputs(seed))
    return cache.execute(run, spec.task(inputs, run_parameters), lambda started: outputs)


