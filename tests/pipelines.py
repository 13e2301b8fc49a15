"""Shared pieces of the control-flow tests (tests/test_control_flow.py): small KFP components that do
almost nothing, and helpers that compile, run and read a run's MLMD records back.
(no `from __future__ import annotations`: KFP reads the components' annotations as types)"""

import functools
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any, List, NamedTuple, Optional

from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.store import records
from mlmd_cache.cli import main
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline

IMAGE = "python:3.11"
HOST_IMAGE = "alpine:3.19"  # recorded, never pulled: the command runs on the host


# -- components -------------------------------------------------------------------------------------

@dsl.component(base_image=IMAGE)
def echo_value(x: str) -> str:
    return x


@dsl.container_component
def say(message: str):
    return dsl.ContainerSpec(image=HOST_IMAGE, command=["echo"], args=[message])


@dsl.component(base_image=IMAGE)
def square(x: int) -> int:
    return x * x


@dsl.component(base_image=IMAGE)
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image=IMAGE)
def repeat(label: str, n: int) -> str:
    return label * n


@dsl.component(base_image=IMAGE)
def make_list(n: int) -> List[int]:
    return list(range(1, n + 1))


@dsl.component(base_image=IMAGE)
def join_ints(xs: List[int]) -> str:
    return ",".join(str(x) for x in xs)


@dsl.component(base_image=IMAGE)
def make_ds(x: int, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(str(x))


@dsl.component(base_image=IMAGE)
def copy_ds(src: Input[Dataset], out: Output[Dataset]):
    with open(src.path) as f, open(out.path, "w") as g:
        g.write("copy of " + f.read())


@dsl.component(base_image=IMAGE)
def concat(ds: Input[List[Dataset]]) -> str:
    return ",".join(open(d.path).read() for d in ds)


@dsl.component(base_image=IMAGE)
def count_chars(data: Input[Dataset]) -> int:
    with open(data.path) as f:
        return len(f.read())


@dsl.component(base_image=IMAGE)
def maybe_fail(fail: bool) -> str:
    if fail:
        raise RuntimeError("asked to fail")
    return "ok"


@dsl.component(base_image=IMAGE)
def report_status(status: dsl.PipelineTaskFinalStatus) -> str:
    import json

    return json.dumps({"state": status.state, "task": status.pipeline_task_name})


@dsl.component(base_image=IMAGE)
def produce(tag: str, out: Output[Dataset]) -> str:
    with open(out.path, "w") as f:
        f.write(tag)
    return tag


@dsl.component(base_image=IMAGE)
def consume(tag: str, ds: Input[Dataset]) -> str:
    with open(ds.path) as f:
        return tag + ":" + f.read()


@dsl.component(base_image=IMAGE)
def flaky(counter: str, succeed_on: int) -> int:
    """Counts its attempts in ``counter`` (a file outside the task directory); fails until attempt
    ``succeed_on``."""
    import os

    attempt = (int(open(counter).read()) if os.path.exists(counter) else 0) + 1
    with open(counter, "w") as f:
        f.write(str(attempt))
    if attempt < succeed_on:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@dsl.component(base_image=IMAGE)
def flaky_item(directory: str, name: str, succeed_on: int) -> str:
    """flaky, counting in ``directory/name`` (one counter per loop item)."""
    import os

    counter = os.path.join(directory, name)
    attempt = (int(open(counter).read()) if os.path.exists(counter) else 0) + 1
    with open(counter, "w") as f:
        f.write(str(attempt))
    if attempt < succeed_on:
        raise RuntimeError(f"{name}: attempt {attempt} fails")
    return f"{name}:{attempt}"


@dsl.component(base_image=IMAGE)
def invert(x: int) -> float:
    return 1 / x  # ZeroDivisionError for 0


@dsl.component(base_image=IMAGE)
def total(xs: List[float]) -> float:
    return sum(xs)


@dsl.component(base_image=IMAGE)
def stamp(directory: str, name: str, seconds: float) -> str:
    """Sleeps, and writes [start, end] (time.time()) to ``directory/name.json``."""
    import json
    import os
    import time

    start = time.time()
    time.sleep(seconds)
    end = time.time()
    with open(os.path.join(directory, name + ".json"), "w") as f:
        json.dump([start, end], f)
    return name


@dsl.component(base_image=IMAGE)
def sleepy(marker: str) -> str:
    import time

    open(marker, "w").close()
    time.sleep(60)
    return marker


@dsl.component(base_image=IMAGE)
def optional_input(x: Optional[str] = None) -> str:
    return "unset" if x is None else "set:" + x


@dsl.component(base_image=IMAGE)
def slow_limits(marker: str) -> NamedTuple("Limits", cpu=str, memory=str):
    """The limits of another task; ``marker`` is written only at its very end."""
    import time
    from collections import namedtuple

    time.sleep(0.5)  # a consumer that does not wait for this task starts (and looks) before the marker exists
    open(marker, "w").close()
    return namedtuple("Limits", ["cpu", "memory"])("1", "256M")


@dsl.component(base_image=IMAGE)
def marker_exists(marker: str) -> bool:
    import os

    return os.path.exists(marker)


# -- helpers ----------------------------------------------------------------------------------------

def compile_to(path: Path, pipeline) -> str:
    compiler.Compiler().compile(pipeline, str(path))
    return str(path)


def run(db: str, path: str, tmp_path: Path, *, params: Optional[dict] = None, **options):
    """run_pipeline with typed parameters (Python values), outputs under tmp_path/root."""
    cache = ExecutionCache(connect(db))
    return run_pipeline(cache, load_pipeline(path), dict(params or {}), pipeline_root=tmp_path / "root", **options)


def states(report) -> dict:
    return {name: task.state for name, task in report.tasks.items()}


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str) -> tuple:
    """run-pipeline ... --json: (exit code, the JSON object (None if not JSON), stderr)."""
    code, out, err = cli(*args, "--json")
    try:
        return code, json.loads(out), err
    except json.JSONDecodeError:
        return code, None, err + out


def text_states(out: str) -> dict:
    """The task lines of run-pipeline's text output: path -> state word."""
    result = {}
    for line in out.splitlines():
        if not line.strip() or line.startswith((" ", "run ")):
            continue
        parts = line.split()
        result[parts[0]] = parts[1]
    return result


def events(store, execution_id: int, kind: int) -> dict:
    """Artifact IDs of an execution's events of one kind, by path key, in event order."""
    ids: dict = {}
    for event in store.get_events_by_execution_ids([execution_id]):
        if event.type == kind:
            ids.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
    return ids


def output_ids(store, execution_id: int) -> dict:
    return events(store, execution_id, mlmd.Event.OUTPUT)


def input_ids(store, execution_id: int) -> dict:
    return events(store, execution_id, mlmd.Event.INPUT)


def prop(node, name: str) -> Any:
    return records.read_property(node, name)


def cache_key(store, execution_id: int) -> dict:
    """The full cache key stored on an execution (custom property mlmd_cache_key)."""
    return prop(store.get_executions_by_id([execution_id])[0], records.CACHE_KEY)["cacheKey"]


class RunRecords:
    """A run's executions as MLMD holds them (get_executions_by_context of its system.PipelineRun)."""

    def __init__(self, db: str, run_name: str) -> None:
        self.store = connect(db)
        context = self.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, run_name)
        assert context is not None, f"no run context {run_name!r}"
        self.executions = self.store.get_executions_by_context(context.id)
        self.by_id = {e.id: e for e in self.executions}
        self._types = {t.id: t.name for t in self.store.get_execution_types()}

    def type_of(self, execution) -> str:
        return self._types[execution.type_id]

    def __getitem__(self, execution_id: int):
        return self.by_id[execution_id]

    def named(self, task_name: str) -> list:
        return [e for e in self.executions if prop(e, "task_name") == task_name]

    def one(self, task_name: str):
        found = self.named(task_name)
        assert len(found) == 1, f"{len(found)} executions of task {task_name!r}"
        return found[0]

    def children(self, parent_id: int) -> list:
        return [e for e in self.executions if prop(e, "parent_dag_id") == parent_id]

    def task_names(self) -> set:
        return {prop(e, "task_name") for e in self.executions}

    def root(self):
        [root] = [e for e in self.executions if prop(e, "parent_dag_id") is None]
        return root


def max_concurrency(intervals) -> int:
    """The largest number of [start, end] intervals that overlap at one instant."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda p: (p[0], p[1]))  # an end before a start at the same instant
    running = best = 0
    for _, step in points:
        running += step
        best = max(best, running)
    return best


def read_stamps(directory: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


@functools.lru_cache(maxsize=None)
def example_pipelines() -> ModuleType:
    """``examples/pipelines.py``, the pipelines the docs' examples run, imported by its path: a test
    that runs one of them runs what the docs show."""
    path = Path(__file__).resolve().parent.parent / "examples" / "pipelines.py"
    spec = importlib.util.spec_from_file_location("example_pipelines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
