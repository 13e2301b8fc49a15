#!/usr/bin/env python
"""Benchmark concurrent dedup: what reserving a key costs, and the work it saves.

On one SQLite store (a fresh file in ``--dir``, default ``.bench/dedup/``), interleaved samples of
``ExecutionCache.execute`` (work that returns at once) with ``dedup=True`` and ``dedup=False``:

(a) a **hit**: the same key again (a lookup and a CACHED write; dedup reserves nothing);
(b) a **miss**: a new key each sample (lookup, RUNNING write, publish); with dedup the RUNNING
    write also creates the key's ``mlmd_cache.Reservation`` context, after one read for the newest
    reservation, and the heartbeat thread is told to hold and to stop.

Then (c) the **race** of issue 11: ``--runs`` (default 8) ``mlmd-cache run-pipeline`` processes
started together on one new store, a chain of four tasks that each take 0.5 s, distinct run names;
once with ``--no-dedup`` and once without. It counts the task executions that really ran
(COMPLETE) against the four that were needed.

Then (d) the **shortest lease** of issue 23: the race of (c) with dedup, 8 and then 16 processes
with ``--lease L`` beside a CPU hog (a busy process per CPU), for L = the minimum lease (2 s), 4 s,
8 s, 16 s; ``--trials`` (default 3) races per L. The shortest L at which every run of every trial
succeeded is reported, with the target "the default lease (30 s) is at least 10x that".

It prints the medians, the ratios dedup/plain with the targets (a) <= 1.2 and (b) <= 1.5, the
race's counts with the target "exactly 4 with dedup", and (d); exit status 1 when a target fails.
``--repeat`` (default 300) samples per median; ``--no-race`` skips (c) and (d), ``--no-lease`` (d).
(no `from __future__ import annotations`: KFP reads the components' annotations as types)
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ml_metadata.proto import metadata_store_pb2 as mlmd  # noqa: E402

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect  # noqa: E402
from mlmd_cache.store import records  # noqa: E402

HIT_TARGET, MISS_TARGET = 1.2, 1.5
TASKS = 4


def task(name: str) -> Task:
    return Task(name, CacheKey.build(image="python:3.11", command=["python", "-c", name],
                                     output_parameters={"x": "NUMBER_INTEGER"}))


def measure_execute(directory: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Median ms per execute() for (a) hit and (b) miss, dedup on and off, sampled alternately."""
    cache = ExecutionCache(connect(f"sqlite:///{directory / 'execute.sqlite'}"))
    run = cache.pipeline_run("bench-dedup", "run")
    work = lambda started: Outputs(parameters={"x": 1})  # noqa: E731
    hot = task("hot")
    cache.execute(run, hot, work)
    samples: dict[str, dict[bool, list[float]]] = {"hit": {True: [], False: []}, "miss": {True: [], False: []}}
    for number in range(-20, repeat):  # 20 warm-up rounds
        for dedup in (True, False):
            gc.disable()
            began = time.perf_counter()
            done = cache.execute(run, hot, work, dedup=dedup)
            hit_ms = (time.perf_counter() - began) * 1000
            fresh = task(f"miss-{uuid.uuid4().hex}")
            began = time.perf_counter()
            new = cache.execute(run, fresh, work, dedup=dedup)
            miss_ms = (time.perf_counter() - began) * 1000
            gc.enable()
            assert done.state == "CACHED" and new.state == "COMPLETE"
            if number >= 0:
                samples["hit"][dedup].append(hit_ms)
                samples["miss"][dedup].append(miss_ms)
    return {kind: {"dedup": statistics.median(by[True]), "plain": statistics.median(by[False])}
            for kind, by in samples.items()}


def race(directory: Path, runs: int, dedup: bool, lease: Optional[float] = None) -> tuple[int, float, list[str]]:
    """(task executions that ran, seconds, the last line of each run that failed) for ``runs`` racing
    run-pipeline processes on a new store (with ``--lease`` ``lease`` seconds, if given)."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def step(seconds: float, x: int) -> int:
        import time
        time.sleep(seconds)
        return x + 1

    @dsl.pipeline(name="bench-dedup-race")
    def chain(seconds: float = 0.5):
        value = step(seconds=seconds, x=0).output
        for _ in range(TASKS - 1):
            value = step(seconds=seconds, x=value).output

    place = directory / ("race-dedup" if dedup else "race-plain")
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    pipeline = place / "chain.yaml"
    compiler.Compiler().compile(chain, str(pipeline))
    db = f"sqlite:///{place / 'store.sqlite'}"
    began = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-m", "mlmd_cache", "run-pipeline", str(pipeline), "--db", db,
                                   "--pipeline-root", str(place / "root"), "--run-name", f"run-{n}", "--json",
                                   *([] if dedup else ["--no-dedup"]),
                                   *([] if lease is None else ["--lease", f"{lease:g}s"])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for n in range(runs)]
    failures = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:  # the first error line says why (the report's last lines say what)
            lines = err.strip().splitlines() or ["(no message)"]
            failures.append(next((line for line in lines if "Error" in line or "error" in line or "meanwhile" in line),
                                 lines[-1]))
    seconds = time.monotonic() - began
    executions = connect(db).get_executions_by_type(records.CONTAINER_EXECUTION_TYPE)
    return sum(e.last_known_state == mlmd.Execution.COMPLETE for e in executions), seconds, failures


def shortest_lease(directory: Path, runs: int, trials: int) -> Optional[float]:
    """The shortest of the tried leases at which ``trials`` races of ``runs`` processes beside a CPU
    hog all succeeded (None: none did), printing each lease's count of failed runs."""
    from mlmd_cache.cache.leases import MIN_LEASE_SECONDS

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        for lease in (MIN_LEASE_SECONDS * factor for factor in (1, 2, 4, 8)):
            failed, shown = 0, ""
            for _ in range(trials):
                _, _, failures = race(directory, runs, True, lease)
                failed += len(failures)
                shown = shown or (failures[0] if failures else "")
            print(f"    {runs:2d} runs, --lease {lease:g}s: {failed} of {runs * trials} runs failed"
                  + (f" ({shown[:160]})" if shown else ""), flush=True)
            if not failed:
                return lease
        return None
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / ".bench" / "dedup", help="where the stores go")
    parser.add_argument("--repeat", type=int, default=300, help="samples per median (default: 300)")
    parser.add_argument("--runs", type=int, default=8, help="racing run-pipeline processes (default: 8)")
    parser.add_argument("--no-race", action="store_true", help="skip (c) and (d), the races of run-pipeline processes")
    parser.add_argument("--no-lease", action="store_true", help="skip (d), the shortest lease beside a CPU hog")
    parser.add_argument("--trials", type=int, default=3, help="races per lease in (d) (default: 3)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.runs < 2 or args.trials < 1:
        parser.error("--repeat and --trials must be positive and --runs at least 2")
    directory = args.dir.resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    ok = True
    medians = measure_execute(directory, args.repeat)
    print(f"ExecutionCache.execute on SQLite, median of {args.repeat} (ms)   dedup    plain   ratio  target")
    for kind, target in (("hit", HIT_TARGET), ("miss", MISS_TARGET)):
        on, off = medians[kind]["dedup"], medians[kind]["plain"]
        passed = on / off <= target
        ok &= passed
        print(f"({'a' if kind == 'hit' else 'b'}) {kind:<49} {on:7.3f}  {off:7.3f}  {on / off:5.2f}x  "
              f"<= {target}  {'ok' if passed else 'FAILED'}")
    if not args.no_race:
        print(f"(c) {args.runs} run-pipeline processes racing on one SQLite store, {TASKS} tasks of 0.5 s each:")
        for dedup in (False, True):
            ran, seconds, failures = race(directory, args.runs, dedup)
            if failures:
                raise SystemExit(f"a racing run failed: {failures[0]}")
            verdict = ("ok" if ran == TASKS else "FAILED") if dedup else "(no target)"
            ok &= ran == TASKS or not dedup
            print(f"    {'dedup (default)' if dedup else '--no-dedup':<16} {ran:3d} task executions ran "
                  f"(of {TASKS} needed), {seconds:5.1f} s in all  {verdict}")
    if not args.no_race and not args.no_lease:
        from mlmd_cache.cache.leases import DEFAULT_LEASE_SECONDS, MIN_LEASE_SECONDS

        print(f"(d) the shortest lease at which racing runs beside a CPU hog ({os.cpu_count()} busy processes) "
              f"all succeed, {args.trials} races each:")
        for runs in (8, 16):
            shortest = shortest_lease(directory, runs, args.trials)
            passed = shortest is not None and DEFAULT_LEASE_SECONDS >= 10 * shortest
            ok &= passed
            minimum = " (the minimum: shorter is refused)" if shortest == MIN_LEASE_SECONDS else ""
            found = "none of those tried" if shortest is None else f"{shortest:g} s{minimum}"
            print(f"    {runs:2d} runs: shortest lease {found}; "
                  f"default {DEFAULT_LEASE_SECONDS:g} s >= 10x  {'ok' if passed else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
