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

It prints the medians, the ratios dedup/plain with the targets (a) <= 1.2 and (b) <= 1.5, and the
race's counts with the target "exactly 4 with dedup"; exit status 1 when a target fails.
``--repeat`` (default 300) samples per median; ``--no-race`` skips (c).
(no `from __future__ import annotations`: KFP reads the components' annotations as types)
"""

import argparse
import gc
import json
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

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect, records  # noqa: E402

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


def race(directory: Path, runs: int, dedup: bool) -> tuple[int, float]:
    """(task executions that ran, seconds) for ``runs`` racing run-pipeline processes on a new store."""
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
                                   *([] if dedup else ["--no-dedup"])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for n in range(runs)]
    for process in processes:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0 or not json.loads(out)["succeeded"]:
            raise SystemExit(f"a racing run failed: {err.strip()[-500:]}")
    seconds = time.monotonic() - began
    executions = connect(db).get_executions_by_type(records.CONTAINER_EXECUTION_TYPE)
    return sum(e.last_known_state == mlmd.Execution.COMPLETE for e in executions), seconds


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / ".bench" / "dedup", help="where the stores go")
    parser.add_argument("--repeat", type=int, default=300, help="samples per median (default: 300)")
    parser.add_argument("--runs", type=int, default=8, help="racing run-pipeline processes (default: 8)")
    parser.add_argument("--no-race", action="store_true", help="skip (c), the race of run-pipeline processes")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.runs < 2:
        parser.error("--repeat must be positive and --runs at least 2")
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
            ran, seconds = race(directory, args.runs, dedup)
            verdict = ("ok" if ran == TASKS else "FAILED") if dedup else "(no target)"
            ok &= ran == TASKS or not dedup
            print(f"    {'dedup (default)' if dedup else '--no-dedup':<16} {ran:3d} task executions ran "
                  f"(of {TASKS} needed), {seconds:5.1f} s in all  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
