#!/usr/bin/env python
"""Benchmark start-up: what a command costs before (and besides) its work, against importing MLMD.

Every figure is the median wall time of ``--repeat`` (default 15) fresh processes
(``subprocess.run``, output discarded), measured in one run of this script:

* baseline: ``python -c "import ml_metadata.metadata_store"``, the least any command that opens a
  store pays;
* ``mlmd-cache --help``, ``mlmd-lineage --help`` and ``python -c "import mlmd_cache"``: targets at
  most 1.5x the baseline;
* ``mlmd-lineage upstream ID --depth 10`` on a store of ``--nodes`` (default 10,000) graph nodes
  written by ``scripts/bench_store.py``'s builder (``.bench/lineage-N.sqlite``, as
  ``scripts/bench_lineage.py`` builds it; reused when there), from an artifact that ends a run;
  beside it, the same query in a warm process (``load_subgraph`` and the tree, as the command does);
* a cached re-run of a 40-task pipeline, ``scripts/bench_runner.py``'s chain (each task given the
  one before's output; target: at most 0.3 s of wall in all) and its fan-out, each executed once
  first (``--task-env host``), then re-run as a user would (the default ``--task-env venv``: all
  CACHED, no environment needed): the whole ``mlmd-cache run-pipeline``, whether it imported any
  of the KFP SDK (it must not), and for the fan-out, in fresh processes, the share of it that is
  importing what the command imports and reading the pipeline from the parsed-pipeline cache
  (:mod:`mlmd_cache.parsed_pipelines`, as the re-run does), beside parsing it (``load_pipeline``,
  PyYAML's import included), with the YAML parse alone by libyaml (``yaml.CSafeLoader``, what
  ``load_pipeline`` uses) and by PyYAML's pure-Python ``SafeLoader``;
* the pip shim: a lightweight task's ``python3 -m pip install ... kfp==...`` preamble in the
  runner's task environment (:mod:`mlmd_cache.runner.shims`), once the run has found it satisfied
  (every task but the first) and as the first task finds it, against the trivial component's own
  executor process (``python -m kfp.dsl.executor_main ...``).

Every child runs with bytecode, as an installed package does: ``PYTHONDONTWRITEBYTECODE`` is
dropped and, unless set, ``PYTHONPYCACHEPREFIX`` is ``.bench/pycache`` (written by each figure's
untimed warm-up run, outside the source tree). Without bytecode this checkout's ~80 modules are
compiled in every process, about 0.1 s more per command that imports the runner.

Usage::

    python scripts/bench_startup.py                 # about 2 minutes here (a 10k store is built once, ~10 s)
    python scripts/bench_startup.py --repeat 5 --json
    python scripts/bench_startup.py --quick         # --help, import mlmd_cache, the cached re-runs (~30 s)

The script prints a markdown table (for the README) with the targets, or one JSON object with
``--json``, and exits with status 1 when a target fails. The numbers are only as quiet as the
machine: the header prints the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

warnings.filterwarnings("ignore", category=FutureWarning)  # kfp's notices

TARGET_RATIO = 1.5
TARGET_RERUN_S = 0.3  # a cached re-run of the 40-task chain, the whole command (issue 22)
BIN = Path(sys.executable).parent
PIP_ARGS = ["--quiet", "--no-warn-script-location"]  # then kfp==VERSION and KFP's typing-extensions line


def status(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def environment() -> dict[str, str]:
    """This interpreter's environment, with this checkout first on the path of every child (which
    also runs in it: ``python -c`` puts its working directory first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # with bytecode, as an installed package runs (see above)
    env.setdefault("PYTHONPYCACHEPREFIX", str(REPO / ".bench" / "pycache"))
    return env


def command(name: str) -> str:
    """A console script of this interpreter's environment (``mlmd-cache``), else the one on PATH."""
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def median_wall(argv: Sequence[str], repeat: int, env: dict[str, str], cwd: Optional[Path] = None,
                before: Optional[Callable[[], None]] = None, warmup: int = 1) -> float:
    """Median wall time of ``repeat`` runs of ``argv`` (each must succeed) after ``warmup`` untimed
    ones (the files read into the page cache); ``before`` runs untimed before each."""
    walls = []
    for _ in range(warmup + repeat):
        if before is not None:
            before()
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd or REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        walls.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed (exit {done.returncode}): "
                             f"{done.stderr.decode(errors='replace')[-2000:]}")
    return statistics.median(walls[warmup:])


def median_fields(argv: Sequence[str], repeat: int, env: dict[str, str]) -> dict[str, float]:
    """Per field, the median over ``repeat`` runs of a process that prints one JSON object of timings."""
    samples: dict[str, list[float]] = {}
    for _ in range(repeat):
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        for name, value in json.loads(done.stdout).items():
            samples.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in samples.items()}


# What `mlmd-cache run-pipeline` imports before it reads the pipeline, then the pipeline read, timed
# in a fresh process; the YAML parse alone with each loader after it (their imports already paid).
RERUN_SHARES = """
import json, sys, time
began = time.perf_counter()
from mlmd_cache.cli import main
import mlmd_cache.cache.execution_cache, mlmd_cache.durations, mlmd_cache.cache.leases
import mlmd_cache.pipeline.parsed_pipelines, mlmd_cache.pipeline.spec, mlmd_cache.runner
imported = time.perf_counter()
mlmd_cache.pipeline.parsed_pipelines.load_pipeline(sys.argv[1])  # as run-pipeline reads it: parsed before, a hit
cached = time.perf_counter()
mlmd_cache.pipeline.spec.load_pipeline(sys.argv[1])  # parsed: PyYAML's import, the parse, the checks, ParseDict
loaded = time.perf_counter()
import yaml
text = open(sys.argv[1], encoding="utf-8").read()
parse = {}
for name in ("CSafeLoader", "SafeLoader"):
    for _ in range(3):  # the best of three: a collection of the objects made so far may fall into one
        t = time.perf_counter()
        list(yaml.load_all(text, Loader=getattr(yaml, name)))
        parse[name] = min(parse.get(name, 1e9), time.perf_counter() - t)
print(json.dumps({"import": imported - began, "load_cached": cached - imported, "load_pipeline": loaded - cached,
                  "yaml_libyaml": parse["CSafeLoader"], "yaml_python": parse["SafeLoader"]}))
"""


def measure_lineage(nodes: int, repeat: int, env: dict[str, str]) -> dict[str, Any]:
    import bench_lineage
    from lineage import graph as lg
    from lineage import load

    directory = REPO / ".bench"
    directory.mkdir(exist_ok=True)
    store = bench_lineage.open_store(directory, nodes)
    artifact = max(a.id for a in store.get_artifacts_by_type("system.Metrics"))  # the end of a run
    path = directory / f"lineage-{nodes}.sqlite"
    node = load.artifact_node(artifact)
    query = []
    for _ in range(repeat):
        began = time.perf_counter()
        graph = load.load_subgraph(store, [node], hops=10, direction="upstream", cached=False)
        lg.tree(graph, node, direction="upstream", depth=10, cached=False)
        query.append(time.perf_counter() - began)
    argv = [command("mlmd-lineage"), "upstream", str(artifact), "--depth", "10", "--db", f"sqlite:///{path}"]
    return {"wall": median_wall(argv, repeat, env), "query": statistics.median(query), "nodes": nodes,
            "store": str(path.relative_to(REPO)), "artifact": artifact}


# The cached re-run through the CLI, in a fresh process: the KFP SDK modules it imported (none, now).
RERUN_KFP_MODULES = """
import json, sys
from mlmd_cache.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    assert not exit.code, exit
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("kfp", "kubernetes"))), file=sys.stderr)
"""


def measure_rerun(directory: Path, kind: str, repeat: int, env: dict[str, str], shares: bool = True
                  ) -> dict[str, Any]:
    import bench_runner
    from kfp import compiler

    path = directory / f"{kind}.yaml"
    pipeline = {"chain": bench_runner.chain_pipeline, "fan-out": bench_runner.fan_out_pipeline}[kind]
    compiler.Compiler().compile(pipeline(40), str(path))
    run = ["run-pipeline", str(path), "--db", f"sqlite:///{directory / f'{kind}.sqlite'}",
           "--param", f"salt={uuid.uuid4().hex[:12]}", "--pipeline-root", str(directory / "root")]
    status(f"  the {kind}'s 40 tasks, executed once (--task-env host)")
    median_wall([command("mlmd-cache"), *run, "--task-env", "host"], 1, env, warmup=0)
    status("  cached re-runs (the default --task-env venv)")
    wall = median_wall([command("mlmd-cache"), *run], repeat, env)  # the warm-up writes bytecode
    done = subprocess.run([sys.executable, "-c", RERUN_KFP_MODULES, *run], env=env, cwd=REPO, capture_output=True,
                          text=True, check=True)
    kfp_modules = json.loads(done.stderr.splitlines()[-1])
    measured = median_fields([sys.executable, "-c", RERUN_SHARES, str(path)], repeat, env) if shares else {}
    return {"wall": wall, "kfp_modules": len(kfp_modules), **measured, "pipeline": path}


def measure_pip_shim(path: Path, directory: Path, repeat: int, env: dict[str, str]) -> dict[str, float]:
    import bench_runner
    import kfp

    from mlmd_cache.runner.shims import Shims

    _, task_command, task_root = bench_runner.task_commands(path, "salt", directory / "direct")[0]
    bare = bench_runner.bare_command(task_command, task_root)
    component = median_wall(bare, repeat, {**env, "_KFP_RUNTIME": "true"}, cwd=task_root)
    preamble = ["python3", "-m", "pip", "install", *PIP_ARGS, f"kfp=={kfp.__version__}", "--no-deps",
                'typing-extensions>=3.7.4,<5; python_version<"3.9"']
    run_shims = Shims()
    try:
        task_env = run_shims.host(env)
        shims = Path(task_env["PATH"].split(os.pathsep)[0])

        def forget() -> None:
            for memo in shims.glob("pip-satisfied.*"):
                memo.unlink()

        task_env = {**task_env, "PYTHONPATH": env["PYTHONPATH"]}
        first = median_wall(preamble, repeat, task_env, before=forget)
        remembered = median_wall(preamble, repeat, task_env)  # its warm-up run is the run's first task
    finally:
        run_shims.close()
    return {"remembered": remembered, "first": first, "component": component}


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15, help="processes per figure; medians (default: 15)")
    parser.add_argument("--nodes", type=int, default=10_000,
                        help="graph nodes of the lineage store (default: 10000; at least 1000)")
    parser.add_argument("--json", action="store_true", help="one JSON object on standard output instead of tables")
    parser.add_argument("--quick", action="store_true",
                        help="only the baseline, --help, import mlmd_cache and the cached re-runs")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.nodes < 1000:
        parser.error("--repeat must be positive and --nodes at least 1000")
    env = environment()
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []

    def row(what: str, seconds: float, base: Optional[float], target: Optional[float] = None, note: str = "",
            target_seconds: Optional[float] = None) -> None:
        ratio = seconds / base if base else None
        ok = None if target is None or ratio is None else ratio <= target
        if target_seconds is not None:
            ok = seconds <= target_seconds
        rows.append({"what": what, "seconds": seconds, "ratio": ratio, "target": target, "ok": ok, "note": note,
                     "target_seconds": target_seconds})

    status("baseline and --help")
    baseline = median_wall([sys.executable, "-c", "import ml_metadata.metadata_store"], args.repeat, env)
    row("`python -c \"import ml_metadata.metadata_store\"` (baseline)", baseline, baseline)
    for what, argv_ in (("`mlmd-cache --help`", [command("mlmd-cache"), "--help"]),
                        ("`mlmd-lineage --help`", [command("mlmd-lineage"), "--help"]),
                        ("`python -c \"import mlmd_cache\"`", [sys.executable, "-c", "import mlmd_cache"])):
        row(what, median_wall(argv_, args.repeat, env), baseline, TARGET_RATIO)
    if not args.quick:
        status(f"mlmd-lineage upstream on a {args.nodes:,}-node store")
        lineage = measure_lineage(args.nodes, args.repeat, env)
        row(f"`mlmd-lineage upstream ID --depth 10`, {lineage['nodes']:,}-node store", lineage["wall"], baseline,
            note=f"the query in a warm process: {duration(lineage['query'])}")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        status("a cached re-run of the 40-task chain")
        chain = measure_rerun(Path(scratch), "chain", args.repeat, env, shares=False)
        row("`mlmd-cache run-pipeline`, cached re-run of a 40-task chain", chain["wall"], baseline,
            target_seconds=TARGET_RERUN_S, note=f"KFP SDK modules imported: {chain['kfp_modules']}")
        status("a cached re-run of the 40-task fan-out")
        rerun = measure_rerun(Path(scratch), "fan-out", args.repeat, env)
        row("`mlmd-cache run-pipeline`, cached re-run of a 40-task fan-out", rerun["wall"], baseline,
            note=f"KFP SDK modules imported: {rerun['kfp_modules']}; "
                 f"imports {duration(rerun['import'])} ({rerun['import'] / rerun['wall']:.0%}), "
                 f"the pipeline from the parsed-pipeline cache {duration(rerun['load_cached'])} "
                 f"({rerun['load_cached'] / rerun['wall']:.0%}; parsing it instead, load_pipeline: "
                 f"{duration(rerun['load_pipeline'])}); "
                 f"YAML parse alone: libyaml {duration(rerun['yaml_libyaml'])}, pure-Python "
                 f"{duration(rerun['yaml_python'])} ({rerun['yaml_python'] / rerun['yaml_libyaml']:.1f}x)")
        if args.quick:
            rerun = None
        else:
            status("the pip shim")
        if rerun is not None:
            pip = measure_pip_shim(rerun["pipeline"], Path(scratch), args.repeat, env)
            row("a task's pip preamble through the shim, already found satisfied", pip["remembered"], baseline,
                note=f"{pip['remembered'] / pip['component']:.2f}x the trivial component's process "
                     f"({duration(pip['component'])})")
            row("the same, the run's first task", pip["first"], baseline,
                note=f"{pip['first'] / pip['component']:.2f}x the component's process")
    load = {"before": load_before, "after": os.getloadavg()[0]}
    ok = all(r["ok"] is not False for r in rows)
    if args.json:
        print(json.dumps({"repeat": args.repeat, "cpus": os.cpu_count(), "load_average_1min": load,
                          "seconds": time.perf_counter() - began, "rows": rows, "ok": ok}, indent=2))
        return 0 if ok else 1
    print(f"\n{os.cpu_count()} CPUs (load average {load['before']:.1f} before, {load['after']:.1f} after); "
          f"medians of {args.repeat} processes; {time.perf_counter() - began:.0f} s in all\n")
    print("| what | wall | vs baseline | target | |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        target = f"<= {r['target']}x" if r["target"] else f"<= {duration(r['target_seconds'])}" \
            if r["target_seconds"] else ""
        verdict = "" if r["ok"] is None else "PASS" if r["ok"] else "FAIL"
        print(f"| {r['what']} | {duration(r['seconds'])} | {r['ratio']:.2f}x | {target} | {verdict} |")
    print()
    for r in rows:
        if r["note"]:
            print(f"- {r['what']}: {r['note']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
