#!/usr/bin/env python
"""The benchmarks' store builder: KFP-shaped SQLite MLMD stores of any size, written fast and checked
to hold exactly what the real :class:`ExecutionCache` writes. Shared by ``scripts/bench_lookup.py``,
``scripts/bench_lineage.py`` and the other benchmarks (import it with ``scripts/`` on ``sys.path``).

A store of size N (:func:`build_store`) holds:

* N executions of KFP-shaped pipeline runs: 8 pipelines, 5 ``system.ContainerExecution`` tasks per
  run (ingest -> validate, preprocess -> train -> evaluate) with KFP's custom properties
  (``display_name``, ``task_name``, ``image``, ``inputs``, ``outputs``, ``cache_fingerprint``,
  ``mlmd_cache_key``), associated with their ``system.Pipeline`` and ``system.PipelineRun``
  contexts; LIVE output artifacts with OUTPUT events keyed by output name, INPUT events from the
  upstream outputs; every COMPLETE execution associated with its ``mlmd_cache.CacheSource`` context,
  as :meth:`ExecutionCache.publish` does. Every 10th run of a pipeline is a fully cached re-run of
  an earlier run (5 CACHED executions with ``cached_execution_id``, as :meth:`ExecutionCache.reuse`
  writes them).
* a **hot key**: one source made by the real ``ExecutionCache.execute`` at the start, and
  ``hot_hits`` (default 10,000) CACHED hits of it (each in its own run), spread over the whole build;
* a **cold key**: one source made by the real ``ExecutionCache.execute`` at the end, no hits.

So a store of size N holds N + hot_hits + 2 executions. The bulk is written in batches through the
real MLMD API (``put_contexts``, ``put_artifacts``, ``put_executions``, ``put_events``,
``put_attributions_and_associations``), never raw SQL: sources' execution records are built by the
library's own ``ExecutionCache._execution``, and a CACHED one copies its source's custom properties
and adds ``cached_execution_id``, as ``reuse`` does. :func:`check_shape` writes a small scenario
both with ``ExecutionCache.execute`` and with the batch writer and asserts that the two stores hold
the same records (ids and timestamps aside); :func:`ensure_store` runs it before any build.

A finished build is ``<path>`` (an interrupted one leaves only ``<path>.partial``, never reused);
:func:`read_meta` reads its keys back. ``files/`` beside the stores holds the few real files the
artifact URIs point to (:func:`shared_files`).

Also here, for every benchmark: :func:`sample` (interleaved timing, GC off) and :class:`Timing`,
:func:`parse_counts`, :func:`status`, :func:`us`, :func:`verdict`, and :func:`serving` (an
``mlmd-cache serve`` subprocess).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlmd_cache import CacheKey, ExecutionCache, Outputs, PipelineRun, Task, TaskExecution, connect  # noqa: E402
from mlmd_cache.store import records  # noqa: E402
from mlmd_cache.cache import writes  # noqa: E402
from mlmd_cache.cache.recovery import RUNNER, runner_identity  # noqa: E402

BUILD_VERSION = 2  # 2: sources carry the ``runner`` property, as start() writes it since recovery
PIPELINES = 8
HOT_HITS = 10_000
RERUN_EVERY = 10  # every 10th run of a pipeline is a fully cached re-run of an earlier run
BATCH_RUNS = 200  # runs per batch of MLMD writes (about 1,000 executions)
SHARED_FILES = 8
BUILD_CONTEXT_TYPE = "mlmd_cache.bench.Build"
TIME_BUDGET_S = 120.0  # per measurement; a slow one stops early, with >= MIN_SAMPLES
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

    def task(self, artifact_ids: Mapping[str, int], run_parameters: Optional[Mapping[str, Any]] = None) -> Task:
        key = CacheKey.build(
            image=self.image,
            command=self.command,
            args=self.args,
            input_artifacts={name: [artifact_ids[name]] for name in self.inputs},
            input_parameters={**self.parameters, **(run_parameters or {})},
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
ARTIFACTS_PER_RUN = sum(len(spec.output_artifacts) for spec in PIPELINE_TASKS)


def pipeline_name(index: int) -> str:
    return f"bench-pipeline-{index}"


# -- batched writes, mirroring ExecutionCache.publish and ExecutionCache.reuse --------------------

@dataclass
class TaskRecord:
    """A cache source as the batch writer needs it: its execution as stored (type and custom
    properties, ``outputs`` included), its id once written, and its events' artifacts by name."""

    execution: mlmd.Execution
    fingerprint: str
    output_artifacts: dict[str, list[int]]
    input_artifacts: dict[str, list[int]]
    execution_id: int = 0
    _cached: Optional[mlmd.Execution] = field(default=None, repr=False, compare=False)

    def cached_execution(self) -> mlmd.Execution:
        """The CACHED execution ``ExecutionCache.reuse`` records for a hit on this source: the same
        custom properties (``outputs`` included) but ``runner``, plus ``cached_execution_id``."""
        if self._cached is None:
            assert self.execution_id, "the source is not written yet"
            cached = mlmd.Execution(type_id=self.execution.type_id, last_known_state=mlmd.Execution.CACHED)
            for name, value in self.execution.custom_properties.items():
                if name != RUNNER:  # reuse() records no runner: a CACHED execution never runs
                    cached.custom_properties[name].CopyFrom(value)
            cached.custom_properties[records.CACHED_EXECUTION_ID].string_value = str(self.execution_id)
            self._cached = cached
        return self._cached

    @classmethod
    def of(cls, result: TaskExecution) -> "TaskRecord":
        """The record of a COMPLETE execution written by ``ExecutionCache.execute``."""
        execution = mlmd.Execution(type_id=result.execution.type_id, last_known_state=mlmd.Execution.COMPLETE)
        for name, value in result.execution.custom_properties.items():
            execution.custom_properties[name].CopyFrom(value)
        return cls(execution, result.task.fingerprint, result.output_artifact_ids, result.task.key.input_artifact_ids,
                   result.id)


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


def prepare_runs(cache: ExecutionCache, seeds: Sequence[int], first_artifact_id: int) -> list[list[TaskRecord]]:
    """The records of fresh runs (by seed) whose new output artifacts will get consecutive ids from
    ``first_artifact_id``, in task order: cache keys, fingerprints and executions built with the
    library's own ``ExecutionCache._execution``, as ``start`` + ``publish`` store them."""
    next_id = first_artifact_id
    runs = []
    for seed in seeds:
        produced: dict[tuple[str, str], int] = {}
        run = []
        for spec in PIPELINE_TASKS:
            outputs = {}
            for name in spec.output_artifacts:
                outputs[name], produced[(spec.name, name)] = [next_id], next_id
                next_id += 1
            task = spec.task({name: produced[upstream] for name, upstream in spec.inputs.items()},
                             ingest_parameters(spec, seed))
            fingerprint = task.fingerprint
            execution = writes.task_execution(cache.store, cache.types, task, mlmd.Execution.COMPLETE, fingerprint)
            execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(spec.outputs(seed)))
            run.append(TaskRecord(execution, fingerprint, outputs, task.key.input_artifact_ids))
        runs.append(run)
    return runs


_WORKER_CACHE: Optional[ExecutionCache] = None


def _prepare_in_worker(seeds: Sequence[int], first_artifact_id: int) -> list[list[TaskRecord]]:
    """:func:`prepare_runs` in a worker process, over a throwaway in-memory store (only its type
    ids differ; the writer sets the real ones)."""
    global _WORKER_CACHE
    if _WORKER_CACHE is None:
        config = mlmd.ConnectionConfig(fake_database=mlmd.FakeDatabaseConfig())
        _WORKER_CACHE = ExecutionCache(metadata_store.MetadataStore(config))
    return prepare_runs(_WORKER_CACHE, seeds, first_artifact_id)


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
        self.store = cache.store
        self.files = list(files)
        self.pipeline_root = pipeline_root
        self._types = records.TypeRegistry(cache.store)
        newest = self.store.get_artifacts(list_options=metadata_store.ListOptions(
            limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
        self.next_artifact_id = newest[0].id + 1 if newest else 1

    def write(self, fresh: Sequence[FreshRun], cached: Sequence[CachedRun]) -> None:
        """Write the runs. Each fresh run's ``records`` come from :func:`prepare_runs` with
        ``first_artifact_id=self.next_artifact_id`` (the ids MLMD will give, which is checked)."""
        store = self.store
        self._put_run_contexts([*fresh, *cached])
        execution_type = self._types.execution_type(records.CONTAINER_EXECUTION_TYPE)

        # New output artifacts, in task order (the order execute() creates them), with the URIs
        # execute_spec() gives them.
        artifacts: list[mlmd.Artifact] = []
        for run in fresh:
            for spec in PIPELINE_TASKS:
                for index, (output, schema) in enumerate(spec.output_artifacts.items()):
                    artifact = mlmd.Artifact(type_id=self._types.artifact_type(schema), state=mlmd.Artifact.LIVE,
                                             uri=self.files[(run.seed + index) % len(self.files)])
                    artifact.custom_properties[records.DISPLAY_NAME].string_value = output
                    artifacts.append(artifact)
        if artifacts:
            ids = store.put_artifacts(artifacts)
            expected = list(range(self.next_artifact_id, self.next_artifact_id + len(artifacts)))
            if ids != expected or [i for run in fresh for r in run.records for v in r.output_artifacts.values()
                                   for i in v] != expected:
                raise RuntimeError("artifact ids are not the predicted ones (another writer on the store?)")
            self.next_artifact_id += len(artifacts)

        # Executions, with the run, the record and whether it is a cache source (COMPLETE).
        executions: list[mlmd.Execution] = []
        plan: list[tuple[FreshRun | CachedRun, TaskRecord, bool]] = []
        runner = runner_identity()  # the writing process, as start() records it (not the worker's)
        for run in fresh:
            for record in run.records:
                record.execution.type_id = execution_type
                record.execution.custom_properties[RUNNER].string_value = runner
                executions.append(record.execution)
                plan.append((run, record, True))
        for run in cached:
            for source in run.sources:
                executions.append(source.cached_execution())
                plan.append((run, source, False))

        # One CacheSource context per fingerprint of a COMPLETE execution, as publish() creates it.
        sources: dict[str, mlmd.Context] = {}
        for run, record, is_source in plan:
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
        for (run, record, is_source), execution_id in zip(plan, execution_ids):
            assert run.context is not None
            contexts = [run.pipeline.id, run.context.id]
            for name, ids in record.input_artifacts.items():
                for artifact_id in ids:
                    events.append(_event(mlmd.Event.INPUT, name, execution_id, artifact_id))
                    attributions.update(((context_id, artifact_id), None) for context_id in contexts)
            output_contexts = contexts
            if is_source:
                record.execution_id = execution_id
                name = records.cache_source_context_name(run.pipeline.name, record.fingerprint)
                output_contexts = [*contexts, sources[name].id]
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


def execute_spec(cache: ExecutionCache, run: PipelineRun, spec: TaskSpec, inputs: Mapping[str, int],
                 files: Sequence[str], seed: int, run_parameters: Optional[Mapping[str, Any]] = None) -> TaskExecution:
    """Run one task through the real ``ExecutionCache.execute`` (a hit when a valid source exists),
    with the artifact URIs and output values the batch writer gives a fresh run of the same seed.
    Without dedup: the batch writer writes no ``mlmd_cache.Reservation`` contexts, which no lookup
    reads (a race of runs, the one thing they are for, is measured by scripts/bench_dedup.py)."""
    outputs = Outputs(artifacts={name: files[(seed + i) % len(files)] for i, name in enumerate(spec.output_artifacts)},
                      parameters=spec.outputs(seed))
    return cache.execute(run, spec.task(inputs, run_parameters), lambda started: outputs, dedup=False)


def ingest_parameters(spec: TaskSpec, seed: int) -> dict[str, Any]:
    """The run-specific input of a pipeline run (its first task's date): what makes keys differ."""
    return {"date": f"run-{seed}"} if spec.name == "ingest" else {}


# -- building a store -----------------------------------------------------------------------------

def shared_files(directory: Path) -> list[str]:
    """A few real files, shared by all artifacts (``file://`` URIs that validation finds)."""
    root = directory / "files"
    root.mkdir(parents=True, exist_ok=True)
    uris = []
    for index in range(SHARED_FILES):
        path = root / f"artifact-{index}"
        if not path.exists():
            path.write_text(f"bench artifact {index}\n")
        uris.append(path.resolve().as_uri())
    return uris


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 5% otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._next_line = 0.0
        self._draw()

    def update(self, count: int) -> None:
        self.done += count
        self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self.started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        bar = "#" * int(30 * fraction)
        text = (f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} {fraction:5.1%} "
                f"{elapsed:6.0f} s elapsed, ETA {eta:4.0f} s")
        if self.tty:
            print("\r" + text, end="\n" if self.done >= self.total else "", file=sys.stderr, flush=True)
        elif fraction >= self._next_line or self.done >= self.total:
            print(text, file=sys.stderr, flush=True)
            self._next_line = math.floor(fraction * 20 + 1) / 20


def build_store(path: Path, size: int, files: Sequence[str], hot_hits: int = HOT_HITS) -> dict[str, Any]:
    """Build a store of ``size`` bulk executions plus the hot and cold keys (the hot one with
    ``hot_hits`` CACHED hits); returns its metadata.

    The store is written as ``<path>.partial`` and renamed when complete, after a marker context
    (type ``mlmd_cache.bench.Build``) recording the keys and the build time.
    """
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    meta = _write_store(partial, path.parent, size, files, hot_hits)
    gc.collect()  # the store is closed once its last reference is gone
    os.replace(partial, path)
    return meta


def _write_store(target: Path, directory: Path, size: int, files: Sequence[str], hot_hits: int) -> dict[str, Any]:
    """Runs are written in batches of BATCH_RUNS; a worker process prepares the records of the next
    batch (cache keys and fingerprints cost half as much time as MLMD's writes, and the MLMD calls
    hold the GIL) while this one writes."""
    started = time.perf_counter()
    cache = ExecutionCache(connect(f"sqlite:///{target}"))
    pipeline_root = (directory / "pipeline-root").resolve().as_uri()

    def new_run(pipeline: int) -> PipelineRun:
        return cache.pipeline_run(pipeline_name(pipeline), str(uuid.uuid4()), pipeline_root=pipeline_root)

    # The hot key's source, through the real execute(), before everything else.
    hot = execute_spec(cache, new_run(0), HOT_SPEC, {}, files, seed=1)
    hot_record = TaskRecord.of(hot)
    firsts = [new_run(p) for p in range(PIPELINES)]  # each pipeline's first run, written fresh below
    writer = BatchWriter(cache, files, pipeline_root)

    # The schedule: which runs of each batch are fresh (by pipeline and seed) and which re-run the
    # pipeline's last fresh run of an earlier batch; the hot key's hits spread evenly over the batches.
    runs = size // TASKS_PER_RUN
    batches = max(1, math.ceil(runs / BATCH_RUNS))
    schedule: list[tuple[list[tuple[int, int]], list[int], int]] = []
    counters, rerunnable, hits_so_far = [0] * PIPELINES, [False] * PIPELINES, 0
    for batch in range(batches):
        fresh_plan, rerun_plan = [], []
        for index in range(batch * BATCH_RUNS, min(runs, (batch + 1) * BATCH_RUNS)):
            p = index % PIPELINES
            counters[p] += 1
            (rerun_plan.append(p) if counters[p] % RERUN_EVERY == 0 and rerunnable[p]
             else fresh_plan.append((p, index)))
        hits = hot_hits * (batch + 1) // batches - hits_so_far
        hits_so_far += hits
        schedule.append((fresh_plan, rerun_plan, hits))
        for p, _ in fresh_plan:
            rerunnable[p] = True

    previous: dict[int, list[TaskRecord]] = {}  # pipeline -> records of its last fresh run written
    started_pipelines: set[int] = set()
    progress = Progress(runs * TASKS_PER_RUN + hot_hits, f"building {size:,} (+{hot_hits:,} hot hits)")
    first_ids = [writer.next_artifact_id]
    for fresh_plan, _, _ in schedule:
        first_ids.append(first_ids[-1] + len(fresh_plan) * ARTIFACTS_PER_RUN)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        def submit(batch: int):
            return pool.apply_async(_prepare_in_worker, ([seed for _, seed in schedule[batch][0]], first_ids[batch]))

        pending = submit(0)
        for batch, (fresh_plan, rerun_plan, hits) in enumerate(schedule):
            prepared = pending.get()
            if batch + 1 < batches:
                pending = submit(batch + 1)
            fresh = []
            for (p, seed), run_records in zip(fresh_plan, prepared):
                first = None if p in started_pipelines else firsts[p].run_context
                started_pipelines.add(p)
                fresh.append((p, FreshRun(firsts[p].pipeline_context, first.name if first else str(uuid.uuid4()),
                                          seed, first, run_records)))
            cached = [CachedRun(firsts[p].pipeline_context, str(uuid.uuid4()), previous[p]) for p in rerun_plan]
            cached += [CachedRun(firsts[0].pipeline_context, str(uuid.uuid4()), [hot_record]) for _ in range(hits)]
            writer.write([run for _, run in fresh], cached)
            previous.update((p, run.records) for p, run in fresh)
            progress.update(TASKS_PER_RUN * (len(fresh) + len(rerun_plan)) + hits)

    # The cold key's source, through the real execute(), after everything else: a task that reads
    # the hot key's output (an INPUT event from another run, as a cached upstream gives).
    cold = execute_spec(cache, new_run(0), COLD_SPEC, {"train": hot_record.output_artifacts["reference"][0]},
                        files, seed=2)
    meta = {
        "version": BUILD_VERSION,
        "size": size,
        "executions": runs * TASKS_PER_RUN + hot_hits + 2,
        "pipeline": pipeline_name(0),
        "keys": {
            "cold": {"task": cold.task.name, "key": cold.task.key.to_json(), "source": cold.id, "hits": 0},
            "hot": {"task": hot.task.name, "key": hot.task.key.to_json(), "source": hot.id, "hits": hot_hits},
        },
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    marker = mlmd.Context(type_id=records.TypeRegistry(cache.store).context_type(BUILD_CONTEXT_TYPE),
                          name=f"v{BUILD_VERSION}")
    marker.custom_properties["meta"].string_value = json.dumps(meta)
    cache.store.put_contexts([marker])
    return meta


def read_meta(path: Path) -> Optional[dict[str, Any]]:
    """The metadata of a finished build of this version at ``path``, or None."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT p.string_value FROM Context c JOIN Type t ON t.id = c.type_id "
                "JOIN ContextProperty p ON p.context_id = c.id AND p.name = 'meta' "
                "WHERE t.name = ? AND c.name = ?", (BUILD_CONTEXT_TYPE, f"v{BUILD_VERSION}")).fetchall()
    except sqlite3.Error:
        return None
    return json.loads(row[0][0]) if row else None


# -- the shape self-check -------------------------------------------------------------------------

def canonical_records(store: metadata_store.MetadataStore) -> dict[str, Any]:
    """Everything in a small store, with execution and context ids replaced by names and the
    timestamps left out (artifact ids are kept: they are part of cache keys)."""
    type_names = {t.id: t.name for t in [*store.get_execution_types(), *store.get_artifact_types(),
                                         *store.get_context_types()]}
    contexts = {c.id: c for c in store.get_contexts()}
    executions = {e.id: e for e in store.get_executions()}

    def context_name(context_id: int) -> str:
        return f"{type_names[contexts[context_id].type_id]}:{contexts[context_id].name}"

    def properties(node: Any) -> list[tuple[str, Any]]:
        return sorted((name, records.read_property(node, name)) for name in node.custom_properties)

    def execution_name(execution_id: int) -> str:
        run = [context_name(c.id) for c in store.get_contexts_by_execution(execution_id)
               if type_names[c.type_id] == records.RUN_CONTEXT_TYPE]
        return f"{run[0]}/{records.read_property(executions[execution_id], records.TASK_NAME)}"

    def execution_record(execution: mlmd.Execution) -> list[Any]:
        props = [(name, execution_name(int(value)) if name == records.CACHED_EXECUTION_ID else value)
                 for name, value in properties(execution)]
        events = sorted([e.type, [s.key for s in e.path.steps], e.artifact_id]
                        for e in store.get_events_by_execution_ids([execution.id]))
        return [execution_name(execution.id), type_names[execution.type_id], execution.last_known_state, props,
                sorted(context_name(c.id) for c in store.get_contexts_by_execution(execution.id)), events]

    return {
        "executions": sorted((execution_record(e) for e in executions.values()), key=repr),
        "artifacts": sorted([a.id, type_names[a.type_id], a.uri, a.state, properties(a),
                             sorted(context_name(c.id) for c in store.get_contexts_by_artifact(a.id))]
                            for a in store.get_artifacts()),
        "contexts": sorted([context_name(c.id), properties(c),
                            sorted(context_name(p.id) for p in store.get_parent_contexts_by_context(c.id))]
                           for c in contexts.values()),
    }


def check_shape(directory: Path, files: Sequence[str]) -> None:
    """Write one scenario with ``ExecutionCache.execute`` and with :class:`BatchWriter`: the records
    must be the same. In pipeline P: run H executes the hot task, runs H1 and H2 hit it; run A
    executes the five pipeline tasks, run B re-runs A (every task hits); run C executes the cold task
    on H's output. Both stores are fresh and written in the same order, so artifact ids line up."""
    scratch = directory / "shape-check"
    shutil.rmtree(scratch, ignore_errors=True)
    root = "file:///bench/pipeline-root"
    try:
        real = ExecutionCache(connect(f"sqlite:///{scratch / 'execute.sqlite'}"))
        hot = execute_spec(real, real.pipeline_run("P", "H", pipeline_root=root), HOT_SPEC, {}, files, seed=0)
        for name in ("H1", "H2"):
            hit = execute_spec(real, real.pipeline_run("P", name, pipeline_root=root), HOT_SPEC, {}, files, seed=0)
            assert hit.state == "CACHED"
        for name in ("A", "B"):
            run = real.pipeline_run("P", name, pipeline_root=root)
            produced: dict[tuple[str, str], int] = {}
            for spec in PIPELINE_TASKS:
                result = execute_spec(real, run, spec, {n: produced[u] for n, u in spec.inputs.items()}, files,
                                      seed=7, run_parameters=ingest_parameters(spec, 7))
                assert result.state == ("COMPLETE" if name == "A" else "CACHED"), (name, spec.name, result.state)
                produced.update({(spec.name, n): ids[0] for n, ids in result.output_artifact_ids.items()})
        execute_spec(real, real.pipeline_run("P", "C", pipeline_root=root), COLD_SPEC,
                     {"train": hot.output_artifact_ids["reference"][0]}, files, seed=0)

        batched = ExecutionCache(connect(f"sqlite:///{scratch / 'batched.sqlite'}"))
        hot_run = batched.pipeline_run("P", "H", pipeline_root=root)
        hot_b = TaskRecord.of(execute_spec(batched, hot_run, HOT_SPEC, {}, files, seed=0))
        writer = BatchWriter(batched, files, root)
        pipeline = hot_run.pipeline_context
        writer.write([], [CachedRun(pipeline, name, [hot_b]) for name in ("H1", "H2")])
        [records_a] = _prepare_in_worker([7], writer.next_artifact_id)  # as the build does, on a scratch store
        run_a = FreshRun(pipeline, "A", 7, records=records_a)
        writer.write([run_a], [])
        writer.write([], [CachedRun(pipeline, "B", run_a.records)])
        execute_spec(batched, batched.pipeline_run("P", "C", pipeline_root=root), COLD_SPEC,
                     {"train": hot_b.output_artifacts["reference"][0]}, files, seed=0)

        expected, got = canonical_records(real.store), canonical_records(batched.store)
        if expected != got:
            for part in expected:
                if expected[part] != got[part]:
                    print(f"shape check: {part} differ\n  execute(): {expected[part]}\n  batched:   {got[part]}",
                          file=sys.stderr)
            raise SystemExit("shape check failed: the batch writer does not write what ExecutionCache writes")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)




_shape_checked = False


def ensure_store(path: Path, size: int, files: Sequence[str], hot_hits: int = HOT_HITS,
                 rebuild: bool = False) -> tuple[dict[str, Any], str]:
    """The metadata of the finished store at ``path``, building it first (after :func:`check_shape`)
    when it is missing, of another build version, or ``rebuild``; and how it came to be, for reports."""
    global _shape_checked
    meta = None if rebuild else read_meta(path)
    if meta is not None:
        return meta, f"reused; built in {meta['build_seconds']:,.0f} s"
    if not _shape_checked:  # once per process: the writer does not change between two builds
        status("checking that batched writes match ExecutionCache's ...")
        check_shape(path.parent, files)
        _shape_checked = True
    meta = build_store(path, size, files, hot_hits=hot_hits)
    return meta, f"built in {meta['build_seconds']:,.0f} s"


# -- shared by the benchmarks' measurements ------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Samples of one measurement, in seconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sample(functions: Sequence[Callable[[], Any]], repeat: int, warmup: int) -> list[Timing]:
    """Time the functions, interleaved (f1, f2, f1, f2, ...) so they see the same store and cache
    state; ``warmup`` untimed rounds first, GC off while timing. A slow set stops after
    TIME_BUDGET_S once it has MIN_SAMPLES."""
    for _ in range(warmup):
        for function in functions:
            function()
    times: list[list[float]] = [[] for _ in functions]
    gc.collect()
    gc.disable()
    try:
        deadline = time.perf_counter() + TIME_BUDGET_S
        for round_ in range(repeat):
            for function, bucket in zip(functions, times):
                start = time.perf_counter()
                function()
                bucket.append(time.perf_counter() - start)
            if round_ + 1 >= MIN_SAMPLES and time.perf_counter() > deadline:
                break
    finally:
        gc.enable()
    return [Timing(tuple(bucket)) for bucket in times]


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def parse_counts(text: str, minimum: int, what: str, too_small: str) -> list[int]:
    """``10000,1_000_000`` as sorted distinct numbers, each at least ``minimum`` (argparse errors
    naming ``what`` the list is, and saying ``too_small`` of a number below the minimum)."""
    try:
        counts = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of {what}: {text!r}") from None
    if not counts or counts[0] < minimum:
        raise argparse.ArgumentTypeError(too_small)
    return counts


_LISTENING = re.compile(r" on (grpcs?://\S+) over ")


@contextlib.contextmanager
def serving(db_url: str, *args: str, timeout: float = 60.0) -> Iterator[str]:
    """``mlmd-cache serve --db DB_URL ARGS`` on a free port, as a subprocess: its ``grpc://`` URL once
    it listens; stopped (SIGTERM, then killed) afterwards."""
    command = [sys.executable, "-m", "mlmd_cache", "serve", "--port", "0", "--db", db_url, *args]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                   filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))))
    try:
        lines = []
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            for line in process.stderr:
                lines.append(line)
                found = _LISTENING.search(line)
                if found:
                    break
            else:
                raise SystemExit(f"mlmd-cache serve did not start: {''.join(lines).strip()}")
        finally:
            watchdog.cancel()
        threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # drain
        yield found.group(1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
