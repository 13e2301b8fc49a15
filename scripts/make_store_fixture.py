#!/usr/bin/env python
"""Make the committed SQLite stores of tests/test_store_versions.py: one per ML Metadata version.

Each end of the project's stack writes a store with the ML Metadata it has (1.17.1 on older glibc,
1.21 where its wheels install): ``tests/data/stores/mlmd-<version>.sqlite``, holding one run of
``tests/data/stores/params.yaml`` (two tasks with parameter outputs only, so that the store is the
whole cache: no output file must exist for its executions to stay cache sources). The other end's
tests then open it, migrate it when asked, and extend it: the same pipeline run there is all CACHED
from the executions this script recorded.

``params.yaml`` is compiled by the installed KFP SDK when it is missing (and committed): both ends
use the same file, so the same cache keys.

    python scripts/make_store_fixture.py            # writes tests/data/stores/mlmd-<version>.sqlite
"""
# No `from __future__ import annotations`: kfp reads the components' annotations as types.
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

STORES = Path(__file__).resolve().parent.parent / "tests" / "data" / "stores"
PIPELINE = STORES / "params.yaml"
RUN_NAME = "written-by-the-other-end"


def compile_pipeline() -> None:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def add(a: int, b: int) -> int:
        return a + b

    @dsl.component(base_image="python:3.11")
    def square(x: int) -> int:
        return x * x

    @dsl.pipeline(name="store-versions")
    def pipeline(a: int = 2, b: int = 3) -> int:
        return square(x=add(a=a, b=b).output).output

    compiler.Compiler().compile(pipeline, str(PIPELINE))


def main() -> None:
    import ml_metadata

    from mlmd_cache import ExecutionCache, connect
    from mlmd_cache.pipeline.spec import load_pipeline
    from mlmd_cache.runner import run_pipeline

    if not PIPELINE.exists():
        compile_pipeline()
    target = STORES / f"mlmd-{ml_metadata.__version__}.sqlite"
    with tempfile.TemporaryDirectory() as work:
        store = Path(work) / "store.sqlite"
        report = run_pipeline(ExecutionCache(connect(f"sqlite:///{store}")), load_pipeline(str(PIPELINE)),
                              run_name=RUN_NAME, pipeline_root=Path(work) / "root")
        if not report.succeeded:
            sys.exit(f"make_store_fixture: the run failed: {[t.error for t in report.tasks.values() if t.error]}")
        with sqlite3.connect(store) as db:
            db.execute("VACUUM")
            [(schema,)] = db.execute("SELECT schema_version FROM MLMDEnv").fetchall()
        shutil.copyfile(store, target)
    print(f"wrote {target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd()) else target}: "
          f"ML Metadata {ml_metadata.__version__}, schema version {schema}, run {RUN_NAME!r} "
          f"(output {report.output_parameters})")


if __name__ == "__main__":
    main()
