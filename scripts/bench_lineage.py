#!/usr/bin/env python
"""Benchmark upstream lineage queries: MLMD's server-side subgraph loader vs the whole-store loader.

Stores: KFP-shaped stores of ``--nodes`` graph nodes (default 10k and 1M, artifacts and executions
together), written by ``scripts/bench_store.py``'s builder (runs of five tasks, ingest -> validate,
preprocess -> train -> evaluate, every tenth run a cached re-run) as ``.bench/lineage-N.sqlite``,
without bench_lookup's 10,000 hot-key hits (one-task runs, more than a whole 10k-node store). A
store that is missing is built (about 6 minutes for 1M nodes here); an existing one is reused, read
only.

For each store, on ``--samples`` metrics artifacts (the end of a run, spread over the store) and
each depth of ``--depths`` (edges; the longest chain of a run is 7), it measures the median of:

(a) subgraph: ``lineage.load.load_subgraph(store, [a], hops=d, direction="upstream", runs=False)``
    and ``lineage.graph.upstream`` on it: MLMD traces the neighbourhood, only it is read;
(a') the same with ``runs=True`` (what ``mlmd-lineage upstream --cached`` does): the nodes' run and pipeline
    too, which costs MLMD a scan of the associations (they are indexed by context only);
(b) whole store, per query: ``lineage.graph.upstream(G, a, depth=d)`` on a graph loaded once;
(c) whole store, load: ``lineage.load.load_store`` once (the price (b) pays up front), with the
    process's peak memory after it,

and checks that (a) and (b) find the same nodes.
"""
from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_store  # noqa: E402
from lineage import graph as lg  # noqa: E402
from lineage import load  # noqa: E402
from mlmd_cache import connect  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms" if seconds < 1 else f"{seconds:,.1f} s"


def bulk_executions(nodes: int) -> int:
    """The builder's bulk executions for about ``nodes`` graph nodes: a run is five executions and,
    unless it is a cached re-run (one in RERUN_EVERY), their output artifacts."""
    per_run = bench_store.TASKS_PER_RUN + (1 - 1 / bench_store.RERUN_EVERY) * bench_store.ARTIFACTS_PER_RUN
    return bench_store.TASKS_PER_RUN * max(bench_store.PIPELINES, round(nodes / per_run))


def parse_nodes(text: str) -> list[int]:
    return bench_store.parse_counts(text, 1000, "node counts", "stores must have at least 1000 nodes")


def open_store(directory: Path, nodes: int):
    path = directory / f"lineage-{nodes}.sqlite"
    if bench_store.read_meta(path) is None:
        size = bulk_executions(nodes)
        bench_store.status(f"building {path.name} ({size:,} executions) with bench_store's builder ...")
        bench_store.build_store(path, size, bench_store.shared_files(directory), hot_hits=0)
    return connect(f"sqlite:///{path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=parse_nodes, default=[10_000, 1_000_000],
                        help="graph nodes per store, about (default: 10000,1000000)")
    parser.add_argument("--depths", default="2,4,10", help="upstream depths in edges (default: 2,4,10)")
    parser.add_argument("--samples", type=int, default=50, help="start artifacts per store (default: 50)")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench", help="where the stores are (default: .bench/)")
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    runs_header = "(a') +runs"
    print(f"{'nodes':>10} {'executions':>10} {'depth':>5} {'found':>6} {'(a) subgraph':>14} {runs_header:>12} "
          f"{'(b) in memory':>14} {'(c) whole load':>15} {'peak memory':>12}  break-even")
    for target in args.nodes:
        store = open_store(directory, target)
        metrics = [a.id for a in store.get_artifacts_by_type("system.Metrics")]
        starts = [f"a:{i}" for i in random.Random(target).sample(metrics, min(args.samples, len(metrics)))]
        began = time.perf_counter()
        whole = load.load_store(store)
        load_seconds = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
        executions = sum(1 for _, kind in whole.nodes(data="kind") if kind == "execution")
        for depth in depths:
            sub_times, run_times, mem_times, found = [], [], [], []
            gc.disable()
            try:
                for start in starts:
                    t0 = time.perf_counter()
                    sub = load.load_subgraph(store, [start], hops=depth, direction="upstream", runs=False)
                    from_sub = lg.upstream(sub, start, depth)
                    t1 = time.perf_counter()
                    with_runs = load.load_subgraph(store, [start], hops=depth, direction="upstream")
                    lg.upstream(with_runs, start, depth)
                    t2 = time.perf_counter()
                    in_memory = lg.upstream(whole, start, depth)
                    t3 = time.perf_counter()
                    if from_sub != in_memory or lg.upstream(with_runs, start, depth) != from_sub:
                        raise SystemExit(f"{start} depth {depth}: the loaders disagree "
                                         f"({len(from_sub)} vs {len(in_memory)} nodes)")
                    sub_times.append(t1 - t0)
                    run_times.append(t2 - t1)
                    mem_times.append(t3 - t2)
                    found.append(len(in_memory))
            finally:
                gc.enable()
            a, b = statistics.median(sub_times), statistics.median(mem_times)
            print(f"{whole.number_of_nodes():>10,} {executions:>10,} {depth:>5} {statistics.median(found):>6.0f} "
                  f"{ms(a):>14} {ms(statistics.median(run_times)):>12} {ms(b):>14} {ms(load_seconds):>15} "
                  f"{peak / 2**30:>9.1f} GB  {load_seconds / max(a - b, 1e-9):,.0f} queries", flush=True)
        del whole, store
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
