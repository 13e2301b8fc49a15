#!/usr/bin/env python3
"""Run KFP's own compiled sample pipelines through ``mlmd-cache run-pipeline`` and tell what happens.

What it measures: how much of a real-world corpus of compiled KFP pipelines runs locally, and
whether a re-run is served from the cache. The corpus is a directory of compiled pipeline YAMLs
(KFP's repository has ~150 under ``test_data/sdk_compiled_pipelines/valid``, compiled by kfp 2.0
to 2.15, most by 2.13 and 2.14); every ``*.yaml`` below it is one pipeline. For each file, on a
fresh SQLite store of its own (``OUT/runs/<file>/mlmd.sqlite``, outputs under ``OUT/runs/<file>/root``)::

    mlmd-cache run-pipeline FILE --db sqlite:///.../mlmd.sqlite --pipeline-root .../root --json

runs with standard input from /dev/null and a deadline (``--timeout``, 240 s; on expiry its process
group gets SIGTERM, then SIGKILL 15 s later), then once more on the same store when the first run
exited 0. Tasks run in the default ``--task-env venv`` (cached uv environments). A required pipeline
parameter without a default gets a harmless value of its type (STRING "x", NUMBER_INTEGER 1,
NUMBER_DOUBLE 1.0, BOOLEAN false, LIST ["a", "b"], STRUCT {}), and the CSV says so.

Each file gets one class:

- ``OK``: both runs exit 0 and on the second every container task is CACHED or SKIPPED;
- ``OK-not-cached``: both exit 0 but the second executed a task: which, and why (compiled with
  caching disabled, else as ``mlmd-cache plan`` tells it on the store afterwards);
- ``FAILED``: exit 1 (the failed tasks and the telling line of the first one's error: the last
  exception-like line of its stderr tail, else the tail's first line);
- ``REFUSED``: exit 2 (the one-line ``Error:`` message);
- ``TIMEOUT``; ``INTERRUPTED`` (exit 130 that this script did not cause);
- ``CRASH``: a Python traceback of mlmd-cache itself on stderr (a task's own traceback, shown in the
  ``    | `` lines under its FAILED line, does not count), or an exit code other than 0, 1, 2, 130.

FAILED and REFUSED are grouped by cause: the message with paths, IDs, numbers and quoted names
replaced by placeholders. Output: ``OUT/results.csv`` (a row per file), each run's stdout/stderr in
``OUT/runs/<file>/``, and a markdown summary on standard output (also ``OUT/summary.md``).

Run it from the checkout with the dev venv's Python (``mlmd-cache`` is taken from beside it)::

    git -C PATH/TO/KFP archive HEAD test_data/sdk_compiled_pipelines/valid | tar -x -C /tmp/kfp-samples
    .venv/bin/python scripts/kfp_samples.py /tmp/kfp-samples/test_data/sdk_compiled_pipelines/valid \\
        [--jobs 2] [--only PATTERN] [--out .bench/kfp-samples] [--timeout 240]

``--only`` keeps the files whose path below the directory matches a glob (``critical/*``), or, with
no wildcard, contains the text. Tasks may download packages from PyPI (a new environment per
requirement set) and run whatever the samples' commands do on this machine.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

CLASSES = ("OK", "OK-not-cached", "FAILED", "REFUSED", "TIMEOUT", "INTERRUPTED", "CRASH")

# Values for required parameters without defaults, by IR type: harmless wherever a type suffices.
HARMLESS = {"STRING": "x", "NUMBER_INTEGER": "1", "NUMBER_DOUBLE": "1.0", "BOOLEAN": "false",
            "LIST": '["a", "b"]', "STRUCT": "{}"}

TASK_LINE = re.compile(r"^(?P<name>\S.*?)\s+(?P<state>EXECUTED|CACHED|FAILED|NOT_RUN|SKIPPED|DONE)\s+"
                       r"[\d.]+s\s+(?P<rest>.*)$")
ERROR_LINE = "    | "  # a FAILED task's stderr tail, a line each, under its task line
# A traceback's last line (``ValueError: ...``, ``google.api_core.exceptions.NotFound: ...``) or a tool's error.
EXCEPTION = re.compile(r"^(?:[\w.]*\.)?\w*(?:Error|Exception|Exit|Interrupt|Failure|NotFound)\b"
                       r"|^(?:ERROR|Error|FATAL)\b")
UNCACHED = "caching disabled in the IR"
EXIT_CODE = re.compile(r"^exit code -?\d+$")


@dataclass
class Run:
    """One ``run-pipeline`` process: exit code (None on timeout), time, streams, parsed JSON."""

    code: Optional[int]
    seconds: float
    stdout: str
    stderr: str
    report: Optional[dict[str, Any]] = None

    @property
    def timed_out(self) -> bool:
        return self.code is None

    def own_stderr(self) -> list[str]:
        """mlmd-cache's own stderr lines: without the task error tails it quotes."""
        return [line for line in self.stderr.splitlines() if not line.startswith(ERROR_LINE)]

    def container_states(self) -> dict[str, str]:
        tasks = (self.report or {}).get("tasks", {})
        return {name: task["state"] for name, task in tasks.items() if task.get("kind") == "container"}


@dataclass
class Result:
    """One file's row of the CSV."""

    file: str
    pipeline: str = ""
    cls: str = ""
    params_supplied: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # OK-not-cached: why each task executed again
    code1: Optional[int] = None
    code2: Optional[int] = None
    seconds1: float = 0.0
    seconds2: float = 0.0
    states1: str = ""
    states2: str = ""
    tasks: list[str] = field(default_factory=list)  # failed tasks, or tasks the re-run executed
    message: str = ""
    cause: str = ""
    traceback: str = ""


@dataclass
class Pipeline:
    """What the script reads from a compiled pipeline (its first YAML document; platform specs follow)."""

    name: str = ""
    params: list[str] = field(default_factory=list)  # NAME=VALUE of the harmless values supplied
    uncached: set[str] = field(default_factory=set)  # tasks (by name, in any DAG) with caching disabled


def read_pipeline(path: Path) -> Pipeline:
    """The pipeline's name, a harmless ``NAME=VALUE`` for each required root parameter without a
    default whose type has one, and the tasks compiled with caching disabled (``cachingOptions: {}``)."""
    try:
        with path.open() as stream:
            spec = next(yaml.safe_load_all(stream), None) or {}
    except (yaml.YAMLError, OSError):
        return Pipeline()  # run-pipeline says what is wrong with it
    if not isinstance(spec, dict):
        return Pipeline()
    pipeline = Pipeline(str((spec.get("pipelineInfo") or {}).get("name", "")))
    root = spec.get("root") or {}
    for param, definition in ((root.get("inputDefinitions") or {}).get("parameters") or {}).items():
        if "defaultValue" in definition or definition.get("isOptional"):
            continue
        value = HARMLESS.get(definition.get("parameterType", ""))
        if value is not None:
            pipeline.params.append(f"{param}={value}")
    dags = [root, *(spec.get("components") or {}).values()]
    for dag in dags:
        for name, task in ((dag.get("dag") or {}).get("tasks") or {}).items():
            if not (task.get("cachingOptions") or {}).get("enableCache"):
                pipeline.uncached.add(name)
    return pipeline


def run_once(argv: list[str], timeout: float) -> Run:
    """Run ``argv`` in its own process group, standard input /dev/null; on timeout stop the group."""
    began = time.monotonic()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, errors="replace", start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        code: Optional[int] = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the runner stops its tasks and marks them FAILED
        try:
            stdout, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        code = None
    run = Run(code, time.monotonic() - began, stdout, stderr)
    try:
        run.report = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        pass
    return run


def failed_task_errors(stderr: str) -> dict[str, list[str]]:
    """Each FAILED task's error lines, from the plain task lines on stderr, in the order they ended."""
    errors: dict[str, list[str]] = {}
    current: Optional[str] = None
    for line in stderr.splitlines():
        if line.startswith(ERROR_LINE) and current is not None:
            errors[current].append(line[len(ERROR_LINE):])
            continue
        match = TASK_LINE.match(line)
        current = match["name"] if match and match["state"] == "FAILED" else None
        if current is not None:
            errors[current] = []
    return errors


def telling_line(lines: list[str]) -> str:
    """The line that says why: the last exception-like one (a traceback's tail), else the first
    that is not the bare ``exit code N`` the runner puts first, else that."""
    exceptions = [line.strip() for line in lines if EXCEPTION.match(line)]
    others = [line.strip() for line in lines if line.strip() and not EXIT_CODE.match(line.strip())]
    return exceptions[-1] if exceptions else others[0] if others else (lines[0].strip() if lines else "")


def normalise(message: str) -> str:
    """A message with what differs from file to file replaced, to group by cause."""
    text = re.sub(r"(?:[A-Za-z]+://|/)[^\s'\",;)]+", "<path>", message)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r'"[^"]*"', '"…"', text)
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "<n>", text)
    return text[:240]


def states(run: Optional[Run]) -> str:
    """``3 COMPLETE, 1 SKIPPED``: the container tasks' states of a run."""
    if run is None or run.report is None:
        return ""
    return ", ".join(f"{n} {state}" for state, n in sorted(Counter(run.container_states().values()).items()))


def plan_reasons(mlmd: str, path: Path, db: str, root: Path, params: list[str]) -> dict[str, str]:
    """Why each task would run now, as ``mlmd-cache plan --json`` tells on the store after the runs."""
    argv = [mlmd, "plan", str(path), "--db", db, "--pipeline-root", str(root), "--json"]
    for param in params:
        argv += ["--param", param]
    planned = run_once(argv, 60)
    tasks = (planned.report or {}).get("tasks", {})
    return {name: task.get("reason") or task.get("label", "") for name, task in tasks.items()}


def classify(result: Result, first: Run, second: Optional[Run]) -> None:
    """Fill ``result``'s class, message and cause from the runs."""
    for run in (first, second):
        if run is None:
            continue
        own = run.own_stderr()
        start = next((i for i, line in enumerate(own) if line.startswith("Traceback (most recent call last)")), None)
        if start is not None:
            result.cls, result.traceback = "CRASH", "\n".join(own[start:][-6:])
            result.message = own[-1] if own else ""
            result.cause = normalise(result.message)
            return
        if run.code not in (0, 1, 2, 130, None):
            result.cls, result.message = "CRASH", f"exit code {run.code}: " + (own[-1] if own else "")
            result.cause = normalise(result.message)
            return
    last = second if second is not None else first
    if last.timed_out:
        result.cls = "TIMEOUT"
        result.message = "run {} still running after the deadline".format(1 if last is first else 2)
        result.tasks = [name for name, state in last.container_states().items() if state == "FAILED"]
        return
    if last.code == 130:
        result.cls, result.message = "INTERRUPTED", (last.own_stderr() or [""])[-1]
        return
    if last.code == 2:
        errors = [line for line in last.own_stderr() if line.startswith("Error:")]
        result.cls = "REFUSED"
        result.message = (errors or last.own_stderr() or [""])[-1].removeprefix("Error: ")
        result.cause = normalise(result.message)
        return
    if last.code == 1:
        result.cls = "FAILED"
        errors = failed_task_errors(last.stderr)
        result.tasks = list(errors) or [n for n, s in last.container_states().items() if s == "FAILED"]
        if errors:
            first_failed = next(iter(errors))
            result.message = f"{first_failed}: {telling_line(errors[first_failed])}"
            result.cause = normalise(telling_line(errors[first_failed]))
            if EXIT_CODE.match(telling_line(errors[first_failed])):  # nothing else said: the task says what failed
                result.cause = f"{first_failed.rsplit('/', 1)[-1]}: {result.cause}, nothing else on stderr"
        else:  # no task failed: the run itself did (its store, a DAG)
            result.message = (last.own_stderr() or [""])[-1]
            result.cause = normalise(result.message)
        if last is second:
            result.message = "second run: " + result.message
        return
    executed = [name for name, state in last.container_states().items() if state not in ("CACHED", "SKIPPED")]
    result.cls = "OK" if not executed else "OK-not-cached"
    result.tasks = executed


def run_file(path: Path, base: Path, out: Path, mlmd: str, timeout: float) -> Result:
    """Both runs of one pipeline file on a fresh store, classified."""
    relative = path.relative_to(base).as_posix()
    result = Result(relative)
    pipeline = read_pipeline(path)
    result.pipeline, result.params_supplied = pipeline.name, pipeline.params
    work = out / "runs" / relative.removesuffix(".yaml").replace("/", "__")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db, root = f"sqlite:///{work / 'mlmd.sqlite'}", work / "root"
    argv = [mlmd, "run-pipeline", str(path), "--db", db, "--pipeline-root", str(root), "--json"]
    for param in result.params_supplied:
        argv += ["--param", param]
    runs: list[Run] = []
    for number in (1, 2):
        run = run_once(argv, timeout)
        (work / f"run{number}.stdout").write_text(run.stdout)
        (work / f"run{number}.stderr").write_text(run.stderr)
        runs.append(run)
        if run.code != 0:
            break
    first, second = runs[0], (runs[1] if len(runs) > 1 else None)
    result.code1, result.seconds1, result.states1 = first.code, round(first.seconds, 2), states(first)
    if second is not None:
        result.code2, result.seconds2, result.states2 = second.code, round(second.seconds, 2), states(second)
    classify(result, first, second)
    if result.cls == "OK-not-cached":
        planned = plan_reasons(mlmd, path, db, root, result.params_supplied)
        for task in result.tasks:  # a task's name is the last part of its path (for-loop-1/0/train)
            result.why[task] = (UNCACHED if task.rsplit("/", 1)[-1] in pipeline.uncached
                                else planned.get(task) or "caching enabled; not in mlmd-cache plan's answer")
    return result


def summary(results: list[Result], seconds: float, jobs: int) -> str:
    """The markdown summary: counts per class, then the groups and the crashes."""
    counts = Counter(result.cls for result in results)
    lines = [f"# KFP samples through mlmd-cache run-pipeline", "",
             f"{len(results)} files, {seconds / 60:.1f} min with --jobs {jobs}; "
             f"{sum(1 for r in results if r.params_supplied)} given harmless required parameters.", "",
             "| class | files |", "| --- | ---: |"]
    lines += [f"| {cls} | {counts[cls]} |" for cls in CLASSES if counts[cls]]
    for cls in ("REFUSED", "FAILED"):
        groups: dict[str, list[Result]] = defaultdict(list)
        for result in results:
            if result.cls == cls:
                groups[result.cause].append(result)
        if not groups:
            continue
        lines += ["", f"## {cls}, by cause", "", "| files | cause | e.g. |", "| ---: | --- | --- |"]
        for cause, members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
            examples = ", ".join(f"`{m.file}`" for m in members[:2])
            lines.append(f"| {len(members)} | {cause.replace('|', '/')} | {examples} |")
    lines += rerun_lines([result for result in results if result.cls == "OK-not-cached"])
    for cls, title in (("TIMEOUT", "Timed out"), ("INTERRUPTED", "Interrupted")):
        members = [result for result in results if result.cls == cls]
        if members:
            lines += ["", f"## {title}", ""]
            lines += [f"- `{m.file}`: {'; '.join(m.tasks) or m.message}" for m in members]
    crashes = [result for result in results if result.cls == "CRASH"]
    if crashes:
        lines += ["", "## Crashes", ""]
        for crash in crashes:
            lines += [f"`{crash.file}` ({crash.message}):", "", "```", crash.traceback or crash.message, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def rerun_lines(rerun: list[Result]) -> list[str]:
    """The OK-not-cached files: those whose re-executed tasks were all compiled with caching disabled
    in one line, the others with each task's reason (at most four a file)."""
    if not rerun:
        return []
    by_design = [r for r in rerun if all(why == UNCACHED for why in r.why.values())]
    names = ": " + ", ".join(f"`{r.file}`" for r in by_design) if by_design else ""
    lines = ["", "## Executed again on the re-run (OK-not-cached)", "",
             f"{len(by_design)} of {len(rerun)} only because every task executed again was compiled with caching "
             f"disabled{names}.", ""]
    for r in rerun:
        if r not in by_design:
            others = [f"{task} ({why})" for task, why in r.why.items() if why != UNCACHED]
            more = f"; and {len(others) - 4} more" if len(others) > 4 else ""
            uncached = len(r.why) - len(others)
            lines.append(f"- `{r.file}`: " + "; ".join(others[:4]) + more
                         + (f" (and {uncached} with caching disabled)" if uncached else ""))
    return lines


def write_csv(results: list[Result], path: Path) -> None:
    columns = ["file", "pipeline", "class", "params_supplied", "exit1", "exit2", "seconds1", "seconds2",
               "tasks_run1", "tasks_run2", "tasks", "message", "cause"]
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for r in results:
            tasks = "; ".join(f"{task} ({r.why[task]})" if task in r.why else task for task in r.tasks)
            writer.writerow([r.file, r.pipeline, r.cls, " ".join(r.params_supplied), r.code1, r.code2, r.seconds1,
                             r.seconds2, r.states1, r.states2, tasks, r.message, r.cause])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a directory of compiled KFP pipeline YAMLs")
    parser.add_argument("--jobs", type=int, default=1, help="files run at once (default 1)")
    parser.add_argument("--only", metavar="PATTERN", help="a glob on the path below DIRECTORY, or a text it contains")
    parser.add_argument("--out", type=Path, default=Path(".bench/kfp-samples"), help="results and stores")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per run (default 240)")
    args = parser.parse_args()
    mlmd = str(Path(sys.executable).parent / "mlmd-cache")
    if not os.access(mlmd, os.X_OK):
        mlmd = shutil.which("mlmd-cache") or sys.exit("mlmd-cache not found beside this Python nor on PATH")
    files = sorted(args.directory.rglob("*.yaml"))
    if args.only:
        pattern = args.only if any(c in args.only for c in "*?[") else f"*{args.only}*"
        files = [f for f in files if fnmatch.fnmatch(f.relative_to(args.directory).as_posix(), pattern)]
    if not files:
        sys.exit(f"no pipeline YAMLs in {args.directory}" + (f" matching {args.only!r}" if args.only else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def one(path: Path) -> Result:
        result = run_file(path, args.directory, args.out, mlmd, args.timeout)
        print(f"{result.cls:<14} {result.seconds1 + result.seconds2:7.1f}s  {result.file}  {result.message}"[:200],
              file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, files))
    write_csv(results, args.out / "results.csv")
    text = summary(results, time.monotonic() - began, args.jobs)
    (args.out / "summary.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
