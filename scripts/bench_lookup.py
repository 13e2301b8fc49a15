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
    """A run whose tasks all execute: COMPLETE executions, new artifacts, new cache sources."""

    pipeline: mlmd.Context
    name: str
    seed: int
    records: list[TaskRecord] = field(default_factory=list)


@dataclass
class CachedRun:
    """A run whose tasks all hit: one CACHED execution per source, reusing its artifacts."""

    pipeline: mlmd.Context
    name: str
    sources: Sequence[TaskRecord]


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
        self._artifact_count = 0

    def write(self, fresh: Sequence[FreshRun], cached: Sequence[CachedRun]) -> None:
        """Write the runs; fills each fresh run's ``records``."""
        store = self.store
        run_contexts = self._put_run_contexts([*fresh, *cached])

        # New output artifacts of the fresh runs, in task order (the order execute() creates them).
        artifacts: list[mlmd.Artifact] = []
        for run in fresh:
            for spec in PIPELINE_TASKS:
                for output, schema in spec.output_artifacts.items():
                    artifact = mlmd.Artifact(type_id=self._types.artifact_type(schema), state=mlmd.Artifact.LIVE,
                                             uri=self.files[self._artifact_count % len(self.files)])
                    artifact.custom_properties[records.DISPLAY_NAME].string_value = output
                    artifacts.append(artifact)
                    self._artifact_count += 1
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
            contexts = [run.pipeline.id, run_contexts[run.name].id]
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

    def _put_run_contexts(self, runs: Sequence[FreshRun | CachedRun]) -> dict[str, mlmd.Context]:
        """The ``system.PipelineRun`` contexts, as ``ExecutionCache.pipeline_run`` creates them."""
        contexts = []
        for run in runs:
            context = mlmd.Context(type_id=self._types.context_type(records.RUN_CONTEXT_TYPE), name=run.name)
            if self.pipeline_root:
                context.custom_properties[records.PIPELINE_ROOT].string_value = self.pipeline_root
            contexts.append(context)
        if not contexts:
            return {}
        for context, context_id in zip(contexts, self.store.put_contexts(contexts)):
            context.id = context_id
        self.store.put_parent_contexts([mlmd.ParentContext(child_id=context.id, parent_id=run.pipeline.id)
                                        for context, run in zip(contexts, runs)])
        return {context.name: context for context in contexts}


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


# -- building a store -----------------------------------------------------------------------------

def shared_files(directory: Path) -> list[str]:
    """A few real files, shared by all artifacts (their URIs must exist for validation)."""
    root = directory / "files"
    root.mkdir(parents=True, exist_ok=True)
    uris = []
    for index in range(SHARED_FILES):
        path = root / f"artifact-{index}"
        if not path.exists():
            path.write_text(f"bench artifact {index}\n")
        uris.append(path.resolve().as_uri())
    return uris


def progress(length: int, label: str):
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True, show_eta=True, width=30)


def build_store(path: Path, size: int, files: Sequence[str]) -> dict[str, Any]:
    """Build a store of ``size`` bulk executions plus the hot and cold keys; returns its metadata."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    cache = ExecutionCache(connect(f"sqlite:///{partial}"))
    pipeline_root = Path(files[0]).parent.as_uri() if "://" not in files[0] else files[0].rsplit("/", 1)[0]
    writer = BatchWriter(cache, files, pipeline_root)
    pipelines = [cache.pipeline_run(pipeline_name(p), str(uuid.uuid4()), pipeline_root=pipeline_root)
                 for p in range(PIPELINES)]
    hot_pipeline = pipelines[0].pipeline_context

    # The hot key's source, through the real execute().
    hot_run = cache.pipeline_run(pipeline_name(0), str(uuid.uuid4()), pipeline_root=pipeline_root)
    hot = execute_spec(cache, hot_run, HOT_SPEC, {}, files, seed=1)
    hot_record = record_of(hot)

    runs = size // TASKS_PER_RUN
    batches = max(1, math.ceil(runs / BATCH_RUNS))
    previous: dict[int, list[TaskRecord]] = {}  # pipeline -> records of its last fresh run of a past batch
    counters = [0] * PIPELINES
    hits_written = 0
    with progress(runs * TASKS_PER_RUN + HOT_HITS, f"building {size:,}") as bar:
        for batch in range(batches):
            fresh: list[FreshRun] = []
            cached: list[CachedRun] = []
            for index in range(batch * BATCH_RUNS, min(runs, (batch + 1) * BATCH_RUNS)):
                p = index % PIPELINES
                counters[p] += 1
                context = pipelines[p].pipeline_context
                if counters[p] % RERUN_EVERY == 0 and p in previous:
                    cached.append(CachedRun(context, str(uuid.uuid4()), previous[p]))
                else:
                    fresh.append(FreshRun(context, str(uuid.uuid4()), seed=index))
            hits = HOT_HITS * (batch + 1) // batches - hits_written
            cached.extend(CachedRun(hot_pipeline, str(uuid.uuid4()), [hot_record]) for _ in range(hits))
            writer.write(fresh, cached)
            hits_written += hits
            for run in fresh:
                previous[PIPELINES and int(run.pipeline.name.rsplit("-", 1)[1])] = run.records
            bar.update(sum(len(run.sources) for run in cached) + TASKS_PER_RUN * len(fresh))

    # The cold key's source, through the real execute(): a newer task reading the hot key's output.
    cold_run = cache.pipeline_run(pipeline_name(0), str(uuid.uuid4()), pipeline_root=pipeline_root)
    cold = execute_spec(cache, cold_run, COLD_SPEC, {"train": hot_record.output_artifacts["reference"][0]}, files, seed=2)
    meta = {
        "version": BUILD_VERSION,
        "size": size,
        "pipeline": pipeline_name(0),
        "keys": {
            "cold": {"task": cold.task.name, "key": cold.task.key.to_json(), "source": cold.id, "hits": 0},
            "hot": {"task": hot.task.name, "key": hot.task.key.to_json(), "source": hot.id, "hits": HOT_HITS},
        },
        "executions": runs * TASKS_PER_RUN + HOT_HITS + 2,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    marker = mlmd.Context(type_id=cache._types.context_type(BUILD_CONTEXT_TYPE), name=f"v{BUILD_VERSION}")
    marker.custom_properties["meta"].string_value = json.dumps(meta)
    cache.store.put_contexts([marker])
    del writer, cache
    gc.collect()
    os.replace(partial, path)
    return meta


def read_meta(path: Path) -> Optional[dict[str, Any]]:
    """The metadata of a finished build of this version, or None."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT p.string_value FROM Context c JOIN Type t ON t.id = c.type_id "
                "JOIN ContextProperty p ON p.context_id = c.id AND p.name = 'meta' "
                "WHERE t.name = ? AND c.name = ?", (BUILD_CONTEXT_TYPE, f"v{BUILD_VERSION}")).fetchone()
    except sqlite3.Error:
        return None
    return json.loads(row[0]) if row else None


# -- the shape self-check -------------------------------------------------------------------------

def _canonical(store: metadata_store.MetadataStore) -> dict[str, Any]:
    """A store's records with ids replaced by names and timestamps dropped."""
    type_names = {t.id: t.name for t in [*store.get_execution_types(), *store.get_artifact_types(),
                                         *store.get_context_types()]}
    contexts = {c.id: (type_names[c.type_id], c.name) for c in store.get_contexts()}
    executions = store.get_executions()
    artifacts = {a.id: a for a in store.get_artifacts()}

    def properties(node: Any) -> dict[str, Any]:
        return {name: records.read_property(node, name) for name in node.custom_properties}

    def execution_name(execution_id: int) -> tuple[Any, ...]:
        execution = next(e for e in executions if e.id == execution_id)
        runs = [contexts[c.id][1] for c in store.get_contexts_by_execution(execution_id)
                if contexts[c.id][0] == records.RUN_CONTEXT_TYPE]
        return (runs[0], records.read_property(execution, records.TASK_NAME))

    result_executions = []
    for execution in executions:
        props = properties(execution)
        if records.CACHED_EXECUTION_ID in props:
            props[records.CACHED_EXECUTION_ID] = execution_name(int(props[records.CACHED_EXECUTION_ID]))
        events = sorted((e.type, tuple(s.key for s in e.path.steps), e.artifact_id)
                        for e in store.get_events_by_execution_ids([execution.id]))
        result_executions.append((execution_name(execution.id), type_names[execution.type_id],
                                  execution.last_known_state, sorted(props.items(), key=lambda kv: kv[0]),
                                  sorted(contexts[c.id] for c in store.get_contexts_by_execution(execution.id)), events))
    return {
        "executions": sorted(result_executions, key=repr),
        "artifacts": sorted((a.id, type_names[a.type_id], a.uri, a.state, sorted(properties(a).items()),
                             sorted(contexts[c.id] for c in store.get_contexts_by_artifact(a.id)))
                            for a in artifacts.values()),
        "contexts": sorted((contexts[c.id], sorted(properties(c).items()),
                            sorted(contexts[p.id] for p in store.get_parent_contexts_by_context(c.id)))
                           for c in store.get_contexts()),
    }


def check_shape(directory: Path, files: Sequence[str]) -> None:
    """Write one scenario with ExecutionCache.execute and with BatchWriter; the records must match.

    Scenario: in pipeline P, run A executes all tasks, run B re-runs A (every task hits), run H
    executes the hot task, runs H1 and H2 hit it, run C executes the cold task (input from H's output).
    Run names are fixed and each store is fresh, so ids of artifacts (part of cache keys) line up.
    """
    scratch = directory / "shape-check"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    root = "file:///bench-root"
    try:
        real = ExecutionCache(connect(f"sqlite:///{scratch / 'real.sqlite'}"))
        pipeline = real.pipeline_run("P", "A", pipeline_root=root)
        hot = execute_spec(real, real.pipeline_run("P", "H", pipeline_root=root), HOT_SPEC, {}, files, seed=0)
        for run_name in ("H1", "H2"):
            assert execute_spec(real, real.pipeline_run("P", run_name, pipeline_root=root), HOT_SPEC, {}, files,
                                seed=0).state == "CACHED"
        for run_name in ("A", "B"):
            run = real.pipeline_run("P", run_name, pipeline_root=root)
            produced: dict[tuple[str, str], int] = {}
            for spec in PIPELINE_TASKS:
                result = execute_spec(real, run, spec, {n: produced[u] for n, u in spec.inputs.items()}, files,
                                      seed=7, run_parameters={"date": "run-7"} if spec.name == "ingest" else {})
                assert result.state == ("COMPLETE" if run_name == "A" else "CACHED"), (run_name, spec.name)
                produced.update({(spec.name, n): ids[0] for n, ids in result.output_artifact_ids.items()})
        execute_spec(real, real.pipeline_run("P", "C", pipeline_root=root), COLD_SPEC,
                     {"train": hot.output_artifact_ids["reference"][0]}, files, seed=0)

        batched = ExecutionCache(connect(f"sqlite:///{scratch / 'batched.sqlite'}"))
        writer = BatchWriter(batched, files, root)
        context = batched.pipeline_run("P", "A", pipeline_root=root).pipeline_context
        hot_b = execute_spec(batched, batched.pipeline_run("P", "H", pipeline_root=root), HOT_SPEC, {}, files, seed=0)
        writer.write([], [CachedRun(context, name, [record_of(hot_b)]) for name in ("H1", "H2")])
        # Run A's context exists already (pipeline_run above), so write its records under a temporary
        # name and compare by contents: the batch writer always creates the run context itself.
        writer._artifact_count = 1  # A's artifacts follow H's one, in the real store's file rotation
        run_a = FreshRun(context, "A'", seed=7)
        writer.write([run_a], [])
        writer.write([], [CachedRun(context, "B", run_a.records)])
        execute_spec(batched, batched.pipeline_run("P", "C", pipeline_root=root), COLD_SPEC,
                     {"train": hot_b.output_artifact_ids["reference"][0]}, files, seed=0)
        expected, got = _canonical(real.store), _canonical(batched.store)
        got_text = json.dumps(got, sort_keys=True, default=str).replace('"A\'"', '"A"')
        if json.dumps(expected, sort_keys=True, default=str) != got_text:
            for name in expected:
                a, b = json.dumps(expected[name], default=str), json.dumps(got[name], default=str).replace('"A\'"', '"A"')
                if a != b:
                    print(f"shape check: {name} differ\n  execute(): {a}\n  batched:   {b}", file=sys.stderr)
            raise SystemExit("shape check failed: the batch writer does not write what ExecutionCache writes")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
