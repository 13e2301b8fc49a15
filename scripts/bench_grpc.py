#!/usr/bin/env python
"""Benchmark cache lookups through ``mlmd-cache serve`` against the same lookups on the embedded store.

For each backend (a SQLite file, and a MariaDB/MySQL database when one is given) the script

1. builds, once, a store of KFP-shaped records with the real :class:`ExecutionCache`: ``--runs``
   runs of a five-task pipeline (ingest -> validate, preprocess -> train -> evaluate, with KFP's
   custom properties, ``minio://`` output artifacts, INPUT/OUTPUT events, pipeline and run
   contexts), whose parameters repeat every ``--runs / 2`` runs, so that half the executions ran
   (COMPLETE, cache sources) and half are CACHED re-uses, as in a KFP deployment;
2. measures, for ``--duration`` seconds, ``--processes`` client processes that each repeat a fully
   cached re-run of one pipeline variant: ``ExecutionCache.lookup`` of its five tasks (every one a
   hit; each lookup is four MLMD reads and validates the outputs), without writing anything:

   * **embedded**: every process opens the store itself (``connect(db_url)``, the MLMD C++ core
     in the process);
   * **serve**: ``mlmd-cache serve --db db_url`` runs as a subprocess and every process connects
     to it with ``connect("grpc://...")`` (the stock MLMD gRPC client);

3. repeats the measurements ``--repeat`` times, interleaved (the servers stay up), and prints the
   median lookups/s of each and the ratio serve / embedded. ``--server-processes 1,2`` also
   measures, on MariaDB, ``serve --processes 2`` (processes sharing the port).

The store is reused by later runs (SQLite: ``--dir``, default ``.bench/grpc/``, which git ignores;
MariaDB: database ``mlmd_test_bench_grpc_<runs>`` of ``$MLMD_TEST_MYSQL_URL``, or ``--mysql URL``);
it is only read during the measurements. Usage::

    eval "$(bash scripts/databases.sh start)"            # for the MariaDB row
    python scripts/bench_grpc.py                          # 8 processes, median of 3 x 5 s
    python scripts/bench_grpc.py --processes 1 --duration 10 --repeat 1 --backends sqlite
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mlmd_cache import CacheKey, ExecutionCache, Outputs, PipelineRun, Task, connect, redact_url  # noqa: E402
from mlmd_cache.store import records  # noqa: E402

PIPELINE = "bench-grpc"
MYSQL_DATABASE = "mlmd_test_bench_grpc_{runs}"
_STARTED = re.compile(r"on grpcs?://(?P<host>[^ ]+):(?P<port>\d+) over ")

_PY = ("sh", "-c", 'python3 -m kfp.dsl.executor_main "$@"', "--")
# (task, upstream outputs it reads as {input: (task, output)}, its output artifacts, output parameters)
TASKS = (
    ("ingest", {}, {"dataset": "system.Dataset"}, {"rows": "NUMBER_INTEGER"}),
    ("validate", {"dataset": ("ingest", "dataset")}, {"statistics": "system.Artifact"}, {"valid": "BOOLEAN"}),
    ("preprocess", {"dataset": ("ingest", "dataset")}, {"train": "system.Dataset", "test": "system.Dataset"}, {}),
    ("train", {"train": ("preprocess", "train")}, {"model": "system.Model"}, {"loss": "NUMBER_DOUBLE"}),
    ("evaluate", {"model": ("train", "model"), "test": ("preprocess", "test")}, {"metrics": "system.Metrics"}, {}),
)
_VALUES = {"NUMBER_INTEGER": 1000, "BOOLEAN": True, "NUMBER_DOUBLE": 0.25, "STRING": "ok"}


def task(name: str, inputs: dict, outputs: dict, parameters: dict, upstream: dict, variant: int) -> Task:
    """The KFP cache key of one task of pipeline variant ``variant``; ``upstream`` maps
    (task, output) to the artifact IDs that task produced."""
    key = CacheKey.build(
        image=f"gcr.io/bench/{name}:2.1", command=_PY,
        args=("--executor_input", "{{$}}", "--function_to_execute", name),
        input_artifacts={input_name: upstream[source] for input_name, source in inputs.items()},
        input_parameters={"learning_rate": 0.01 * (variant + 1), "seed": 42},
        output_artifacts=outputs, output_parameters=parameters,
    )
    return Task(name, key)


def run_pipeline(cache: ExecutionCache, run: PipelineRun, variant: int, execute: bool) -> int:
    """One run of the pipeline: executed (misses run, hits are recorded as CACHED) or, with
    ``execute=False``, only looked up (every task must hit). The number of hits."""
    upstream: dict[tuple[str, str], list[int]] = {}
    hits = 0
    for name, inputs, outputs, parameters in TASKS:
        this = task(name, inputs, outputs, parameters, upstream, variant)
        if execute:
            done = cache.execute(run, this, lambda started: Outputs(
                artifacts={o: f"minio://mlpipeline/v2/artifacts/{run.name}/{name}/{started.id}/{o}" for o in outputs},
                parameters={p: _VALUES[kind] for p, kind in parameters.items()}))
            ids, hits = done.output_artifact_ids, hits + (done.state == "CACHED")
        else:
            hit = cache.lookup(run, this)
            if hit is None:
                raise RuntimeError(f"no cache hit for task {name} of variant {variant}")
            ids, hits = {o: [a.id for a in arts] for o, arts in hit.output_artifacts.items()}, hits + 1
        upstream.update({(name, output): artifact_ids for output, artifact_ids in ids.items()})
    return hits


def build(db_url: str, runs: int) -> None:
    """Fill the store with ``runs`` runs (once: a store holding the last run is reused)."""
    cache = ExecutionCache(connect(db_url))
    last = f"{PIPELINE}-run-{runs - 1}"
    if cache.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, last) is not None:
        print(f"  store {redact_url(db_url)}: reused ({runs} runs)", flush=True)
        return
    if cache.store.get_contexts_by_type(records.RUN_CONTEXT_TYPE):
        sys.exit(f"{redact_url(db_url)} holds another build: delete it (or drop the database) first")
    started = time.perf_counter()
    hits = sum(run_pipeline(cache, cache.pipeline_run(PIPELINE, f"{PIPELINE}-run-{r}"), r % variants(runs), True)
               for r in range(runs))
    print(f"  store {redact_url(db_url)}: built {runs} runs, {runs * len(TASKS)} executions "
          f"({hits} CACHED) in {time.perf_counter() - started:.1f} s", flush=True)


def variants(runs: int) -> int:
    return max(1, runs // 2)


def client(url: str, variant: int, barrier, duration: float, results) -> None:
    """One client process: set up, wait for the others, then cached re-runs for ``duration`` s."""
    try:
        cache = ExecutionCache(connect(url))
        run = cache.pipeline_run(PIPELINE, f"{PIPELINE}-run-{variant}")  # an existing run: nothing is written
        run_pipeline(cache, run, variant, execute=False)  # warm-up, and checks every task hits
        barrier.wait()
        started = time.perf_counter()
        lookups = 0
        while (elapsed := time.perf_counter() - started) < duration:
            lookups += run_pipeline(cache, run, variant, execute=False)
        results.put((lookups, elapsed, None))
    except BaseException as error:  # reported by the parent
        barrier.abort()  # the others, and the parent, stop waiting
        results.put((0, 0.0, f"{type(error).__name__}: {error}"))


def measure(url: str, processes: int, duration: float, runs: int) -> float:
    """Total lookups/s of ``processes`` clients of ``url``."""
    context = multiprocessing.get_context("spawn")  # no fork after gRPC and MLMD are loaded
    barrier, results = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=client, args=(url, i % variants(runs), barrier, duration, results))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
    except Exception:
        pass  # a client failed during set-up: its error is in the results
    outcomes = [results.get(timeout=duration + 120) for _ in workers]
    for worker in workers:
        worker.join()
    failures = [error for _, _, error in outcomes if error]
    if failures:
        raise RuntimeError(f"{len(failures)} client(s) failed: {failures[0]}")
    return sum(lookups / elapsed for lookups, elapsed, _ in outcomes)


class Serving:
    """``mlmd-cache serve --db URL --port 0`` as a subprocess; ``url`` is its grpc:// address."""

    def __init__(self, db_url: str, workers: int, processes: int = 1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlmd_cache", "serve", "--db", db_url, "--port", "0", "--workers", str(workers),
             "--processes", str(processes)],
            stderr=subprocess.PIPE, text=True, cwd=REPO)
        line = self.process.stderr.readline()
        match = _STARTED.search(line)
        if not match:
            self.process.wait(30)
            raise RuntimeError(f"mlmd-cache serve did not start: {line}{self.process.stderr.read()}")
        self.url = f"grpc://{match['host']}:{match['port']}"

    def __enter__(self) -> "Serving":
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.stderr.read()
        if self.process.wait(30) != 0:
            raise RuntimeError(f"mlmd-cache serve exited {self.process.returncode}")


def mysql_url(given: Optional[str], runs: int) -> Optional[str]:
    url = given or os.environ.get("MLMD_TEST_MYSQL_URL")
    if url and not given:
        url = urlsplit(url)._replace(path="/" + MYSQL_DATABASE.format(runs=runs)).geturl()
    return url


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8, help="client processes (default 8)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements of each kind, interleaved; the median is reported (default 3)")
    parser.add_argument("--runs", type=int, default=200, help="pipeline runs in the store (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="serve's worker threads (default 8)")
    parser.add_argument("--server-processes", default="1", metavar="N,...",
                        help="serve's processes (--processes), each measured on MariaDB (default 1; "
                             "SQLite is always served by one)")
    parser.add_argument("--backends", default="sqlite,mysql", help="comma-separated: sqlite, mysql (default both)")
    parser.add_argument("--dir", type=Path, default=REPO / ".bench" / "grpc", help="where the SQLite store lives")
    parser.add_argument("--mysql", metavar="URL",
                        help="MariaDB/MySQL store (default: database mlmd_test_bench_grpc_RUNS "
                             "of $MLMD_TEST_MYSQL_URL)")
    args = parser.parse_args(argv)

    stores = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            stores["sqlite"] = f"sqlite:///{args.dir.resolve() / f'store-{args.runs}.sqlite'}"
        elif backend == "mysql":
            url = mysql_url(args.mysql, args.runs)
            if url:
                stores["mariadb"] = url
            else:
                print("mysql: skipped (no --mysql URL and no $MLMD_TEST_MYSQL_URL)")
        else:
            parser.error(f"unknown backend {backend!r}")

    print(f"cache lookups, {args.processes} client processes, median of {args.repeat} x {args.duration:g} s, "
          f"{os.cpu_count()} CPUs; serve with {args.workers} workers", flush=True)
    server_processes = [int(n) for n in args.server_processes.split(",")]
    rows = []
    for backend, db_url in stores.items():
        print(f"{backend}:", flush=True)
        build(db_url, args.runs)
        counts = [1] if backend == "sqlite" else server_processes
        samples: dict[str, list[float]] = {"embedded": [], **{f"serve x{n}": [] for n in counts}}
        with contextlib.ExitStack() as servers:
            urls = {"embedded": db_url}
            urls.update({f"serve x{n}": servers.enter_context(Serving(db_url, args.workers, n)).url for n in counts})
            for _ in range(args.repeat):  # interleaved, so that a change of load hits all alike
                for mode, url in urls.items():
                    samples[mode].append(measure(url, args.processes, args.duration, args.runs))
                    print(f"  {mode + ':':11} {samples[mode][-1]:8.0f} lookups/s", flush=True)
        embedded = statistics.median(samples["embedded"])
        rows += [(backend, n, embedded, statistics.median(samples[f"serve x{n}"])) for n in counts]

    print()
    print("| backend | serve processes | embedded lookups/s | serve lookups/s | serve / embedded |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for backend, n, embedded, served in rows:
        print(f"| {backend} | {n} | {embedded:.0f} | {served:.0f} | {served / embedded:.2f} |")


if __name__ == "__main__":
    main()
