"""Shared fixtures: a fresh store on the real MLMD core, on each backend of tests/backends.py, and a
three-task chain A -> B -> C."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import pytest
from hypothesis import settings

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, TaskExecution, connect
from tests.backends import BACKENDS, Backends

# The `compose` backend: docker-compose.yml's MLMD server via pytest-docker (fixtures in tests/compose.py);
# the Python image of the --task-env docker tests (tests/docker_images.py); the headless Chromium of the
# HTML export tests (tests/browser.py).
pytest_plugins = ["tests.browser", "tests.compose", "tests.docker_images"]

PIPELINE = "chain"

# Task environments (run-pipeline --task-env venv, the default) of the test runs: one cache per
# checkout, kept between sessions (built once, as a user's is), never the user's own. Tests of the
# cache itself use folders of their own.
os.environ.setdefault("MLMD_CACHE_ENV_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "task-envs"))
# The same for the parsed-pipeline cache (mlmd_cache.pipeline.parsed_pipelines) of the CLI's runs.
os.environ.setdefault("MLMD_CACHE_PIPELINE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "pipelines"))

# Property tests draw the same examples on every run and machine: a suite that fails by chance is a
# defect. (A failure a random search finds becomes an explicit test, as -0 in tests/test_key.py did.)
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    """The session's store backends (tests/backends.py); stops their shared servers at the end."""
    made = Backends(tmp_path_factory.mktemp("backends"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=(*BACKENDS, "compose"))
def store_url(request: pytest.FixtureRequest, backends: Backends, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty MLMD store; a test that uses it runs once per backend, which its ID names
    (``[sqlite]``, ``[mysql]``, ``[postgresql]``, ``[serve-sqlite]``, ``[serve-mysql]``, ``[compose]``)."""
    if request.param == "compose":  # the docker-compose.yml stack (tests/compose.py)
        with request.getfixturevalue("compose_stack").fresh_store() as url:
            yield url
        return
    with backends.fresh_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_db(backends: Backends, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty SQLite store, for tests where one backend is enough (a file in a new
    folder of the test's own; test_runner.py has its own, a plain path)."""
    with backends.fresh_store("sqlite", tmp_path / "store") as url:
        yield url


@pytest.fixture
def cache(store_url: str) -> ExecutionCache:
    return ExecutionCache(connect(store_url))


class Chain:
    """Runs the chain A -> B -> C: A writes a dataset, B trains a model on it with a learning rate,
    C evaluates the model. Every task that really executes writes a fresh file under ``root``."""

    def __init__(self, cache: ExecutionCache, root: Path) -> None:
        self.cache = cache
        self.root = root
        self.executed: list[str] = []

    def _work(self, run: str, task: str, outputs: dict[str, str], parameters: Optional[dict] = None):
        def work(started: TaskExecution) -> Outputs:
            self.executed.append(task)
            uris = {}
            for name in outputs:
                path = self.root / run / task / f"{name}-{started.id}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{task}/{name} of {run}")
                uris[name] = str(path)
            return Outputs(artifacts=uris, parameters=parameters or {})

        return work

    @staticmethod
    def _failing(task: str):
        def work(started: TaskExecution) -> Outputs:
            raise RuntimeError(f"task {task} failed")

        return work

    def run(
        self,
        run_name: str,
        *,
        lr: float = 0.1,
        enable_caching: Optional[bool] = None,
        cache_a: bool = True,
        fail_task: Optional[str] = None,
    ) -> dict[str, TaskExecution]:
        self.executed = []
        run = self.cache.pipeline_run(PIPELINE, run_name, enable_caching=enable_caching)
        results: dict[str, TaskExecution] = {}

        def step(name: str, key: CacheKey, outputs: dict[str, str], parameters=None, enable_cache=True):
            work = self._failing(name) if name == fail_task else self._work(run_name, name, outputs, parameters)
            results[name] = self.cache.execute(run, Task(name, key, enable_cache=enable_cache), work)
            return results[name]

        a = step("A", CacheKey.build(image="python:3.11", command=["python", "-c", "make_data()"],
                                     output_artifacts={"dataset": "system.Dataset"}),
                 {"dataset": "system.Dataset"}, enable_cache=cache_a)
        b = step("B", CacheKey.build(image="python:3.11", command=["python", "-c", "train()"],
                                     input_artifacts={"dataset": a.output_artifact_ids["dataset"]},
                                     input_parameters={"lr": lr},
                                     output_artifacts={"model": "system.Model"},
                                     output_parameters={"loss": "NUMBER_DOUBLE"}),
                 {"model": "system.Model"}, {"loss": lr / 2})
        step("C", CacheKey.build(image="python:3.11", command=["python", "-c", "evaluate()"],
                                 input_artifacts={"model": b.output_artifact_ids["model"]},
                                 output_artifacts={"metrics": "system.Metrics"}),
             {"metrics": "system.Metrics"})
        return results


@pytest.fixture
def chain(cache: ExecutionCache, tmp_path: Path) -> Chain:
    return Chain(cache, tmp_path / "outputs")
