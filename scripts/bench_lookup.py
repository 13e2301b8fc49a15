#!/usr/bin/env python
"""Benchmark cache lookup and hit registration on KFP-shaped MLMD stores of 10k and 1M executions.

For each size N the script builds (or reuses, see below) one SQLite MLMD store with
``scripts/bench_store.py``'s builder: N executions of KFP-shaped pipeline runs, a **hot key** (one
source and 10,000 CACHED hits of it, spread over the whole build) and a **cold key** (one source
made at the end, no hits), N + 10,002 executions in all; see that module for the records and the
self-check that the batch writer writes what ``ExecutionCache`` writes.

Then, in one process and on one SQLite file, it measures the median of (for the cold and hot key):

(a) ``ExecutionCache.lookup``: the cache lookup with output validation (the hit it returns is the
    key's source; its artifacts are LIVE and their files exist).
(b) a full hit: ``lookup`` + ``reuse`` (validation and the CACHED registration); every sample
    writes one new CACHED execution. (b) and (d) are sampled alternately, so each lookup of (b)
    follows a write, as in a launcher; on SQLite a read right after a write is slower than one
    after a read (about +70 us for (c)'s read), which is part of b - d.
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

Over gRPC (section ``grpc``), with two ``mlmd-cache serve`` subprocesses on the same SQLite file, one
with its cache service and one with ``--no-cache-service``, it measures, interleaved:

(g) ``ExecutionCache.lookup`` embedded, as (a);
(h) the same lookup through ``connect("grpc://...")`` to the first server: one ``Lookup`` round trip
    of ``mlmd_cache.v1.CacheService``, validation on the client;
(i) the same through the second server: the plain MLMD calls (four round trips) that every other
    MLMD server gets;
(j) one ``Info`` call of the cache service (no database work): the floor of a round trip, so that
    (h) - (j) is the lookup's own work, on both sides.

(a) and (c) are sampled alternately too. Every median is over ``--repeat`` samples after a warm-up,
with the garbage collector off while timing, except that a measurement stops after 120 s once it
has 20 samples (only (e) on the hot key is that slow: it reads 10,001 executions).

The script prints the ratios a/c, b/d, e/a, a/f and h/g, i/g with the targets a/c <= 6, b/d <= 1.5
and h/g <= 2 at every size for both keys, and, when two sizes are measured, "flat": (a) and (b) grow at most 1.5x
from the smallest to the largest size. It exits with status 1 when a target fails.

Files (``--dir``, default ``.bench/`` in the repository, which git ignores):
``store-N.sqlite`` is a finished build, reused as is by later runs (delete it, or pass
``--rebuild``, to build again; an interrupted build leaves only ``store-N.sqlite.partial``, which is
never reused). Measurements write (b and d add CACHED executions), so they run on a fresh copy,
``store-N.measure.sqlite``, deleted afterwards: every run measures the same, untouched store.
``files/`` holds the few real files the artifact URIs point to.

Usage::

    python scripts/bench_lookup.py                        # both sizes, 500 samples per median
    python scripts/bench_lookup.py --sizes 10000 --repeat 200
    python scripts/bench_lookup.py --sizes 10000 --section grpc   # (g)-(i) only
    python scripts/bench_lookup.py --all       # and the other benchmarks of issue 11 that exist

``--section NAME`` (repeatable) picks parts: ``lookup`` (a)-(f), ``grpc`` (g)-(i), or another
benchmark script (``dedup``: scripts/bench_dedup.py, ``invalidate``: scripts/bench_invalidate.py,
``digest``: scripts/bench_digest.py), run by its ``main([])`` with its own defaults after the
measurements here; ``--all`` runs every part whose script exists. The exit status is 1 when a target
of any part fails.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import shutil
import sqlite3
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_store import (  # noqa: E402
    PIPELINES, TASKS_PER_RUN, Timing, ensure_store, parse_counts, sample, serving, shared_files, status, us,
    verdict,
)
from mlmd_cache import CacheHit, CacheKey, ExecutionCache, PipelineRun, Task, connect  # noqa: E402
from mlmd_cache.store import records  # noqa: E402
from mlmd_cache.cache import writes  # noqa: E402
from mlmd_cache.cache import artifact_is_usable  # noqa: E402

DEFAULT_SIZES = (10_000, 1_000_000)
TARGET_A_OVER_C = 6.0
TARGET_B_OVER_D = 1.5
TARGET_FLAT = 1.5
TARGET_H_OVER_G = 2.0


# -- measuring ------------------------------------------------------------------------------------

FINGERPRINT_SQL = ("SELECT execution_id FROM ExecutionProperty "
                   "WHERE name = 'cache_fingerprint' AND is_custom_property = 1 AND string_value = ? LIMIT 1")
FINGERPRINT_INDEX = "idx_execution_property_string"


def tfx_lookup(store: metadata_store.MetadataStore, fingerprint: str) -> Optional[mlmd.Execution]:
    """TFX's way: fetch every execution of the key (here by a filter on the fingerprint property),
    keep the COMPLETE ones, newest first, and return the first whose output artifacts are usable."""
    executions = store.get_executions(list_options=metadata_store.ListOptions(
        filter_query=f"custom_properties.{records.CACHE_FINGERPRINT}.string_value = '{fingerprint}'"))
    complete = sorted((e for e in executions if e.last_known_state == mlmd.Execution.COMPLETE),
                      key=lambda e: (e.last_update_time_since_epoch, e.id), reverse=True)
    for execution in complete:
        outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type == mlmd.Event.OUTPUT]
        artifacts = store.get_artifacts_by_id(outputs) if outputs else []
        if len(artifacts) == len(set(outputs)) and all(artifact_is_usable(a) for a in artifacts):
            return execution
    return None


def registration(cache: ExecutionCache, run: PipelineRun, task: Task, hit: CacheHit) -> Callable[[], Any]:
    """(d): a bare ``put_execution`` of what ``ExecutionCache.reuse`` writes for ``hit``, built once."""
    execution = writes.task_execution(cache.store, cache.types, task, mlmd.Execution.CACHED, task.fingerprint)
    execution.custom_properties[records.CACHED_EXECUTION_ID].string_value = str(hit.source.id)
    execution.custom_properties[records.OUTPUTS].CopyFrom(records.struct_value(hit.output_parameters))

    def event(kind: int, name: str, artifact_id: int) -> tuple[None, mlmd.Event]:
        value = mlmd.Event(type=kind, artifact_id=artifact_id)
        value.path.steps.add(key=name)
        return None, value

    events = [event(mlmd.Event.INPUT, name, i) for name, ids in task.key.input_artifact_ids.items() for i in ids]
    events += [event(mlmd.Event.OUTPUT, name, a.id) for name, artifacts in hit.output_artifacts.items() for a in artifacts]
    contexts = [run.pipeline_context, run.run_context]
    return lambda: cache.store.put_execution(execution, events, contexts, force_reuse_context=True)


@dataclass
class KeyResult:
    size: int
    key: str
    hits: int
    timings: dict[str, Timing]
    plan: str

    def median(self, name: str) -> float:
        return self.timings[name].median

    def ratio(self, top: str, bottom: str) -> float:
        return self.median(top) / self.median(bottom)


LABELS = {
    "a": "ExecutionCache.lookup (with validation)",
    "b": "full hit: lookup + reuse (CACHED registration)",
    "c": "get_executions_by_id, one execution",
    "d": "bare put_execution, shape of reuse's registration",
    "e": "TFX-style lookup: filter query + client-side",
    "f": "bare indexed SQL (sqlite3) on the fingerprint",
}


def measure_key(cache: ExecutionCache, db_path: Path, meta: dict[str, Any], key: str, repeat: int) -> KeyResult:
    info = meta["keys"][key]
    task = Task(info["task"], CacheKey.from_json(info["key"]))
    run = cache.pipeline_run(meta["pipeline"], f"bench-measure-{key}-{uuid.uuid4()}")
    hit = cache.lookup(run, task)
    if hit is None or hit.source_execution_id != info["source"]:
        raise SystemExit(f"{key} key: lookup found {hit and hit.source_execution_id}, expected source "
                         f"{info['source']} (were the artifact files under --dir moved?)")
    warmup = max(5, min(50, repeat // 10))
    status(f"  {key} key: (a) lookup and (c) get_executions_by_id")
    a, c = sample([lambda: cache.lookup(run, task), lambda: cache.store.get_executions_by_id([info["source"]])],
                  repeat, warmup)
    status(f"  {key} key: (e) TFX-style lookup")
    found = tfx_lookup(cache.store, task.fingerprint)
    assert found is not None and found.id == info["source"], found
    [e] = sample([lambda: tfx_lookup(cache.store, task.fingerprint)], repeat, min(warmup, 3))
    status(f"  {key} key: (f) bare SQL")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        plan = " / ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + FINGERPRINT_SQL, (task.fingerprint,)))
        if FINGERPRINT_INDEX not in plan:
            raise SystemExit(f"(f) does not use {FINGERPRINT_INDEX}: {plan}")
        assert db.execute(FINGERPRINT_SQL, (task.fingerprint,)).fetchall()
        [f] = sample([lambda: db.execute(FINGERPRINT_SQL, (task.fingerprint,)).fetchall()], repeat, warmup)
    finally:
        db.close()  # before the writes below: an open read would lock them out
    status(f"  {key} key: (b) lookup + reuse and (d) bare put_execution")
    put = registration(cache, run, task, hit)
    b, d = sample([lambda: cache.reuse(run, task, cache.lookup(run, task)), put], repeat, warmup)
    return KeyResult(meta["size"], key, info["hits"], dict(a=a, b=b, c=c, d=d, e=e, f=f), plan)


GRPC_LABELS = {
    "g": "ExecutionCache.lookup, embedded (as (a))",
    "h": "the same over serve, cache service (1 round trip)",
    "i": "the same over serve, plain MLMD calls (4 round trips)",
    "j": "one CacheService/Info call: the floor of a round trip",
}


@dataclass
class GrpcResult:
    size: int
    key: str
    hits: int
    timings: dict[str, Timing]

    def ratio(self, top: str, bottom: str) -> float:
        return self.timings[top].median / self.timings[bottom].median


def measure_grpc(cache: ExecutionCache, service_url: str, plain_url: str, meta: dict[str, Any], key: str,
                 repeat: int) -> GrpcResult:
    """(g), (h) and (i), interleaved: one lookup of the key embedded, over ``serve`` with its cache
    service, and over ``serve --no-cache-service`` (the fallback every other MLMD server gets)."""
    info = meta["keys"][key]
    task = Task(info["task"], CacheKey.from_json(info["key"]))
    run = cache.pipeline_run(meta["pipeline"], f"bench-grpc-{key}-{uuid.uuid4()}")
    service, plain = ExecutionCache(connect(service_url)), ExecutionCache(connect(plain_url))
    for which, other in (("embedded", cache), ("service", service), ("plain", plain)):
        hit = other.lookup(run, task)
        if hit is None or hit.source_execution_id != info["source"]:
            raise SystemExit(f"{key} key, {which}: lookup found {hit and hit.source_execution_id}, "
                             f"expected source {info['source']}")
    if not service.store.cache_service.offered or plain.store.cache_service.offered is not False:
        raise SystemExit("serve's cache service was not used, or --no-cache-service was")
    status(f"  {key} key: (g) embedded, (h) serve with the cache service, (i) serve, plain MLMD calls, "
           "(j) a bare round trip")
    g, h, i, j = sample([lambda: cache.lookup(run, task), lambda: service.lookup(run, task),
                         lambda: plain.lookup(run, task), service.store.cache_service.info],
                        repeat, max(5, min(50, repeat // 10)))
    return GrpcResult(meta["size"], key, info["hits"], dict(g=g, h=h, i=i, j=j))


# -- reporting ------------------------------------------------------------------------------------

def short(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)


def print_table(result: KeyResult, meta: dict[str, Any], file_size: int, built: str) -> None:
    description = "1 source, no hits" if result.key == "cold" else f"1 source + {result.hits:,} CACHED hits"
    print(f"\n== size {result.size:,}: {meta['executions']:,} executions in the store "
          f"({file_size / 1e9:.2f} GB; {built}) -- {result.key} key: {description}")
    print(f"   {'measurement':<55}{'median µs':>12}{'p10 µs':>12}{'p90 µs':>12}{'samples':>9}")
    for name, label in LABELS.items():
        timing = result.timings[name]
        print(f"   ({name}) {label:<51}{us(timing.median):>12}{us(timing.quantile(0.1)):>12}"
              f"{us(timing.quantile(0.9)):>12}{len(timing.samples):>9}")
    a_c, b_d = result.ratio("a", "c"), result.ratio("b", "d")
    print(f"   a/c = {a_c:.2f} (target <= {TARGET_A_OVER_C:g}: {verdict(a_c <= TARGET_A_OVER_C)})   "
          f"b/d = {b_d:.2f} (target <= {TARGET_B_OVER_D:g}: {verdict(b_d <= TARGET_B_OVER_D)})   "
          f"e/a = {result.ratio('e', 'a'):.1f}   a/f = {result.ratio('a', 'f'):.1f}")
    print(f"   (f) query plan: {result.plan}")
    sys.stdout.flush()


def print_grpc_table(result: GrpcResult, meta: dict[str, Any]) -> None:
    description = "1 source, no hits" if result.key == "cold" else f"1 source + {result.hits:,} CACHED hits"
    print(f"\n== size {result.size:,}: {meta['executions']:,} executions, SQLite, serve on this host "
          f"-- {result.key} key: {description}")
    print(f"   {'measurement':<55}{'median µs':>12}{'p10 µs':>12}{'p90 µs':>12}{'samples':>9}")
    for name, label in GRPC_LABELS.items():
        timing = result.timings[name]
        print(f"   ({name}) {label:<51}{us(timing.median):>12}{us(timing.quantile(0.1)):>12}"
              f"{us(timing.quantile(0.9)):>12}{len(timing.samples):>9}")
    h_g = result.ratio("h", "g")
    print(f"   h/g = {h_g:.2f} (target <= {TARGET_H_OVER_G:g}: {verdict(h_g <= TARGET_H_OVER_G)})   "
          f"i/g = {result.ratio('i', 'g'):.2f}   i/h = {result.ratio('i', 'h'):.2f}   "
          f"(h-j)/g = {(result.timings['h'].median - result.timings['j'].median) / result.timings['g'].median:.2f}")
    sys.stdout.flush()


def print_targets(results: list[KeyResult], grpc_results: Sequence[GrpcResult] = ()) -> bool:
    print("\n== targets")
    ok_all = True
    if grpc_results:
        values = [(f"{r.key} {short(r.size)}", r.ratio("h", "g")) for r in grpc_results]
        ok = all(value <= TARGET_H_OVER_G for _, value in values)
        ok_all &= ok
        print(f"{verdict(ok)}  h/g <= {TARGET_H_OVER_G:g}:  " + "   ".join(f"{n} {v:.2f}" for n, v in values))
    if not results:
        return ok_all
    for top, bottom, target in (("a", "c", TARGET_A_OVER_C), ("b", "d", TARGET_B_OVER_D)):
        values = [(f"{r.key} {short(r.size)}", r.ratio(top, bottom)) for r in results]
        ok = all(value <= target for _, value in values)
        ok_all &= ok
        print(f"{verdict(ok)}  {top}/{bottom} <= {target:g}:  " + "   ".join(f"{n} {v:.2f}" for n, v in values))
    sizes = sorted({r.size for r in results})
    for name in ("a", "b"):
        if len(sizes) < 2:
            print(f"n/a   flat ({name}): needs two sizes")
            continue
        growth = []
        for key in ("cold", "hot"):
            small = next(r for r in results if r.size == sizes[0] and r.key == key)
            large = next(r for r in results if r.size == sizes[-1] and r.key == key)
            growth.append((key, large.median(name) / small.median(name)))
        ok = all(value <= TARGET_FLAT for _, value in growth)
        ok_all &= ok
        print(f"{verdict(ok)}  flat ({name}) {short(sizes[-1])}/{short(sizes[0])} <= {TARGET_FLAT:g}:  "
              + "   ".join(f"{key} {value:.2f}" for key, value in growth))
    return ok_all


# -- main -----------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    return parse_counts(text, TASKS_PER_RUN * PIPELINES, "sizes", f"sizes must be at least {TASKS_PER_RUN * PIPELINES}")


SECTIONS = ("lookup", "grpc")
# The other benchmarks of issue 11, each a script of its own with a main(argv) -> exit code, run by
# --all (or --section NAME) with their defaults when the script is there.
OTHER_BENCHMARKS = {
    "dedup": "bench_dedup",            # a hit with dedup on vs off (measure_hit)
    "invalidate": "bench_invalidate",  # invalidate --cascade on 10,000 descendants in 1M executions
    "digest": "bench_digest",          # content digest throughput
}


def run_other(section: str) -> int:
    """Run ``scripts/<OTHER_BENCHMARKS[section]>.py``'s ``main([])``; its exit code (0 when absent)."""
    module_name = OTHER_BENCHMARKS[section]
    if not (REPO / "scripts" / f"{module_name}.py").exists():
        print(f"\n== {section}: n/a (scripts/{module_name}.py is not there)")
        return 0
    print(f"\n== {section}: scripts/{module_name}.py", flush=True)
    code = importlib.import_module(module_name).main([])
    return int(code or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES),
                        help="bulk executions per store, comma-separated (default: 10000,1000000)")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench",
                        help="where the stores go (default: .bench/ in the repository); a finished "
                             "store-N.sqlite there is reused")
    parser.add_argument("--repeat", type=int, default=500, help="samples per median (default: 500)")
    parser.add_argument("--rebuild", action="store_true", help="build the stores again even if present")
    parser.add_argument("--section", action="append", choices=[*SECTIONS, *OTHER_BENCHMARKS],
                        help="measure only this part (repeatable): lookup (a-f), grpc (g-i), or another "
                             "benchmark of issue 11 (default: lookup and grpc)")
    parser.add_argument("--all", action="store_true",
                        help="also run the other benchmarks (scripts/bench_dedup.py, bench_invalidate.py, "
                             "bench_digest.py) that exist, with their defaults")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    sections = list(dict.fromkeys(args.section or SECTIONS))
    if args.all:
        sections += [name for name in (*SECTIONS, *OTHER_BENCHMARKS) if name not in sections]
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    files = shared_files(directory)
    results: list[KeyResult] = []
    grpc_results: list[GrpcResult] = []
    for size in args.sizes if {"lookup", "grpc"} & set(sections) else []:
        path = directory / f"store-{size}.sqlite"
        meta, built = ensure_store(path, size, files, rebuild=args.rebuild)
        status(f"store {path.name}: {meta['executions']:,} executions, {path.stat().st_size / 1e9:.2f} GB, {built}")
        measured = path.with_name(f"store-{size}.measure.sqlite")
        status(f"copying to {measured.name} (measurements write to it) ...")
        shutil.copyfile(path, measured)
        try:
            cache = ExecutionCache(connect(f"sqlite:///{measured}"))
            if "lookup" in sections:
                for key in ("cold", "hot"):
                    result = measure_key(cache, measured, meta, key, args.repeat)
                    results.append(result)
                    print_table(result, meta, path.stat().st_size, built)
            if "grpc" in sections:
                status("starting mlmd-cache serve twice on the store: with the cache service and without ...")
                with serving(f"sqlite:///{measured}") as service_url, \
                        serving(f"sqlite:///{measured}", "--no-cache-service") as plain_url:
                    for key in ("cold", "hot"):
                        grpc_result = measure_grpc(cache, service_url, plain_url, meta, key, args.repeat)
                        grpc_results.append(grpc_result)
                        print_grpc_table(grpc_result, meta)
            del cache
            gc.collect()
        finally:
            measured.unlink(missing_ok=True)
    ok = print_targets(results, grpc_results) if results or grpc_results else True
    codes = [run_other(section) for section in sections if section in OTHER_BENCHMARKS]
    return 0 if ok and not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
