#!/usr/bin/env python
"""Benchmark upstream lineage queries: MLMD's server-side subgraph loader vs the whole-store loader.

Stores: the KFP-shaped stores of ``scripts/bench_lookup.py`` (``.bench/store-N.sqlite``, N bulk
executions in runs of five tasks, ingest -> validate, preprocess -> train -> evaluate, every tenth
run a cached re-run, plus a hot key reused 10,000 times). A store that is missing is built with
bench_lookup's builder (about 70 s per 100k executions here); an existing one is reused, read only.

For each size, on ``--samples`` metrics artifacts (the end of a run, spread over the store) and
each depth of ``--depths`` (edges; the longest chain of a run is 7), it measures the median of:

(a) subgraph: ``lineage.load.load_subgraph(store, [a], hops=d, direction="upstream", runs=False)``
    and ``lineage.graph.upstream`` on it: MLMD traces the neighbourhood, only it is read;
(a') the same with ``runs=True`` (what ``mlmd-lineage upstream`` does): the nodes' run and pipeline
    too, which costs MLMD a scan of the associations (they are indexed by context only);
(b) whole store, per query: ``lineage.graph.upstream(G, a, depth=d)`` on a graph loaded once;
(c) whole store, load: ``lineage.load.load_store`` once (the price (b) pays up front), with the
    process's peak memory after it,

and checks that (a) and (b) find the same nodes. Default sizes are 10k and 100k
(``--sizes 10000,100000,1000000`` adds the 4 GB store of a million executions, 2.09M graph nodes,
whose whole load takes about 3 minutes and 7 GB here; ``--whole-max N`` skips the whole-store side
above N executions).
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

import bench_lookup  # noqa: E402
from lineage import graph as lg  # noqa: E402
from lineage import load  # noqa: E402
from mlmd_cache import connect  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=bench_lookup.parse_sizes, default=[10_000, 100_000],
                        help="bulk executions per store (default: 10000,100000)")
    parser.add_argument("--depths", default="2,4,10", help="upstream depths in edges (default: 2,4,10)")
    parser.add_argument("--samples", type=int, default=50, help="start artifacts per size (default: 50)")
    parser.add_argument("--whole-max", type=int, default=1_000_000, metavar="N",
                        help="load the whole store only up to N bulk executions (default: 1000000); "
                             "larger stores measure (a) and (a') alone")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench", help="where the stores are (default: .bench/)")
    args = parser.parse_args(argv)
    depths = [int(d) for d in args.depths.split(",")]
    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    runs_header = "(a') +runs"
    print(f"{'store':>6} {'nodes':>10} {'depth':>5} {'found':>6} {'(a) subgraph':>14} {runs_header:>12} {'(b) in memory':>14} "
          f"{'(c) whole load':>15} {'peak memory':>12}  break-even")
    for size in args.sizes:
        path = directory / f"store-{size}.sqlite"
        if bench_lookup.read_meta(path) is None:
            bench_lookup.status(f"building {path.name} with bench_lookup's builder ...")
            bench_lookup.build_store(path, size, bench_lookup.shared_files(directory))
        store = connect(f"sqlite:///{path}")
        metrics = [a.id for a in store.get_artifacts_by_type("system.Metrics")]
        starts = [f"a:{i}" for i in random.Random(size).sample(metrics, min(args.samples, len(metrics)))]
        whole = None
        if size <= args.whole_max:
            began = time.perf_counter()
            whole = load.load_store(store)
            load_seconds = time.perf_counter() - began
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
            nodes = whole.number_of_nodes()
        else:
            nodes = len(store.get_artifacts()) + bench_lookup.read_meta(path)["executions"]
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
                    in_memory = lg.upstream(whole, start, depth) if whole is not None else from_sub
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
            columns = (f"{ms(b):>14} {ms(load_seconds):>15} {peak / 2**30:>9.1f} GB  "
                       f"{load_seconds / max(a - b, 1e-9):,.0f} queries"
                       if whole is not None else f"{'-':>14} {'-':>15} {'-':>12}  -")
            print(f"{bench_lookup.short(size):>6} {nodes:>10,} {depth:>5} {statistics.median(found):>6.0f} "
                  f"{ms(a):>14} {ms(statistics.median(run_times)):>12} {columns}", flush=True)
        del whole, store
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
