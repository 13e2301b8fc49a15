#!/usr/bin/env python
"""Benchmark ``invalidate --cascade`` on an artifact with 10,000 descendants in a store of 1M executions.

The store (SQLite) holds ``--size`` executions (default 1,000,000), written in batches straight
through the MLMD API (``put_contexts``, ``put_artifacts``, ``put_executions``, ``put_events``,
``put_attributions_and_associations``), with the records mlmd-cache writes:

* the bulk: runs of five chained tasks (``system.ContainerExecution``, COMPLETE, with ``task_name``,
  ``display_name``, ``image`` and a distinct ``cache_fingerprint``), each with one LIVE output
  artifact (OUTPUT event) read by the next task (INPUT event), associated with its
  ``system.Pipeline`` and ``system.PipelineRun`` contexts and the ``mlmd_cache.CacheSource`` context
  of its key, its artifacts attributed to the pipeline and run; 8 pipelines;
* half-way through, the **tree**: one dataset brought in by an importer (``system.ImporterExecution``),
  and ``--descendants`` cache sources downstream of it (default 10,000: four levels, fan-out 10, the
  last level filling up the count), each reading its parent's output; and for every tenth of them a
  CACHED re-execution in a later run (``cached_execution_id``, INPUT and OUTPUT events to the same
  artifacts, as ``ExecutionCache.reuse`` writes), which the cascade walks too.

Then, on a fresh copy of the store file (the measurement writes), it times the library call
``mlmd_cache.cache.invalidation.invalidate(store, artifact=<dataset>, cascade=True)``: the walk over MLMD's
events and the writes (one Invalidation context, its associations, the flag on 10,000 CacheSource
contexts), after a dry run of the same (the walk alone). It checks the result: exactly the tree's
sources stopped, a descendant's lookup misses with the invalidation as the reason, a bulk key's
lookup still hits, with the same MLMD calls as before. It prints the times and the ratio to the
target (10 s), and exits 1 when the target is missed.

The built store is kept (``--dir``, default ``.bench/invalidate/`` in the repository, which git
ignores) as ``store-N-D.sqlite`` and reused by later runs; ``--rebuild`` builds it again. A quick
check: ``--size 20000 --descendants 2000``.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlmd_cache import connect  # noqa: E402
from mlmd_cache.cache import invalidation, sources  # noqa: E402
from mlmd_cache.store import records  # noqa: E402

BUILD_VERSION = 1
BUILD_CONTEXT_TYPE = "mlmd_cache.bench.InvalidateBuild"
PIPELINES = 8
TASKS_PER_RUN = 5
BATCH_EXECUTIONS = 5_000
CACHED_EVERY = 10  # a CACHED re-execution of every tenth tree source
FAN_OUT = 10
TARGET_SECONDS = 10.0


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fingerprint(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


class Builder:
    """Batched writes of executions, their artifacts, events and contexts."""

    def __init__(self, store: metadata_store.MetadataStore, uri: str) -> None:
        self.store = store
        self.uri = uri
        types = records.TypeRegistry(store)
        self.container = types.execution_type(records.CONTAINER_EXECUTION_TYPE)
        self.importer = types.execution_type(records.IMPORTER_EXECUTION_TYPE)
        self.dataset = types.artifact_type("system.Dataset")
        self.run_type = types.context_type(records.RUN_CONTEXT_TYPE)
        self.source_type = types.context_type(records.CACHE_SOURCE_CONTEXT_TYPE)
        pipeline_type = types.context_type(records.PIPELINE_CONTEXT_TYPE)
        names = [f"bench-pipeline-{p}" for p in range(PIPELINES)]
        self.pipelines = dict(zip(names, store.put_contexts([mlmd.Context(type_id=pipeline_type, name=n) for n in names])))
        self.runs = 0

    def new_runs(self, pipelines: Sequence[str]) -> list[int]:
        contexts = []
        for _ in pipelines:
            self.runs += 1
            contexts.append(mlmd.Context(type_id=self.run_type, name=f"bench-run-{self.runs}"))
        ids = self.store.put_contexts(contexts)
        self.store.put_parent_contexts([mlmd.ParentContext(child_id=c, parent_id=self.pipelines[p])
                                        for c, p in zip(ids, pipelines)])
        return ids

    def write(self, rows: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Each row: ``pipeline``, ``run`` (context ID), ``task``, ``input`` (artifact ID or None),
        and either ``fingerprint`` (a COMPLETE source with a new output artifact) or ``cached``
        (``(source execution ID, its output artifact ID)``: a CACHED reuse). Returns (execution ID,
        output artifact ID) per row."""
        store = self.store
        new = [r for r in rows if "fingerprint" in r]
        artifact_ids = iter(store.put_artifacts([mlmd.Artifact(type_id=self.dataset, uri=self.uri,
                                                               state=mlmd.Artifact.LIVE) for _ in new]))
        outputs = [next(artifact_ids) if "fingerprint" in r else r["cached"][1] for r in rows]
        source_contexts = []
        executions = []
        for row in rows:
            execution = mlmd.Execution(type_id=self.importer if row.get("importer") else self.container)
            properties = execution.custom_properties
            properties[records.TASK_NAME].string_value = row["task"]
            properties[records.DISPLAY_NAME].string_value = row["task"]
            if not row.get("importer"):
                properties[records.IMAGE].string_value = "python:3.11"
            if "fingerprint" in row and not row.get("importer"):
                execution.last_known_state = mlmd.Execution.COMPLETE
                properties[records.CACHE_FINGERPRINT].string_value = row["fingerprint"]
                source_contexts.append(sources.new_source_context(self.source_type, row["pipeline"], row["fingerprint"]))
            elif row.get("importer"):
                execution.last_known_state = mlmd.Execution.COMPLETE
            else:
                execution.last_known_state = mlmd.Execution.CACHED
                properties[records.CACHED_EXECUTION_ID].string_value = str(row["cached"][0])
                properties[records.CACHE_FINGERPRINT].string_value = row["cached_fingerprint"]
            executions.append(execution)
        context_ids = iter(store.put_contexts(source_contexts)) if source_contexts else iter(())
        execution_ids = store.put_executions(executions)
        events, associations, attributions = [], [], {}
        for row, execution_id, output in zip(rows, execution_ids, outputs):
            contexts = [self.pipelines[row["pipeline"]], row["run"]]
            if row["input"] is not None:
                event = mlmd.Event(type=mlmd.Event.INPUT, execution_id=execution_id, artifact_id=row["input"])
                event.path.steps.add(key="data")
                events.append(event)
            event = mlmd.Event(type=mlmd.Event.OUTPUT, execution_id=execution_id, artifact_id=output)
            event.path.steps.add(key="artifact" if row.get("importer") else "out")
            events.append(event)
            mine = contexts + ([next(context_ids)] if "fingerprint" in row and not row.get("importer") else [])
            associations += [mlmd.Association(context_id=c, execution_id=execution_id) for c in mine]
            if "fingerprint" in row and row.get("attributed", True):  # a new output: to its pipeline and run
                attributions.update(((c, output), None) for c in contexts)
        store.put_events(events)
        store.put_attributions_and_associations(
            [mlmd.Attribution(context_id=c, artifact_id=a) for c, a in attributions], associations)
        return list(zip(execution_ids, outputs))


def build(path: Path, size: int, descendants: int, uri: str) -> dict[str, Any]:
    started = time.perf_counter()
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    store = connect(f"sqlite:///{partial}")
    builder = Builder(store, uri)
    tree_size = descendants + descendants // CACHED_EVERY + 1
    bulk = max(0, size - tree_size)
    meta: dict[str, Any] = {"version": BUILD_VERSION, "size": size, "descendants": descendants}
    written, next_status, tree_done = 0, 0, False
    pipelines = list(builder.pipelines)
    while written < bulk or not tree_done:
        if not tree_done and written >= bulk // 2:
            meta.update(build_tree(builder, descendants))
            tree_done = True
            continue
        count = min(BATCH_EXECUTIONS, bulk - written)
        runs = -(-count // TASKS_PER_RUN)
        run_pipelines = [pipelines[(builder.runs + i) % PIPELINES] for i in range(runs)]
        run_ids = builder.new_runs(run_pipelines)
        # the tasks of a run in a chain: the batch is written level by level
        previous: list[Optional[int]] = [None] * runs
        index_of = {run_id: i for i, run_id in enumerate(run_ids)}
        done = 0
        for level in range(TASKS_PER_RUN):
            rows = []
            for r in range(runs):
                if r * TASKS_PER_RUN + level >= count:
                    continue
                # no attributions in the bulk: nothing the invalidation does reads them, and they
                # cost a quarter of the build
                rows.append({"pipeline": run_pipelines[r], "run": run_ids[r], "task": f"task-{level}", "attributed": False,
                             "input": previous[r], "fingerprint": fingerprint(f"bulk {written + r * TASKS_PER_RUN + level}")})
            for row, (_, output) in zip(rows, builder.write(rows)):
                previous[index_of[row["run"]]] = output
            done += len(rows)
        written += done
        if written >= next_status:
            status(f"  {written + (tree_size if tree_done else 0):,} of {size:,} executions, "
                   f"{time.perf_counter() - started:.0f} s")
            next_status += max(size // 20, 1)
    meta["executions"] = written + tree_size
    meta["build_seconds"] = round(time.perf_counter() - started, 1)
    marker = mlmd.Context(type_id=records.TypeRegistry(store).context_type(BUILD_CONTEXT_TYPE), name=f"v{BUILD_VERSION}")
    marker.custom_properties["meta"].string_value = json.dumps(meta)
    store.put_contexts([marker])
    del store, builder
    gc.collect()
    os.replace(partial, path)
    return meta


def build_tree(builder: Builder, descendants: int) -> dict[str, Any]:
    """The imported dataset and its descendants: levels of fan-out 10, the last filling the count."""
    pipeline = next(iter(builder.pipelines))
    [run] = builder.new_runs([pipeline])
    [(importer_id, dataset)] = builder.write([{"pipeline": pipeline, "run": run, "task": "importer", "input": None,
                                               "importer": True, "fingerprint": ""}])
    parents, made, level, sources_made = [dataset], 0, 0, []
    while made < descendants:
        wanted = min(len(parents) * FAN_OUT, descendants - made)
        rows = [{"pipeline": pipeline, "run": run, "task": f"tree-{level}", "input": parents[i % len(parents)],
                 "fingerprint": fingerprint(f"tree {made + i}")} for i in range(wanted)]
        written = []
        for start in range(0, len(rows), BATCH_EXECUTIONS):
            written += builder.write(rows[start:start + BATCH_EXECUTIONS])
        sources_made += [(row, execution_id, output) for row, (execution_id, output) in zip(rows, written)]
        parents = [output for _, output in written]
        made += wanted
        level += 1
    # CACHED re-executions of every tenth source, in a run of their own
    [cached_run] = builder.new_runs([pipeline])
    rows = [{"pipeline": pipeline, "run": cached_run, "task": row["task"], "input": row["input"],
             "cached": (execution_id, output), "cached_fingerprint": row["fingerprint"]}
            for row, execution_id, output in sources_made[::CACHED_EVERY]]
    for start in range(0, len(rows), BATCH_EXECUTIONS):
        builder.write(rows[start:start + BATCH_EXECUTIONS])
    return {"dataset": dataset, "importer": importer_id, "levels": level, "pipeline": pipeline,
            "first_source": sources_made[0][1], "last_source": sources_made[-1][1],
            "last_fingerprint": sources_made[-1][0]["fingerprint"]}


def read_meta(path: Path) -> Optional[dict[str, Any]]:
    if not path.exists():
        return None
    try:
        context = connect(f"sqlite:///{path}", read_only=True).get_context_by_type_and_name(
            BUILD_CONTEXT_TYPE, f"v{BUILD_VERSION}")
    except Exception:  # an older or broken file: built again
        return None
    return json.loads(context.custom_properties["meta"].string_value) if context else None


def counted_calls(store: metadata_store.MetadataStore) -> list[str]:
    calls: list[str] = []
    original = store._call

    def counting(method_name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method_name)
        return original(method_name, *args, **kwargs)

    store._call = counting
    return calls


def measure(size: int = 1_000_000, descendants: int = 10_000, directory: Path = REPO / ".bench" / "invalidate",
            rebuild: bool = False) -> dict[str, Any]:
    """Build (or reuse) the store and time the invalidation on a copy: the figures as a dict
    (``seconds``, ``dry_run_seconds``, ``ratio`` to the target, lookups in ms, ...). For
    scripts/bench_lookup.py to call as well as :func:`main`."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "dataset.txt"
    data.write_text("bench dataset\n")
    path = directory / f"store-{size}-{descendants}.sqlite"
    meta = None if rebuild else read_meta(path)
    if meta is None:
        status(f"building {path.name} ({size:,} executions, {descendants:,} descendants) ...")
        meta = build(path, size, descendants, data.resolve().as_uri())
        built = f"built in {meta['build_seconds']:,.0f} s"
    else:
        built = f"reused; built in {meta['build_seconds']:,.0f} s"
    status(f"store {path.name}: {meta['executions']:,} executions, {path.stat().st_size / 1e9:.2f} GB, {built}")
    measured = path.with_name(path.stem + ".measure.sqlite")
    shutil.copyfile(path, measured)
    # on disk before timing: else the first write's fsync pays for the copy (seconds at 1.7 GB)
    descriptor = os.open(measured, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    try:
        store = connect(f"sqlite:///{measured}")
        bulk_key = fingerprint("bulk 0")
        bulk_pipeline = "bench-pipeline-0"
        calls = counted_calls(store)
        assert [p for _, p in sources.examine_sources(store, bulk_pipeline, bulk_key)] == [None]
        bulk_reads = list(calls)

        started = time.perf_counter()
        dry = invalidation.invalidate(store, artifact=meta["dataset"], cascade=True, dry_run=True)
        dry_seconds = time.perf_counter() - started
        started = time.perf_counter()
        done = invalidation.invalidate(store, artifact=meta["dataset"], cascade=True, reason="bench")
        seconds = time.perf_counter() - started

        assert dry.count == done.count == descendants, (dry.count, done.count)
        assert not any(s.chosen for s in done.sources)  # an importer's dataset: every source is downstream
        [(_, problem)] = list(sources.examine_sources(store, meta["pipeline"], meta["last_fingerprint"]))
        assert problem and problem.startswith(f"invalidated by invalidation {done.id} (reason: bench)"), problem
        calls.clear()
        assert [p for _, p in sources.examine_sources(store, bulk_pipeline, bulk_key)] == [None]
        assert calls == bulk_reads, (calls, bulk_reads)
        started = time.perf_counter()
        for _ in range(20):
            list(sources.examine_sources(store, meta["pipeline"], meta["last_fingerprint"]))
        invalidated_lookup = (time.perf_counter() - started) / 20
        started = time.perf_counter()
        for _ in range(20):
            list(sources.examine_sources(store, bulk_pipeline, bulk_key))
        plain_lookup = (time.perf_counter() - started) / 20
        del store
        gc.collect()
    finally:
        measured.unlink(missing_ok=True)
    return {"executions": meta["executions"], "descendants": descendants, "levels": meta["levels"],
            "cached_reexecutions": descendants // CACHED_EVERY, "built": built, "dry_run_seconds": dry_seconds,
            "seconds": seconds, "target_seconds": TARGET_SECONDS, "ratio": seconds / TARGET_SECONDS,
            "ok": seconds <= TARGET_SECONDS, "invalidated_lookup_ms": invalidated_lookup * 1e3,
            "plain_lookup_ms": plain_lookup * 1e3, "plain_lookup_calls": len(bulk_reads)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="executions in the store (default: 1000000)")
    parser.add_argument("--descendants", type=int, default=10_000,
                        help="cache sources downstream of the invalidated artifact (default: 10000)")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench" / "invalidate",
                        help="where the store is kept and reused (default: .bench/invalidate/)")
    parser.add_argument("--rebuild", action="store_true", help="build the store again even if present")
    args = parser.parse_args(argv)
    if args.descendants < 1 or args.size < args.descendants * 1.2:
        parser.error("--size must hold the descendants and their CACHED re-executions (1.1x) with room to spare")
    r = measure(args.size, args.descendants, args.dir, args.rebuild)
    print(f"invalidate --cascade: {r['descendants']:,} descendants ({r['levels']} levels, "
          f"+{r['cached_reexecutions']:,} CACHED re-executions) in a store of {r['executions']:,} executions")
    print(f"  walk only (--dry-run)      {r['dry_run_seconds']:8.2f} s")
    print(f"  invalidate (walk + write)  {r['seconds']:8.2f} s   target <= {TARGET_SECONDS:g} s: "
          f"{r['ratio']:.2f}x of target  {'OK' if r['ok'] else 'MISSED'}")
    print(f"  lookup of an invalidated key {r['invalidated_lookup_ms']:6.2f} ms; of a key never invalidated "
          f"{r['plain_lookup_ms']:6.2f} ms ({r['plain_lookup_calls']} MLMD calls, unchanged)")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
