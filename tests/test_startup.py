"""Start-up: what the commands and the packages import (checked in fresh interpreters, never timed:
scripts/bench_startup.py measures), a cached re-run that imports no KFP SDK (and the small stand-ins
for kfp.local's helpers that allows, checked against kfp's own), the public API imported lazily, the
pipeline IR read by libyaml as by PyYAML's own loader, and the pip shim's remembered answers."""
from __future__ import annotations

import datetime
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import struct_pb2
from kfp import compiler
from kfp.dsl.graph_component import GraphComponent
from kfp.local import executor_input_utils, executor_output_utils
from kfp.local import utils as local_utils

import lineage
import mlmd_cache
from mlmd_cache.pipeline import spec as pipeline_spec
from mlmd_cache.pipeline.spec import pipeline_spec_pb2
from mlmd_cache.runner import default_run_name
from mlmd_cache.runner.shims import Shims
from mlmd_cache.runner.values import from_protobuf, integer_outputs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # kfp's, compiling

REPO = Path(__file__).resolve().parent.parent

# What costs hundreds of milliseconds to import: none of it is needed to print help or to import the package.
HEAVY = ("kfp", "kubernetes", "networkx", "rich", "grpc", "ml_metadata", "yaml")


def imported_by(code: str, **env: str) -> list[str]:
    """The modules a fresh interpreter has imported after running ``code`` (which may end in SystemExit)."""
    script = (f"import json, sys\ntry:\n    exec({code!r})\nexcept SystemExit as exit:\n    assert not exit.code, exit\n"
              "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    return json.loads(done.stderr.splitlines()[-1])


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


@pytest.mark.parametrize("code", [
    "from mlmd_cache.cli import main; main(['--help'])",  # what the mlmd-cache console script runs
    "from mlmd_cache.cli import main; main(['run-pipeline', '--help'])",
    "from mlmd_cache.cli import main; main(['serve', '--help'])",
    "from lineage.cli import main; main(['--help'])",
    "from lineage.cli import main; main(['upstream', '--help'])",
    "from lineage.cli import main; main(['export', '--help'])",
    "import mlmd_cache",
    "import lineage",
    "from mlmd_cache import MlmdCacheError, InvalidArgumentError",
])
def test_help_and_the_packages_import_nothing_heavy(code: str) -> None:
    assert heavy(imported_by(code)) == []


def test_a_usage_error_is_told_before_anything_heavy_is_imported() -> None:
    done = subprocess.run([sys.executable, "-m", "mlmd_cache", "lookup", "--no-such-option"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and done.stderr.startswith("Error: ")
    assert heavy(imported_by("from mlmd_cache.cli import main; main(['fingerprint', '--custom-key', 'k'])")) == []


@pytest.mark.parametrize("implementation", ["", "python"])
def test_a_cache_key_needs_no_kfp_sdk_and_its_messages_are_kfps(implementation: str) -> None:
    """CacheKey loads kfp-pipeline-spec's module without kfp/__init__ (the SDK, its client, Kubernetes);
    kfp imported afterwards has the same message classes, with either protobuf implementation."""
    code = """
from mlmd_cache import CacheKey
from mlmd_cache import key
fingerprint = CacheKey.build(image="python:3.11", command=["sh", "ec"], args=["run"], input_artifacts={"dataset": [10]},
                             output_parameters={"output_parameter": "DOUBLE"}).fingerprint()
assert fingerprint.startswith("3d9a2a778fa3174c"), fingerprint
assert not [m for m in sys.modules if m.split(".")[0] in ("kfp", "kubernetes")]
import kfp.pipeline_spec.pipeline_spec_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
assert kfp.pipeline_spec.pipeline_spec_pb2 is pipeline_spec_pb2 and hasattr(kfp, "Client")
assert key.RuntimeArtifact is pipeline_spec_pb2.RuntimeArtifact
made = pipeline_spec_pb2.RuntimeArtifact(type=pipeline_spec_pb2.ArtifactTypeSchema(schema_title="system.Model"))
assert CacheKey.build(image="i", output_artifacts={"model": made}).output_artifact_types == {"model": "system.Model"}
"""
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": implementation} if implementation else {}
    assert "kfp.client" in imported_by(code, **env)  # the code ran to its end


def test_an_all_cached_rerun_imports_no_kfp_sdk(tmp_path: Path) -> None:
    """An all-CACHED re-run through the CLI imports no module named ``kfp`` or ``kfp.*`` (nor the
    Kubernetes client kfp/__init__ pulls in): kfp-pipeline-spec's proto module is there, loaded by its
    file under mlmd-cache's own name (``mlmd_cache._pipeline_spec_pb2``, see mlmd_cache.key), and
    nothing else of kfp is needed to key, look up and record cached tasks; nor PyYAML, the pipeline
    being the one the first run parsed (the parsed-pipeline cache). No task environment is
    built or looked up (the default ``--task-env venv``'s directory is not even made), and nothing is
    left in TMPDIR. An executing task does import the SDK (kfp.local's placeholder and executor-output
    helpers)."""
    from tests.startup_pipeline import startup_pipeline

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(startup_pipeline, str(path))
    run = ["run-pipeline", str(path), "--db", f"sqlite:///{tmp_path / 'mlmd.sqlite'}",
           "--pipeline-root", str(tmp_path / "root")]
    script = ("import json, sys\nfrom mlmd_cache.cli import main\ntry:\n    main(sys.argv[1:])\n"
              "except SystemExit as exit:\n    assert not exit.code, exit\n"
              "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    scratch, envs = tmp_path / "tmp", tmp_path / "envs"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}

    def cli(*options: str) -> tuple[str, list[str]]:
        done = subprocess.run([sys.executable, "-c", script, *run, *options], capture_output=True, text=True,
                              env=env, check=True)
        return done.stdout, json.loads(done.stderr.splitlines()[-1])

    executed, modules = cli("--task-env", "host")  # the host's interpreter: no environment to build
    assert "kfp.local.placeholder_utils" in modules and ": 8 executed, 1 cached" in executed, executed  # the inner square(3) is the outer one
    cached, modules = cli("--env-dir", str(envs))  # the default --task-env venv
    assert ": 9 cached" in cached and "executed" not in cached, cached
    assert [m for m in modules if m.split(".")[0] in ("kfp", "kubernetes")] == []
    assert "mlmd_cache._pipeline_spec_pb2" in modules
    assert "yaml" not in modules  # the pipeline as the first run parsed it (mlmd_cache.parsed_pipelines)
    assert not envs.exists() and list(scratch.iterdir()) == []


def test_the_stand_ins_for_kfp_local_helpers_do_as_kfps(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the runner does without importing kfp.local, as kfp.local does it: the default run name,
    a cached task's integer outputs (protobuf holds every number as a float) and the executors."""
    now = datetime.datetime(2026, 12, 6, 9, 5, 7, 4321)

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return now

    monkeypatch.setattr(datetime, "datetime", Frozen)
    assert default_run_name("my-pipe") == executor_input_utils.get_local_pipeline_resource_name("my-pipe")
    assert default_run_name("my-pipe") == "my-pipe-2026-12-06-09-05-07-004321"
    monkeypatch.undo()

    types = pipeline_spec_pb2.ParameterType.ParameterTypeEnum
    specs = pipeline_spec_pb2.ComponentOutputsSpec()
    for name, kind in (("count", types.NUMBER_INTEGER), ("ratio", types.NUMBER_DOUBLE), ("text", types.STRING),
                       ("items", types.LIST), ("never_written", types.NUMBER_INTEGER), ("flag", types.BOOLEAN)):
        specs.parameters[name].parameter_type = kind
    written = struct_pb2.Struct()
    written.update({"count": 7, "ratio": 2.0, "text": "3", "items": [1, 2.5], "flag": True, "other": 4})
    values = {name: from_protobuf(value) for name, value in written.fields.items()}
    ours = integer_outputs(dict(values), specs.parameters)
    kfps = executor_output_utils.cast_protobuf_numbers(dict(values), specs.parameters)
    assert ours == kfps and {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in kfps.items()}
    assert type(ours["count"]) is int and type(ours["ratio"]) is float and "never_written" not in ours

    executors = 0
    for name, pipeline in module_pipelines():  # containers, importers, every construct the tests use
        for label, struct in pipeline.pipeline_spec.deployment_spec["executors"].items():
            assert pipeline_spec._executor_spec(struct) == local_utils.struct_to_executor_spec(struct), (name, label)
            executors += 1
    assert executors > 100


def test_the_public_names_are_there_when_asked_for() -> None:
    for package in (mlmd_cache, lineage):
        for name in package.__all__:
            assert getattr(package, name) is getattr(importlib.import_module(package.__name__), name)
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
            package.nothing_here  # noqa: B018
    from mlmd_cache import ExecutionCache, cache  # a name and submodules, as before
    from mlmd_cache.cache import invalidation

    assert ExecutionCache is cache.ExecutionCache and invalidation.__name__ == "mlmd_cache.cache.invalidation"


def module_pipelines() -> list[tuple[str, GraphComponent]]:
    """Every pipeline the runner's and the platform spec's tests define at module level."""
    found = []
    for name in ("tests.test_control_flow", "tests.test_constructs", "tests.test_runner", "tests.test_platform_spec"):
        try:
            module = importlib.import_module(name)
        except pytest.skip.Exception:  # kfp-kubernetes is a test extra
            continue
        found += [(f"{name}.{attr}", value) for attr, value in vars(module).items() if isinstance(value, GraphComponent)]
    return found


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml")
def test_libyaml_reads_the_pipelines_as_pyyamls_own_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pipeline_spec._YAML_LOADER is yaml.CSafeLoader  # libyaml's parser, where PyYAML has it
    pipelines = module_pipelines()
    assert len(pipelines) > 40
    for name, pipeline in pipelines:
        path = tmp_path / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        text = path.read_text(encoding="utf-8")
        assert list(yaml.load_all(text, Loader=yaml.CSafeLoader)) == list(yaml.load_all(text, Loader=yaml.SafeLoader))
        loaded = {}
        for loader in (yaml.CSafeLoader, yaml.SafeLoader):
            monkeypatch.setattr(pipeline_spec, "_YAML_LOADER", loader)
            try:
                loaded[loader] = pipeline_spec.load_pipeline(str(path))
            except pipeline_spec.PipelineSpecError as error:  # refused alike (a setting a host cannot have)
                loaded[loader] = str(error)
        assert loaded[yaml.CSafeLoader] == loaded[yaml.SafeLoader], name


def test_the_pip_shim_remembers_what_it_found_installed(tmp_path: Path) -> None:
    import kfp

    install = ["python3", "-m", "pip", "install", "--quiet", f"kfp=={kfp.__version__}", "--no-deps"]
    shims = Shims()
    try:
        env = shims.host(os.environ)
        memo = Path(env["PATH"].split(os.pathsep)[0]) / "pip-satisfied.txt"
        for _ in range(2):
            subprocess.run(install, env=env, cwd=tmp_path, check=True)
            assert memo.read_text(encoding="utf-8").splitlines() == [repr(install[4:])]
        # Not installed: one line naming it, exit 1, and nothing installed (host mode never installs).
        before = _installed()
        missing = subprocess.run(["pip", "install", "--quiet", "surely-not-installed-mlmd-cache-xyz"],
                                 env=env, cwd=tmp_path, capture_output=True, text=True)
        assert missing.returncode == 1
        assert missing.stderr.count("\n") == 1 and "'surely-not-installed-mlmd-cache-xyz'" in missing.stderr
        assert "never installs" in missing.stderr
        assert _installed() == before
        assert memo.read_text(encoding="utf-8").splitlines() == [repr(install[4:])]
    finally:
        shims.close()


def test_the_pip_shims_are_made_for_the_first_task_that_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    Shims().close()  # a run whose tasks are all cached
    assert list(tmp_path.iterdir()) == []
    shims = Shims()
    path = Path(shims.host(os.environ)["PATH"].split(os.pathsep)[0])
    assert path.parent.parent == tmp_path and (path / "pip").exists()
    shims.close()
    assert list(tmp_path.iterdir()) == []


def _installed() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
