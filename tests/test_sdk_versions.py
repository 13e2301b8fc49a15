"""Pipelines compiled by every KFP SDK 2.x (issue 21, item 5): the test pipelines of
tests/data/sdk/sources.py as kfp 2.13.0, 2.14, 2.15, 2.16 and 2.17.3 compiled them
(scripts/compile_sdk_pipelines.py) load, plan and run with the same results; fields of the IR that
the installed kfp-pipeline-spec (0.6.0) does not know are ignored when harmless and refused in one
line, by name, when they change what runs. Real MLMD (SQLite), real uv environments."""
from __future__ import annotations

import importlib.metadata as importlib_metadata
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from click.testing import CliRunner

from mlmd_cache import ExecutionCache, connect
from mlmd_cache.cli import main
from mlmd_cache.pipeline.spec import (IGNORED_FIELDS, REFUSED_ENUM_VALUES, REFUSED_FIELDS, PipelineSpecError,
                                      UnsupportedPipelineError, load_pipeline)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

DATA = Path(__file__).parent / "data" / "sdk"
VERSIONS = sorted((path.name.removeprefix("kfp-") for path in DATA.glob("kfp-*")),
                  key=lambda version: tuple(int(part) for part in version.split(".")))
_SPEC_VERSION = importlib_metadata.version("kfp-pipeline-spec")
NAMES = sorted(path.stem for path in (DATA / "kfp-2.13.0").glob("*.yaml"))
COMPILED = [DATA / f"kfp-{version}" / f"{name}.yaml" for version in VERSIONS for name in NAMES]
NEWEST = VERSIONS[-1]


def test_every_sdk_version_and_pipeline_is_there():
    assert VERSIONS == ["2.13.0", "2.14.6", "2.15.2", "2.16.1", "2.17.3"]
    assert NAMES == ["chain", "container", "control_flow", "packages"]
    assert all(path.is_file() for path in COMPILED)


def test_the_script_compiles_what_kfp_2_13_compiles_here(tmp_path):
    """The committed kfp-2.13.0 files are what the dev venv's kfp 2.13.0 writes now, byte for byte:
    the script's output is deterministic and sources.py is what was compiled."""
    import importlib.util
    from importlib.metadata import version

    if version("kfp") != "2.13.0":
        pytest.skip(f"the files were compiled by kfp 2.13.0; kfp {version('kfp')} is installed here (the host runs this)")

    from kfp import compiler

    spec = importlib.util.spec_from_file_location("sdk_sources", DATA / "sources.py")
    sources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sources)
    assert sorted(sources.PIPELINES) == NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, pipeline in sources.PIPELINES.items():
            compiler.Compiler().compile(pipeline, str(tmp_path / f"{name}.yaml"))
            assert (tmp_path / f"{name}.yaml").read_text() == (DATA / "kfp-2.13.0" / f"{name}.yaml").read_text()


@pytest.mark.parametrize("path", COMPILED, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_every_compiled_pipeline_loads(path):
    pipeline = load_pipeline(str(path))
    assert pipeline.name == f"sdk-{path.stem.replace('_', '-')}"
    assert yaml.safe_load(path.read_text())["sdkVersion"] == path.parent.name  # kfp-2.17.3 wrote kfp-2.17.3/


@pytest.fixture
def store(tmp_path: Path) -> str:
    """An empty SQLite store (`plan` opens an existing store only)."""
    url = f"sqlite:///{tmp_path / 'store' / 'mlmd.sqlite'}"
    connect(url)
    return url


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def nothing_written(url: str) -> bool:
    store = connect(url)
    return not store.get_executions() and not store.get_contexts() and not store.get_artifacts()


@pytest.mark.parametrize("version", VERSIONS)
def test_plan_works_on_every_pipeline_of_every_sdk(version, store):
    for name in NAMES:
        code, out, err = cli("plan", str(DATA / f"kfp-{version}" / f"{name}.yaml"), "--db", store)
        assert code == 0, err
        assert f"plan for pipeline sdk-{name.replace('_', '-')}:" in out and "(nothing was run or written)" in out
    assert nothing_written(store)


# == fields the installed kfp-pipeline-spec does not know ===========================================

def edited(tmp_path: Path, edit: Callable[[dict], Any], source: Optional[Path] = None,
           platform: Optional[dict] = None) -> str:
    """A copy of a compiled pipeline (the newest SDK's chain by default) changed by ``edit``."""
    documents = list(yaml.safe_load_all((source or DATA / f"kfp-{NEWEST}" / "chain.yaml").read_text()))
    edit(documents[0])
    if platform is not None:
        documents.append(platform)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return str(path)


def test_harmless_new_fields_are_ignored(tmp_path):
    """kfp 2.17.3's dsl.PipelineConfig TTLs (platform spec), compiled for real, load; so does a
    `literals` list (Literal inputs, in the proto since kfp-pipeline-spec 2.14) and an unknown field
    left at its default, which protobuf would treat as absent."""
    ttl = load_pipeline(str(DATA / f"kfp-{NEWEST}" / "new" / "ttl.yaml"))
    assert ttl.name == "sdk-ttl"

    def edit(document):
        document["root"]["inputDefinitions"]["parameters"]["rows"]["literals"] = [2, 4, 8]
        document["components"]["comp-train"]["inputDefinitions"]["parameters"]["lr"]["literals"] = [0.5]
        document["deploymentSpec"]["executors"]["exec-train"]["container"]["futureFlag"] = False
        document["components"]["comp-train"]["futureList"] = []

    pipeline = load_pipeline(edited(tmp_path, edit))
    assert pipeline.spec.root.input_definitions.parameters["rows"].default_value.number_value == 4
    assert "exec-train" in pipeline.executors


def test_the_decision_table_covers_every_field_new_since_kfp_pipeline_spec_0_6_0():
    """Every field and enum value kfp-pipeline-spec 2.17.3 added to 0.6.0's pipeline_spec.proto
    (read from the two wheels' descriptors) that the IR can hold is decided; the sub-fields of
    WorkspaceConfig and TaskConfigPassthrough go with their refused parent, and
    RuntimeArtifact.custom_path lives in executor outputs, not in the IR."""
    assert set(IGNORED_FIELDS) == {
        ("ml_pipelines.ComponentInputsSpec.ParameterSpec", "literals"),
        ("ml_pipelines.PipelineConfig", "resourceTtlOnCompletion"),
        ("ml_pipelines.PipelineConfig", "resourceTtlOnSuccess"),
        ("ml_pipelines.PipelineConfig", "resourceTtlOnFailure")}
    assert set(REFUSED_FIELDS) == {
        ("ml_pipelines.ComponentSpec", "taskConfigPassthroughs"),
        ("ml_pipelines.PipelineConfig", "workspace"),
        ("ml_pipelines.PipelineConfig", "activeDeadlineSeconds"),
        ("ml_pipelines.PipelineDeploymentConfig.ImporterSpec", "downloadToWorkspace")}
    assert set(REFUSED_ENUM_VALUES) == {("ml_pipelines.ParameterType.ParameterTypeEnum", "TASK_CONFIG")}


@pytest.mark.parametrize("name, message", [
    ("workspace", "pipeline 'sdk-workspace': dsl.PipelineConfig(workspace=...) "
                  "(platforms.kubernetes.pipelineConfig.workspace, compiled by kfp-2.17.3) is not supported by "
                  "run-pipeline: it needs a volume shared by the run's tasks at dsl.WORKSPACE_PATH_PLACEHOLDER"),
    ("task_config", "pipeline 'sdk-task-config', task 'sized': a dsl.TaskConfig input "
                    "(components.comp-sized.inputDefinitions.parameters.config.parameterType: TASK_CONFIG, compiled "
                    "by kfp-2.17.3) is not supported by run-pipeline"),
])
@pytest.mark.parametrize("command", ["plan", "run-pipeline"])
def test_behavioural_new_fields_are_refused_in_one_line_with_nothing_written(name, message, command, store,
                                                                              tmp_path):
    path = DATA / f"kfp-{NEWEST}" / "new" / f"{name}.yaml"
    code, out, err = cli(command, str(path), "--db", store)
    assert code != 0
    assert err.strip().startswith(f"Error: {message}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert nothing_written(store)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["components"]["comp-train"].__setitem__("taskConfigPassthroughs", [{"field": "RESOURCES"}]),
     ", task 'train': dsl.component(task_config_passthroughs=...) (components.comp-train.taskConfigPassthroughs, compiled by "
     "kfp-2.17.3) is not supported by run-pipeline"),
    (lambda d: d["components"]["comp-train"].__setitem__("futureSetting", {"replicas": 2}),
     ", task 'train': the field components.comp-train.futureSetting (compiled by kfp-2.17.3) is not supported by run-pipeline: "
     f"the installed kfp-pipeline-spec {_SPEC_VERSION} does not know it, and it may change what runs"),
    (lambda d: d["deploymentSpec"]["executors"]["exec-train"]["container"].__setitem__("futureFlag", True),
     ", task 'train': the field deploymentSpec.executors.exec-train.container.futureFlag (compiled by kfp-2.17.3)"),
    (lambda d: d["components"]["comp-train"]["inputDefinitions"]["parameters"]["lr"].__setitem__(
        "parameterType", "NUMBER_COMPLEX"),
     ", task 'train': the enum value components.comp-train.inputDefinitions.parameters.lr.parameterType: NUMBER_COMPLEX "
     "(compiled by kfp-2.17.3)"),
    (lambda d: (d.__setitem__("sdkVersion", "kfp-2.99.0"), d["root"]["dag"]["tasks"]["train"].__setitem__(
        "gangScheduling", True)),
     ": the field root.dag.tasks.train.gangScheduling (compiled by kfp-2.99.0)"),
    (lambda d: (d.pop("sdkVersion"), d.__setitem__("pipelineTimeout", 30)),
     ": the field pipelineTimeout (compiled by an unknown SDK (no sdkVersion))"),
], ids=["listed", "unknown-field", "unknown-executor-field", "unknown-enum-value", "future-sdk", "no-sdk-version"])
def test_unknown_or_behavioural_fields_are_refused_by_name(tmp_path, edit, message):
    with pytest.raises(UnsupportedPipelineError) as error:
        load_pipeline(edited(tmp_path, edit))
    assert str(error.value).startswith(f"pipeline 'sdk-chain'{message}")  # a component's field names its task
    assert "\n" not in str(error.value)


def test_a_components_field_names_the_first_task_that_runs_it_by_its_path(tmp_path):
    """Inside a nested DAG the task is named by its path; a hand-made component that contains itself
    is walked once, not until the recursion limit."""
    def edit(document):
        document["components"]["comp-train"]["taskConfigPassthroughs"] = [{"field": "RESOURCES"}]
        document["components"]["comp-wrapper"] = {"dag": {"tasks": {
            "again": {"componentRef": {"name": "comp-wrapper"}, "taskInfo": {"name": "again"}},
            "a-train": {"componentRef": {"name": "comp-train"}, "taskInfo": {"name": "a-train"}}}}}
        document["root"]["dag"]["tasks"]["a-wrap"] = {"componentRef": {"name": "comp-wrapper"},
                                                      "taskInfo": {"name": "a-wrap"}}

    with pytest.raises(UnsupportedPipelineError) as error:
        load_pipeline(edited(tmp_path, edit))
    assert str(error.value).startswith("pipeline 'sdk-chain', task 'a-wrap/a-train': dsl.component("
                                       "task_config_passthroughs=...) (components.comp-train.taskConfigPassthroughs")


@pytest.mark.parametrize("command", ["plan", "run-pipeline"])
def test_a_workspace_placeholder_without_a_workspace_is_refused_naming_the_task(tmp_path, store, command):
    """dsl.WORKSPACE_PATH_PLACEHOLDER in a file whose workspace was edited away (kfp refuses to compile
    it without one): refused before anything is written, not failed by kfp.local's resolver mid-run."""
    def edit(document):
        document["deploymentSpec"]["executors"]["exec-train"]["container"]["args"] += [
            "--workspace", "{{$.workspace_path}}/data"]

    code, out, err = cli(command, edited(tmp_path, edit), "--db", store)
    assert code == 2 and out == "", out + err
    assert err.strip() == ("Error: pipeline 'sdk-chain', task 'train': dsl.WORKSPACE_PATH_PLACEHOLDER "
                           "({{$.workspace_path}}: the run's workspace volume) is not supported by run-pipeline"), err
    assert nothing_written(store)


def test_a_pipeline_deadline_and_a_workspace_importer_are_refused(tmp_path):
    platform = {"platforms": {"kubernetes": {"pipelineConfig": {"activeDeadlineSeconds": 60,
                                                                "resourceTtlOnSuccess": 10}}}}
    with pytest.raises(UnsupportedPipelineError, match=r"dsl\.PipelineConfig\(active_deadline_seconds=\.\.\.\) "
                                                       r"\(platforms\.kubernetes\.pipelineConfig\.activeDeadline"):
        load_pipeline(edited(tmp_path, lambda d: None, platform=platform))

    def importer(document):
        document["deploymentSpec"]["executors"]["exec-train"] = {"importer": {
            "artifactUri": {"constant": "/tmp/x"}, "typeSchema": {"schemaTitle": "system.Dataset"},
            "downloadToWorkspace": True}}

    with pytest.raises(UnsupportedPipelineError, match=r"dsl\.importer\(download_to_workspace=True\) \(deploymentSpec"
                                                       r"\.executors\.exec-train\.importer\.downloadToWorkspace"):
        load_pipeline(edited(tmp_path, importer))


def test_malformed_new_fields_are_one_line_errors(tmp_path):
    """A document whose shapes do not fit (a list where a message is, a number as a map) is still
    ParseDict's one-line error, never a traceback from the walk."""
    for edit in (lambda d: d["components"].__setitem__("comp-train", ["not", "a", "message"]),
                 lambda d: d["root"]["dag"].__setitem__("tasks", 7),
                 lambda d: d.__setitem__("pipelineInfo", "text")):
        with pytest.raises(PipelineSpecError) as error:
            load_pipeline(edited(tmp_path, edit))
        assert "\n" not in str(error.value)


# == running them: venv mode, the same results from every SDK version ================================

@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The task environments of this module's runs: one per requirement set (kfp==<version>, with
    six for `packages`), built once by uv and shared by the runs of every test here."""
    return tmp_path_factory.mktemp("task-envs")


def artifact_contents(store, report) -> dict[str, Optional[str]]:
    """Every output artifact's file content by ``task/output`` (None where the output is no file,
    as a Metrics artifact whose values live in MLMD)."""
    contents: dict[str, Optional[str]] = {}
    for path, task in report.tasks.items():
        for output, ids in task.output_artifact_ids.items():
            for artifact in store.get_artifacts_by_id(ids):
                uri = Path(artifact.uri)
                contents[f"{path}/{output}"] = uri.read_text() if uri.is_file() else None
    return contents


def run_every_version(name: str, versions: tuple, tmp_path: Path, **options) -> dict[str, tuple]:
    """Each SDK's compiled pipeline in its own store: every task that runs is COMPLETE (branches
    not taken SKIPPED), a second run is all CACHED from the first run's executions (but the exit
    task: :data:`EXECUTES_AGAIN`). Returns, per version, what must be the same for every SDK: the
    states, the run's output parameters, each task's output parameters, the artifacts' contents,
    the metrics, and the container tasks' fingerprints."""
    from mlmd_cache.runner import run_pipeline

    results: dict[str, tuple] = {}
    for version in versions:
        url = f"sqlite:///{tmp_path / version / 'mlmd.sqlite'}"
        cache = ExecutionCache(connect(url))
        pipeline = load_pipeline(str(DATA / f"kfp-{version}" / f"{name}.yaml"))
        first = run_pipeline(cache, pipeline, {}, run_name="first", pipeline_root=tmp_path / version / "root",
                             **options)
        states = {path: task.state for path, task in first.tasks.items()}
        assert first.succeeded, (version, {path: task.error for path, task in first.tasks.items() if task.error})
        containers = {path for path, task in first.tasks.items() if task.kind == "container" and task.state != "SKIPPED"}
        assert containers and {states[path] for path in containers} == {"COMPLETE"}, (version, states)
        assert sorted(path for path, state in states.items() if state == "SKIPPED") == SKIPPED[name], version
        second = run_pipeline(cache, pipeline, {}, run_name="second", pipeline_root=tmp_path / version / "root",
                              **options)
        for path in containers - set(EXECUTES_AGAIN[name]):
            assert second.tasks[path].state == "CACHED", (version, path, second.tasks[path].state)
            assert second.tasks[path].cached_execution_id == first.tasks[path].execution_id
        for path in EXECUTES_AGAIN[name]:
            assert second.tasks[path].state == "COMPLETE", (version, path, second.tasks[path].state)
        assert second.output_parameters == first.output_parameters
        results[version] = (
            states,
            first.output_parameters,
            {path: task.output_parameters for path, task in first.tasks.items()},
            artifact_contents(connect(url), first),
            sorted((metric.task, metric.output, sorted(metric.values.items())) for metric in first.metrics),
            {path: first.tasks[path].fingerprint for path in containers},
        )
    return results


_PARTS = ("states", "run outputs", "task outputs", "artifact contents", "metrics")


@pytest.mark.parametrize("name", NAMES)
def test_every_sdk_version_runs_in_venv_mode_with_the_same_results(name, env_dir, tmp_path):
    """kfp 2.14+'s preamble asks for kfp==<its version>: a uv environment, never the dev venv; the
    results are the same for every SDK version."""
    results = run_every_version(name, VERSIONS, tmp_path, task_env="venv", env_dir=env_dir)
    reference = results[VERSIONS[0]]
    for version in VERSIONS[1:]:
        for part, what in enumerate(_PARTS):
            assert results[version][part] == reference[part], f"kfp {version} vs {VERSIONS[0]}: {what}"
    assert reference[1] == EXPECTED_OUTPUTS[name]
    if name == "container":  # no SDK version in its command: the same cache key from every SDK, as in KFP
        assert len({tuple(sorted(result[5].items())) for result in results.values()}) == 1


@pytest.mark.parametrize("name", NAMES)
def test_the_oldest_and_newest_sdk_run_in_docker_mode_with_venv_modes_results(name, python_3_11, env_dir, tmp_path):
    """kfp 2.13.0 and 2.17.3 in their image (python:3.11, as compiled; the preamble installs that
    kfp in the container): the same results, records and fingerprints as in venv mode."""
    ends = (VERSIONS[0], VERSIONS[-1])
    in_docker = run_every_version(name, ends, tmp_path / "docker", task_env="docker")
    in_venv = run_every_version(name, ends, tmp_path / "venv", task_env="venv", env_dir=env_dir)
    for version in ends:
        for part, what in enumerate((*_PARTS, "fingerprints")):
            assert in_docker[version][part] == in_venv[version][part], f"kfp {version}, docker vs venv: {what}"


# The branches not taken (n=4 is "medium"): dsl.If's and dsl.Else's task, and their condition DAGs.
SKIPPED = {"chain": [], "container": [], "packages": [], "control_flow": [
    "exit-handler-1/condition-branches-2/condition-3", "exit-handler-1/condition-branches-2/condition-3/say",
    "exit-handler-1/condition-branches-2/condition-5", "exit-handler-1/condition-branches-2/condition-5/say-3"]}

# A dsl.PipelineTaskFinalStatus input names the run (pipelineJobResourceName), so the exit task's
# cache key differs from run to run: it executes again, in KFP as here.
EXECUTES_AGAIN = {"chain": [], "container": [], "packages": [], "control_flow": ["report-status"]}

EXPECTED_OUTPUTS = {"chain": {"Output": 1.333333}, "container": {"Output": "5"}, "control_flow": {"Output": 16},
                    "packages": {"Output": "hello with six 1.16.0"}}
