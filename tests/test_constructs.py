"""The crash test: every construct of the installed kfp's DSL (and kfp-kubernetes) compiled into some
pipeline here and run with the CLI, `mlmd-cache run-pipeline FILE --json`, as a user runs it (a subprocess).

Each pipeline either runs (exit 0, or 1 where it is meant to fail), or is refused before anything
runs (exit 2, one line `Error: ...` on stderr naming the construct, no run in the store); never a
traceback. The pipelines share one store (their names differ). `COVERED` maps every construct to
the pipelines that use it, and `test_every_dsl_name_is_covered_or_is_no_construct` fails on a DSL
name (a newer kfp) that is neither covered nor listed, with a reason, as no pipeline construct.
The pipelines of names that kfp 2.13 lacks (notebook components, TaskConfig, workspaces,
set_debug_pause, add_node_affinity, ...) and their list entries exist only where the installed kfp
has them: the host checks kfp 2.13's names, the Debian 13 root (scripts/trixie.sh) kfp 2.17's."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import json
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import pytest
from click.testing import CliRunner
from kfp import compiler, components, dsl
from kfp.dsl import (HTML, Artifact, ClassificationMetrics, Dataset, Input, InputPath, Markdown, Metrics, Model,
                     Output, OutputPath, PipelineTaskFinalStatus, SlicedClassificationMetrics)

from mlmd_cache import connect
from mlmd_cache.cli import main

try:
    from kfp import kubernetes
except ImportError:  # a test extra (setup.cfg [test]); its pipelines are skipped without it
    kubernetes = None

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

IMAGE = "python:3.11"
CLI = [str(Path(sys.executable).with_name("mlmd-cache"))]
if not Path(CLI[0]).exists():
    CLI = [sys.executable, "-m", "mlmd_cache"]


# ---------------------------------------------------------------- components (tiny: ~0.15 s each)

@dsl.component(base_image=IMAGE, packages_to_install=["PyYAML"])
def produce(n: int, data: Output[Dataset], model: Output[Model], art: Output[Artifact], metrics: Output[Metrics],
            cm: Output[ClassificationMetrics], sliced: Output[SlicedClassificationMetrics], html: Output[HTML],
            md: Output[Markdown], text_out: OutputPath(str), file_out: OutputPath("Dataset")
            ) -> NamedTuple("Produced", count=int, ratio=float, flag=bool, items=list, info=dict, word=str):
    from collections import namedtuple

    for artifact, content in ((data, "d" * n), (model, "m"), (art, "a"), (html, "<p>hi</p>"), (md, "# hi")):
        with open(artifact.path, "w") as f:
            f.write(content)
    data.metadata["rows"] = n
    metrics.log_metric("accuracy", 0.9)
    cm.log_confusion_matrix(["a", "b"], [[1, 0], [0, 1]])
    cm.log_roc_curve([0.0, 1.0], [0.0, 1.0], [1.0, 0.0])
    sliced.metadata["slices"] = 1  # (its log_* methods fail in kfp 2.13: no _sliced_metrics until __init__ runs)
    with open(text_out, "w") as f:
        f.write("written")
    with open(file_out, "w") as f:
        f.write("file")
    return namedtuple("Produced", "count ratio flag items info word")(n, n / 2, True, [1, "two"], {"k": [1]}, "word")


@dsl.component(base_image=IMAGE)
def consume(data: Input[Dataset], model: Input[Model], art: Input[Artifact], metrics: Input[Metrics],
            cm: Input[ClassificationMetrics], html: Input[HTML], md: Input[Markdown], text_in: str,
            file_in: InputPath("Dataset"), count: int, ratio: float, flag: bool, items: list, info: dict, word: str,
            maybe: Optional[str] = None, missing: Optional[int] = None) -> str:
    import os

    problems = []
    if open(data.path).read() != "d" * count or data.metadata.get("rows") != count:
        problems.append("data")
    if metrics.metadata.get("accuracy") != 0.9:
        problems.append("metrics")
    # (an OutputPath(str) parameter is read as a plain str: kfp 2.13's executor takes an InputPath(str)
    # of a Python component for an artifact, and fails on its own before anything else)
    if text_in != "written" or open(file_in).read() != "file":
        problems.append("paths")
    if (ratio, flag, items, info, word, maybe, missing) != (count / 2, True, [1, "two"], {"k": [1]}, "word", "m",
                                                            None):
        problems.append(f"parameters {(ratio, flag, items, info, word, maybe, missing)}")
    if os.environ.get("MLMD_TEST_ENV") != "yes":
        problems.append("set_env_variable")
    if problems:
        raise SystemExit("wrong inputs: " + ", ".join(problems))
    return model.uri + art.uri + cm.uri + html.uri + md.uri


@dsl.component(base_image=IMAGE)
def echo(x: str = "x") -> str:
    return x


@dsl.component(base_image=IMAGE)
def number(x: float = 1.0) -> float:
    return x


@dsl.component(base_image=IMAGE)
def integer(x: Optional[int] = None, expected: int = 3):
    if x != expected:
        raise SystemExit(f"expected {expected!r}, got {x!r}")


@dsl.component(base_image=IMAGE)
def add(a: float, b: float) -> float:
    return a + b


@dsl.component(base_image=IMAGE)
def total(values: List[float]) -> float:
    return sum(values)


@dsl.component(base_image=IMAGE)
def expect(actual: str, expected: str):
    if actual != expected:
        raise SystemExit(f"expected {expected!r}, got {actual!r}")


@dsl.component(base_image=IMAGE)
def expect_number(actual: float, expected: float):
    if actual != expected:
        raise SystemExit(f"expected {expected!r}, got {actual!r}")


@dsl.component(base_image=IMAGE)
def write(text: str, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(text)


@dsl.component(base_image=IMAGE)
def read(data: Input[Dataset]) -> str:
    return open(data.path).read()


@dsl.component(base_image=IMAGE)
def read_all(datasets: Input[List[Dataset]]) -> str:
    return ",".join(open(d.path).read() for d in datasets)


@dsl.component(base_image=IMAGE)
def make_list() -> list:
    return [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


@dsl.component(base_image=IMAGE)
def flip() -> str:
    return "heads"


@dsl.component(base_image=IMAGE)
def fail(message: str = "deliberate failure"):
    raise SystemExit(message)  # no traceback: the output must have none


@dsl.component(base_image=IMAGE)
def report(status: PipelineTaskFinalStatus, expected: str) -> str:
    if status.state != expected or not status.pipeline_task_name:
        raise SystemExit(f"final status {status.state!r} of {status.pipeline_task_name!r}, expected {expected!r}")
    return status.state


@dsl.component(base_image=IMAGE)
def flaky(marker: str) -> str:
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise SystemExit("first attempt fails")
    return "second attempt"


@dsl.component(base_image=IMAGE)
def where() -> str:
    return dsl.get_uri("out")


@dsl.component(base_image=IMAGE)
def placeholders(job_name: str, resource_name: str, job_id: str, task_name: str, task_id: str, root: str,
                 created: str, scheduled: str) -> str:
    values = [job_name, resource_name, job_id, task_name, task_id, created, scheduled]
    if not all(values) or any("{{" in value for value in values + [root]):
        raise SystemExit(f"unresolved placeholders: {values + [root]}")
    return " ".join(values)


@dsl.container_component
def shell(message: str, out: OutputPath(str), data: Output[Dataset], opt: Optional[str] = None):
    return dsl.ContainerSpec(
        image="alpine:3.19",
        command=["sh", "-c", 'o="$1"; d="$2"; shift 2; mkdir -p "$(dirname "$o")" "$(dirname "$d")" && '
                             'echo "$0" > "$o" && echo "$@" > "$d"'],
        args=[dsl.ConcatPlaceholder(["msg=", message]), out, data.path,
              dsl.IfPresentPlaceholder(input_name="opt", then=["--opt", opt], else_=["--no-opt"])])


@dsl.container_component
def executor_files(data: Output[Dataset]):
    """The executor input ({{$}}) and the executor output file ({{$.outputs.output_file}})."""
    return dsl.ContainerSpec(
        image="alpine:3.19", command=["sh", "-c",
                                      'case "$0" in *outputs*) ;; *) exit 3;; esac; mkdir -p "$(dirname "$1")" '
                                      '"$(dirname "$2")" && echo "{}" > "$1" && echo x > "$2"'],
        args=[dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER, dsl.PIPELINE_TASK_EXECUTOR_OUTPUT_PATH_PLACEHOLDER,
              data.path])


loaded = components.load_component_from_text("""
name: Say
inputs:
- {name: word, type: String}
outputs:
- {name: said, type: String}
implementation:
  container:
    image: alpine:3.19
    command: [sh, -c, 'mkdir -p "$(dirname "$1")" && echo "$0" > "$1"', {inputValue: word}, {outputPath: said}]
""")


# ---------------------------------------------------------------- pipelines

@dsl.pipeline(name="c-components")
def components_pipeline(n: int = 3, maybe: Optional[str] = None):
    made = produce(n=n)
    used = consume(data=made.outputs["data"], model=made.outputs["model"], art=made.outputs["art"],
                   metrics=made.outputs["metrics"], cm=made.outputs["cm"], html=made.outputs["html"],
                   md=made.outputs["md"], text_in=made.outputs["text_out"], file_in=made.outputs["file_out"],
                   count=made.outputs["count"], ratio=made.outputs["ratio"], flag=made.outputs["flag"],
                   items=made.outputs["items"], info=made.outputs["info"], word=made.outputs["word"], maybe=maybe)
    used.set_env_variable("MLMD_TEST_ENV", "yes")
    said = shell(message=used.output)
    expect(actual=read(data=said.outputs["data"]).output, expected="--no-opt\n")
    given = shell(message="given", opt="an option").after(said)
    expect(actual=given.outputs["out"], expected="msg=given\n")
    expect(actual=read(data=given.outputs["data"]).output, expected="--opt an option\n")
    expect(actual=loaded(word="hello").outputs["said"], expected="hello\n")
    executor_files()
    where()


@dsl.pipeline(name="c-task-settings")
def task_settings_pipeline(image: str = "python:3.11-slim", cpu: str = "1"):
    limits = echo(x="2")
    first = echo(x="a")
    (first.set_cpu_limit("1").set_memory_limit("1G").set_cpu_request("0.5").set_memory_request("100M")
     .set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1).add_node_selector_constraint("NVIDIA_TESLA_T4")
     .set_display_name("First task").set_caching_options(False).set_env_variable("A", "b"))
    second = echo(x="b").after(first).set_caching_options(True, cache_key="v1").set_retry(1, backoff_duration="0s")
    echo(x="c").set_container_image("python:3.11-slim").after(second)
    echo(x="d").set_container_image(image)
    echo(x="e").set_cpu_limit(limits.output).set_memory_limit("1G")
    echo(x="f").set_gpu_limit(1)


@dsl.pipeline(name="c-settings-from-params")
def settings_from_params_pipeline(cpu: str = "1", memory: str = "1G", accelerator: str = "nvidia.com/gpu"):
    echo(x="a").set_cpu_limit(cpu).set_memory_limit(memory).set_accelerator_type(accelerator).set_accelerator_limit(1)


@dsl.pipeline(name="c-inner")
def inner(text: str = "in") -> NamedTuple("Outputs", data=Dataset, said=str):
    written = write(text=text)
    said = read(data=written.outputs["out"])
    return NamedTuple("Outputs", data=Dataset, said=str)(written.outputs["out"], said.output)


@dsl.pipeline(name="c-middle")
def middle(text: str) -> str:
    return read(data=inner(text=text).outputs["data"]).output


@dsl.pipeline(name="c-nested", description="nested pipelines and pipeline outputs", display_name="Nested",
              pipeline_root="gs://never-used-since-the-cli-names-a-root", pipeline_config=dsl.PipelineConfig())
def nested_pipeline() -> NamedTuple("Outputs", data=Dataset, said=str):
    once = inner(text="one")
    expect(actual=once.outputs["said"], expected="one")
    expect(actual=read(data=once.outputs["data"]).output, expected="one")
    expect(actual=middle(text="two").output, expected="two")
    return NamedTuple("Outputs", data=Dataset, said=str)(once.outputs["data"], once.outputs["said"])


@dsl.pipeline(name="c-importer")
def importer_pipeline(uri: str):
    imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, metadata={"origin": "test"})
    again = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=True)
    expect(actual=read(data=imported.output).output, expected="imported")
    expect(actual=read(data=again.output).output, expected="imported")


@dsl.pipeline(name="c-artifact-inner")
def middle_of_artifact(data: Input[Dataset]) -> str:
    return read(data=data).output


@dsl.pipeline(name="c-input-artifacts")
def input_artifacts_pipeline(data: Input[Dataset], text: str = "imported"):
    expect(actual=read(data=data).output, expected=text)
    expect(actual=middle_of_artifact(data=data).output, expected=text)


@dsl.pipeline(name="c-required-optionals")
def required_optionals_pipeline(a: Optional[str], b: Optional[int]):
    """Optional parameters without defaults: required (KFP's IR has no isOptional for them)."""
    expect(actual=echo(x=a).output, expected="given")
    integer(x=b)


@dsl.pipeline(name="c-placeholders")
def placeholders_pipeline():
    placeholders(job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, resource_name=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
                 job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                 task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER, root=dsl.PIPELINE_ROOT_PLACEHOLDER,
                 created=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER,
                 scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER)
    expect(actual=echo(x=dsl.PIPELINE_TASK_NAME_PLACEHOLDER).output, expected="echo")


@dsl.pipeline(name="c-conditions")
def conditions_pipeline(n: int = 2, ratio: float = 0.5, on: bool = True):
    coin = flip()
    with dsl.If(coin.output == "heads", name="heads"):
        echo(x="heads")
        with dsl.If(n > 1):
            echo(x="nested")
    with dsl.Elif(coin.output == "tails"):
        echo(x="tails")
    with dsl.Else():
        echo(x="edge")
    with dsl.Condition(n == 7):  # deprecated alias of If
        echo(x="never")
    with dsl.If(on == True):  # noqa: E712 (a KFP condition)
        with dsl.If(ratio < 1.0):
            echo(x="bool and float")
    with dsl.If(coin.output == "heads"):
        chosen = echo(x="param-heads")
        art_a = write(text="art-heads")
    with dsl.Else():
        chosen_else = echo(x="param-tails")
        art_b = write(text="art-tails")
    expect(actual=dsl.OneOf(chosen.output, chosen_else.output), expected="param-heads")
    expect(actual=read(data=dsl.OneOf(art_a.outputs["out"], art_b.outputs["out"])).output, expected="art-heads")


@dsl.pipeline(name="c-branch-output-outside")
def branch_output_outside_pipeline():
    """A task's output read outside its If/Else chain: kfp 2.13 compiles it (its topology check misses
    chains; a lone If is a compile error) to an input that the root DAG lacks."""
    coin = flip()
    with dsl.If(coin.output == "heads"):
        taken = echo(x="heads")
    with dsl.Else():
        echo(x="tails")
    with dsl.If(taken.output == "heads"):
        echo(x="after a branch")


@dsl.pipeline(name="c-loops")
def loops_pipeline(names: List[str] = ["p", "q"], empty: List[int] = []):
    with dsl.ParallelFor([1.0, 2.0, 3.0], parallelism=2) as x:
        doubled = add(a=x, b=x)
    expect_number(actual=total(values=dsl.Collected(doubled.output)).output, expected=12.0)
    with dsl.ParallelFor(names, name="over-names") as name_:
        written = write(text=name_)
    expect(actual=read_all(datasets=dsl.Collected(written.outputs["out"])).output, expected="p,q")
    listed = make_list()
    with dsl.ParallelFor(listed.output, parallelism=1) as item:
        expect(actual=echo(x=item.b).output, expected=item.b)
        number(x=item.a)
    with dsl.ParallelFor([1.0, 2.0]) as outer_item:
        with dsl.ParallelFor([10.0, 20.0]) as inner_item:
            summed = add(a=outer_item, b=inner_item)
    expect_number(actual=total(values=dsl.Collected(summed.output)).output, expected=66.0)
    with dsl.ParallelFor([{"a": 1.0}, {"a": 5.0}]) as raw:
        with dsl.If(raw.a > 2.0):
            echo(x="big")
        inner(text="loop")
    with dsl.ParallelFor(empty) as nothing:
        integer(x=nothing)
    with dsl.ParallelFor(names, parallelism=2) as outer_name:  # the inner loop goes over the outer's list
        with dsl.ParallelFor(names) as inner_name:
            echo(x=inner_name)


@dsl.pipeline(name="c-collected-out")
def collected_out() -> List[Dataset]:
    with dsl.ParallelFor(["u", "v"]) as text:
        written = write(text=text)
    return dsl.Collected(written.outputs["out"])


@dsl.pipeline(name="c-collected-nested")
def collected_nested_pipeline():
    expect(actual=read_all(datasets=collected_out().output).output, expected="u,v")


@dsl.pipeline(name="c-exit-handler")
def exit_handler_pipeline():
    status = report(expected="COMPLETE")
    with dsl.ExitHandler(status, name="guarded"):
        echo(x="work")
        echo(x="more")
    cleanup = echo(x="cleanup").after(echo(x="outside")).ignore_upstream_failure()
    echo(x="last").after(cleanup)


@dsl.pipeline(name="c-exit-handler-failing")
def exit_handler_failing_pipeline():
    status = report(expected="FAILED")
    with dsl.ExitHandler(status):
        broken = fail()
        echo(x="never").after(broken)
    outside = fail(message="outside")
    echo(x="not run").after(outside)
    echo(x="runs anyway").after(outside).ignore_upstream_failure()


@dsl.pipeline(name="c-retry")
def retry_pipeline(marker: str):
    expect(actual=flaky(marker=marker).set_retry(2, backoff_duration="0s", backoff_factor=1.0,
                                                 backoff_max_duration="1s").output, expected="second attempt")


@dsl.pipeline(name="c-retry-exhausted")
def retry_exhausted_pipeline():
    fail(message="always").set_retry(1, backoff_duration="0s")


@dsl.component(base_image=IMAGE)
def upper(data: Input[Dataset], out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(open(data.path).read().upper())


@dsl.pipeline(name="c-upper-each")
def upper_each(datasets: List[Dataset]) -> List[Dataset]:
    """ParallelFor over a pipeline's input List[Dataset], returning its iterations' outputs."""
    with dsl.ParallelFor(datasets, parallelism=1) as data:
        uppered = upper(data=data)
    return dsl.Collected(uppered.outputs["out"])


@dsl.pipeline(name="c-loop-over-artifacts")
def loop_over_artifacts_pipeline():
    """ParallelFor over a nested pipeline's List[Dataset] output (KFP's sample
    pipeline_with_parallelfor_list_artifacts), and over a nested pipeline's input List[Dataset], whose
    Collected outputs are read after it."""
    collected = collected_out()
    with dsl.ParallelFor(collected.output) as data:
        read(data=data)
    expect(actual=read_all(datasets=upper_each(datasets=collected.output).output).output, expected="U,V")


@dsl.component(base_image=IMAGE)
def two_inputs(a: Input[Dataset], b: Input[Dataset]) -> str:
    return open(a.path).read() + open(b.path).read()


@dsl.pipeline(name="c-same-output-twice")
def same_output_twice() -> NamedTuple("Outputs", first=Dataset, second=Dataset):
    written = write(text="t")
    return NamedTuple("Outputs", first=Dataset, second=Dataset)(written.outputs["out"], written.outputs["out"])


@dsl.pipeline(name="c-same-artifact-twice")
def same_artifact_twice_pipeline():
    """One artifact into two inputs of a task, and returned under two output names of a nested
    pipeline: MLMD keeps one event per (artifact, execution, type)."""
    written = write(text="x")
    expect(actual=two_inputs(a=written.outputs["out"], b=written.outputs["out"]).output, expected="xx")
    twice = same_output_twice()
    expect(actual=two_inputs(a=twice.outputs["first"], b=twice.outputs["second"]).output, expected="tt")


@dsl.pipeline(name="c-collected-cached-iterations")
def collected_cached_iterations_pipeline():
    """Equal items share a cache key: at parallelism 1 the later iterations are CACHED with the first
    one's artifact, so the collected list holds one artifact ID three times."""
    with dsl.ParallelFor(["same", "same", "same"], parallelism=1) as text:
        written = write(text=text)
    expect(actual=read_all(datasets=dsl.Collected(written.outputs["out"])).output, expected="same,same,same")


@dsl.component(base_image=IMAGE)
def double(num: int, out: Output[Dataset]):
    with open(out.path, "w") as f:
        f.write(str(2 * num))


@dsl.container_component
def list_in_command(datasets: Input[List[Dataset]]):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[datasets])


@dsl.pipeline(name="c-artifact-list-in-command")
def artifact_list_in_command_pipeline():
    """A list of artifacts as a container argument: `{{$.inputs.artifacts['datasets']}}`, which
    neither kfp.local nor KFP's launcher resolves (kfp's own test_data parallelfor_fan_in sample)."""
    with dsl.ParallelFor([1, 2]) as x:
        doubled = double(num=x)
    list_in_command(datasets=dsl.Collected(doubled.outputs["out"]))


def k8s(name: str, configure: Callable) -> Callable:
    @dsl.pipeline(name=name)
    def pipeline(secret: str = "creds"):
        configure(echo(x="k"), secret)

    return pipeline


def _k8s_harmless(task, _):
    kubernetes.add_pod_label(task, "team", "ml")
    kubernetes.add_pod_annotation(task, "owner", "me")
    kubernetes.set_image_pull_policy(task, "IfNotPresent")
    kubernetes.set_image_pull_secrets(task, ["registry-creds"])
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.add_toleration_json(task, [{"key": "k", "operator": "Exists"}])
    kubernetes.set_timeout(task, 120)
    if has(kubernetes, "add_node_affinity"):  # preferred (weighted): a wish, never a requirement
        kubernetes.add_node_affinity(task, match_expressions=[{"key": "disk", "operator": "In", "values": ["ssd"]}],
                                     weight=10)
    if has(kubernetes, "add_node_affinity_json"):  # a NodeAffinity with only preferred terms
        kubernetes.add_node_affinity_json(task, {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]})


@dsl.pipeline(name="c-k8s-create-pvc")
def k8s_create_pvc_pipeline():
    pvc = kubernetes.CreatePVC(pvc_name_suffix="-scratch", access_modes=["ReadWriteOnce"], size="1Gi")
    task = echo(x="uses the pvc")
    kubernetes.mount_pvc(task, pvc_name=pvc.outputs["name"], mount_path="/data")
    kubernetes.DeletePVC(pvc_name=pvc.outputs["name"]).after(task)


@dsl.pipeline(name="c-k8s-delete-pvc")
def k8s_delete_pvc_pipeline():
    kubernetes.DeletePVC(pvc_name="left-over")


K8S_REFUSED = {  # kfp-kubernetes function: how a pipeline uses it
    "mount_pvc": lambda t, p: kubernetes.mount_pvc(t, pvc_name="data", mount_path="/data"),
    "use_secret_as_env": lambda t, p: kubernetes.use_secret_as_env(t, secret_name=p, secret_key_to_env={"k": "K"}),
    "use_secret_as_volume": lambda t, p: kubernetes.use_secret_as_volume(t, secret_name="creds", mount_path="/s"),
    "use_config_map_as_env": lambda t, p: kubernetes.use_config_map_as_env(t, config_map_name="cm",
                                                                           config_map_key_to_env={"k": "K"}),
    "use_config_map_as_volume": lambda t, p: kubernetes.use_config_map_as_volume(t, config_map_name="cm",
                                                                                 mount_path="/cm"),
    "use_field_path_as_env": lambda t, p: kubernetes.use_field_path_as_env(t, env_name="POD",
                                                                           field_path="metadata.name"),
    "empty_dir_mount": lambda t, p: kubernetes.empty_dir_mount(t, volume_name="scratch", mount_path="/scratch"),
    "add_ephemeral_volume": lambda t, p: kubernetes.add_ephemeral_volume(
        t, volume_name="v", mount_path="/v", access_modes=["ReadWriteOnce"], size="1Gi"),
    "add_node_selector": lambda t, p: kubernetes.add_node_selector(t, label_key="disk", label_value="ssd"),
    "add_node_selector_json": lambda t, p: kubernetes.add_node_selector_json(t, {"disk": "ssd"}),
}


def has(module, name: str) -> bool:
    """Whether the installed kfp (or kfp-kubernetes) has ``name``: the constructs of a newer kfp are
    compiled and listed only where it has them, so each end checks its own kfp's names."""
    return module is not None and name in getattr(module, "__all__", ())


if has(kubernetes, "add_node_affinity"):  # not in kfp-kubernetes 2.13; in 2.17
    K8S_REFUSED["add_node_affinity"] = lambda t, p: kubernetes.add_node_affinity(
        t, match_expressions=[{"key": "disk", "operator": "In", "values": ["ssd"]}])
if has(kubernetes, "add_node_affinity_json"):
    K8S_REFUSED["add_node_affinity_json"] = lambda t, p: kubernetes.add_node_affinity_json(t, {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}})
if has(kubernetes, "set_security_context"):
    K8S_REFUSED["set_security_context"] = lambda t, p: kubernetes.set_security_context(t, run_as_user=1000)


@dsl.component(base_image=IMAGE)
def env_of(name: str) -> str:
    import os

    return os.environ.get(name, "unset")


NOTEBOOK = Path(__file__).parent / "data" / "notebooks" / "upper.ipynb"

if has(dsl, "notebook_component"):  # not in kfp 2.13; in 2.17
    @dsl.notebook_component(notebook_path=str(NOTEBOOK), base_image=IMAGE)
    def notebook(text: str, out: Output[Dataset]):
        dsl.run_notebook(text=text, out_path=out.path)

    @dsl.pipeline(name="c-notebook")
    def notebook_pipeline(text: str = "hello"):
        """The notebook's parameters cell is overridden by run_notebook's arguments, and what the
        notebook wrote is the task's output artifact."""
        expect(actual=read(data=notebook(text=text).outputs["out"]).output, expected="HELLO from the notebook")

if hasattr(dsl.PipelineTask, "set_debug_pause"):
    @dsl.pipeline(name="c-debug-pause")
    def debug_pause_pipeline():
        """KFP keeps the pod for `kubectl exec` (Argo's wait container reads ARGO_DEBUG_PAUSE_*): the
        task's environment has the variables, as in the pod, and the run goes on without a pause."""
        expect(actual=env_of(name="ARGO_DEBUG_PAUSE_AFTER").set_debug_pause().output, expected="true")
        expect(actual=env_of(name="ARGO_DEBUG_PAUSE_BEFORE").set_debug_pause(before=True, after=False).output,
               expected="true")
        expect(actual=env_of(name="ARGO_DEBUG_PAUSE_ON_ERROR").set_debug_pause(on_error=True).output,
               expected="true")

if hasattr(dsl.PipelineTask, "register_pipeline_channels"):
    @dsl.component(base_image=IMAGE)
    def broken() -> str:
        raise SystemExit("deliberate failure")

    @dsl.pipeline(name="c-registered-channels")
    def registered_channels_pipeline(word: str = "w"):
        """Channels registered on a task that takes none of them (kfp-kubernetes' hook for a setting
        from a parameter or a task output): no input in the IR, a task output is a dependency
        (dependentTasks), so the task runs unchanged after its producer, and not after a failed one."""
        said = echo(x="a")
        said.register_pipeline_channels([word, flip().output])
        expect(actual=said.output, expected="a")
        echo(x="b").register_pipeline_channels([broken().output])

if has(dsl, "TaskConfig"):
    @dsl.component(base_image=IMAGE, task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES, dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True)])
    def configured(config: dsl.TaskConfig) -> str:
        return str(config.resources)

    @dsl.component(base_image=IMAGE, task_config_passthroughs=[
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=False)])
    def passing_through() -> str:
        return "env only for an external workload"

    @dsl.pipeline(name="c-task-config")
    def task_config_pipeline():
        echo(x="first")
        configured().set_cpu_limit("1")

    @dsl.pipeline(name="c-task-config-passthrough")
    def task_config_passthrough_pipeline():
        passing_through().set_env_variable("A", "b")

if has(dsl, "WorkspaceConfig"):
    @dsl.pipeline(name="c-workspace", pipeline_config=dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(
        size="1Gi", kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch={"storageClassName": "standard"}))))
    def workspace_pipeline():
        echo(x=dsl.WORKSPACE_PATH_PLACEHOLDER)


# ---------------------------------------------------------------- the cases

@dataclass
class Case:
    pipeline: Callable
    exit_code: Union[int, Tuple[int, ...]] = 0   # 0 ran, 1 ran and failed by design, 2 refused; or either
    refused: Optional[str] = None           # for exit 2: what the one line must name
    params: Dict[str, str] = field(default_factory=dict)
    artifacts: Dict[str, str] = field(default_factory=dict)
    states: Dict[str, str] = field(default_factory=dict)   # expected states of some task paths
    attempts: Dict[str, int] = field(default_factory=dict)
    absent: List[str] = field(default_factory=list)        # path prefixes no task may have
    kubernetes: bool = False


CASES: Dict[str, Case] = {
    "components": Case(components_pipeline, params={"maybe": "m"},
                       states={"produce": "COMPLETE", "consume": "COMPLETE", "shell": "COMPLETE"}),
    "task-settings": Case(task_settings_pipeline, states={"echo-2": "COMPLETE"}),
    "settings-from-params": Case(settings_from_params_pipeline),
    "nested": Case(nested_pipeline, states={"c-inner": "COMPLETE", "c-inner/write": "COMPLETE",
                                            "c-middle/c-inner/read": "COMPLETE", "c-middle": "COMPLETE"}),
    "importer": Case(importer_pipeline, params={"uri": "{imported}"}),
    "input-artifacts": Case(input_artifacts_pipeline, artifacts={"data": "{imported}"}),
    "required-optionals": Case(required_optionals_pipeline, params={"a": "given", "b": "3"}),
    "placeholders": Case(placeholders_pipeline),
    "conditions": Case(conditions_pipeline, states={
        "condition-branches-1/condition-3/echo": "COMPLETE",
        "condition-branches-1/condition-3/condition-2/echo-2": "COMPLETE",
        "condition-branches-1/condition-4": "SKIPPED", "condition-branches-1/condition-4/echo-3": "SKIPPED",
        "condition-branches-1/condition-5/echo-4": "SKIPPED", "condition-6/echo-5": "SKIPPED",
        "condition-7/condition-8/echo-6": "COMPLETE", "condition-branches-9/condition-10/echo-7": "COMPLETE",
        "condition-branches-9/condition-11/echo-8": "SKIPPED"}),
    "branch-output-outside": Case(branch_output_outside_pipeline, exit_code=2,
                                  refused="which its DAG does not have"),
    "loops": Case(loops_pipeline, states={
        "for-loop-2/0/add": "COMPLETE", "for-loop-2/2/add": "COMPLETE", "for-loop-3/1/write": "COMPLETE",
        "for-loop-4/1/expect-2": "COMPLETE", "for-loop-6/1/for-loop-8/0/add-2": "COMPLETE",
        "for-loop-10/0/condition-11/echo-2": "SKIPPED", "for-loop-10/1/condition-11/echo-2": "COMPLETE",
        # both iterations' c-inner has one key: iteration 1 waits for iteration 0's (dedup) and reuses it
        "for-loop-10/0/c-inner/read": "COMPLETE", "for-loop-10/1/c-inner/write": "CACHED",
        "for-loop-10/1/c-inner/read": "CACHED", "for-loop-12": "COMPLETE",
        "for-loop-13/1/for-loop-14/1": "COMPLETE", "for-loop-13": "COMPLETE"}, absent=["for-loop-12/"]),
    "collected-nested": Case(collected_nested_pipeline),
    "exit-handler": Case(exit_handler_pipeline, states={"exit-handler-1/echo": "COMPLETE", "report": "COMPLETE",
                                                        "echo-3": "COMPLETE", "echo-4": "COMPLETE"}),
    "exit-handler-failing": Case(exit_handler_failing_pipeline, exit_code=1, states={
        "exit-handler-1/fail": "FAILED", "exit-handler-1/echo": "NOT_RUN", "report": "COMPLETE",
        "fail-2": "FAILED", "echo-3": "COMPLETE", "echo-2": "NOT_RUN"}),
    "retry": Case(retry_pipeline, params={"marker": "{marker}"}, states={"flaky": "COMPLETE"},
                  attempts={"flaky": 2}),
    "retry-exhausted": Case(retry_exhausted_pipeline, exit_code=1, states={"fail": "FAILED"}, attempts={"fail": 2}),
    "same-artifact-twice": Case(same_artifact_twice_pipeline),
    "collected-cached-iterations": Case(collected_cached_iterations_pipeline, states={
        "for-loop-2/1/write": "CACHED", "for-loop-2/2/write": "CACHED"}),
    "loop-over-artifacts": Case(loop_over_artifacts_pipeline, states={
        "for-loop-1/0/read": "COMPLETE", "for-loop-1/1/read": "COMPLETE", "for-loop-1": "COMPLETE",
        "c-upper-each/for-loop-1/0/upper": "COMPLETE", "c-upper-each/for-loop-1/1/upper": "COMPLETE",
        "expect": "COMPLETE"}),
    # refused before it runs (the placeholder named), or the task fails: never a traceback
    "artifact-list-in-command": Case(artifact_list_in_command_pipeline, exit_code=(1, 2), refused="datasets"),
    "k8s-harmless": Case(k8s("c-k8s-harmless", _k8s_harmless), kubernetes=True, states={"echo": "COMPLETE"}),
    "k8s-create-pvc": Case(k8s_create_pvc_pipeline, exit_code=2, refused="kubernetes.CreatePVC", kubernetes=True),
    "k8s-delete-pvc": Case(k8s_delete_pvc_pipeline, exit_code=2, refused="kubernetes.DeletePVC", kubernetes=True),
    **{f"k8s-{name}": Case(k8s(f"c-k8s-{name.replace('_', '-')}", configure), exit_code=2,
                           refused=f"kubernetes.{name}", kubernetes=True)
       for name, configure in K8S_REFUSED.items()},
}
# The constructs of a newer kfp, where the installed one has them (see `has`).
if has(dsl, "notebook_component"):
    CASES["notebook"] = Case(notebook_pipeline, params={"text": "hello"}, states={"notebook": "COMPLETE"})
if hasattr(dsl.PipelineTask, "set_debug_pause"):
    CASES["debug-pause"] = Case(debug_pause_pipeline, states={"env-of": "COMPLETE", "env-of-3": "COMPLETE"})
if hasattr(dsl.PipelineTask, "register_pipeline_channels"):
    CASES["registered-channels"] = Case(registered_channels_pipeline, exit_code=1, states={
        "flip": "COMPLETE", "echo": "COMPLETE", "expect": "COMPLETE", "broken": "FAILED", "echo-2": "NOT_RUN"})
if has(dsl, "TaskConfig"):
    CASES["task-config"] = Case(task_config_pipeline, exit_code=2,
                                refused="task 'configured': a dsl.TaskConfig input")
    CASES["task-config-passthrough"] = Case(task_config_passthrough_pipeline, exit_code=2,
                                            refused="task 'passing-through': dsl.component(task_config_passthroughs=")
if has(dsl, "WorkspaceConfig"):
    CASES["workspace"] = Case(workspace_pipeline, exit_code=2, refused="dsl.PipelineConfig(workspace=...)")

# Every construct, and the cases whose pipelines use it.
COVERED_DSL = {
    "Input": ["components", "input-artifacts"], "Output": ["components"], "InputPath": ["components"],
    "OutputPath": ["components"], "PipelineTaskFinalStatus": ["exit-handler", "exit-handler-failing"],
    "Artifact": ["components"], "ClassificationMetrics": ["components"], "Dataset": ["components"],
    "HTML": ["components"], "Markdown": ["components"], "Metrics": ["components"], "Model": ["components"],
    "SlicedClassificationMetrics": ["components"], "get_uri": ["components"],
    "PIPELINE_JOB_NAME_PLACEHOLDER": ["placeholders"], "PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER": ["placeholders"],
    "PIPELINE_JOB_ID_PLACEHOLDER": ["placeholders"], "PIPELINE_TASK_NAME_PLACEHOLDER": ["placeholders"],
    "PIPELINE_TASK_ID_PLACEHOLDER": ["placeholders"], "PIPELINE_ROOT_PLACEHOLDER": ["placeholders"],
    "PIPELINE_TASK_EXECUTOR_OUTPUT_PATH_PLACEHOLDER": ["components"],
    "PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER": ["components"],
    "PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER": ["placeholders"],
    "PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER": ["placeholders"],
    "component": ["components"], "container_component": ["components"], "pipeline": ["nested"],
    "importer": ["importer"], "ContainerSpec": ["components"], "Condition": ["conditions"], "If": ["conditions"],
    "Elif": ["conditions"], "Else": ["conditions"], "OneOf": ["conditions"], "ExitHandler": ["exit-handler"],
    "ParallelFor": ["loops", "loop-over-artifacts"], "Collected": ["loops", "collected-nested"],
    "IfPresentPlaceholder": ["components"], "ConcatPlaceholder": ["components"],
    "PipelineConfig": ["nested"],  # empty in kfp 2.13 (pipeline_config=)
}
NOT_CONSTRUCTS_DSL = {
    "PipelineTask": "the class of every task; its public methods are covered one by one (COVERED_TASK)",
}
COVERED_TASK = {
    "set_cpu_limit": ["task-settings", "settings-from-params"], "set_memory_limit": ["task-settings"],
    "set_cpu_request": ["task-settings"], "set_memory_request": ["task-settings"],
    "set_accelerator_type": ["task-settings", "settings-from-params"], "set_accelerator_limit": ["task-settings"],
    "set_gpu_limit": ["task-settings"], "add_node_selector_constraint": ["task-settings"],
    "set_env_variable": ["components", "task-settings"], "set_display_name": ["task-settings"],
    "set_caching_options": ["task-settings"], "set_retry": ["retry", "retry-exhausted", "task-settings"],
    "after": ["components", "exit-handler"], "ignore_upstream_failure": ["exit-handler", "exit-handler-failing"],
    "set_container_image": ["task-settings"], "output": ["components"], "outputs": ["components"],
}
NOT_CONSTRUCTS_TASK = {
    "channel_inputs": "an accessor used by the compiler", "dependent_tasks": "an accessor used by the compiler",
    "inputs": "an accessor (the task's arguments)", "name": "an accessor (the task's name)",
    "platform_spec": "an accessor of a nested pipeline's platform spec (kfp-kubernetes settings are covered)",
}
COVERED_KUBERNETES = {
    **{name: [f"k8s-{name}"] for name in K8S_REFUSED},
    "CreatePVC": ["k8s-create-pvc"], "DeletePVC": ["k8s-delete-pvc"],
    **{name: ["k8s-harmless"] for name in ("add_pod_label", "add_pod_annotation", "set_image_pull_policy",
                                           "set_image_pull_secrets", "add_toleration", "add_toleration_json",
                                           "set_timeout")},
}
# Beside the DSL's names: constructs that are arguments or other modules.
COVERED_OTHER = {
    "one artifact into two inputs / two outputs of a nested pipeline": ["same-artifact-twice"],
    "Collected over cached iterations (one artifact ID several times)": ["collected-cached-iterations"],
    "a list of artifacts as a container argument": ["artifact-list-in-command"],
    "kfp.components.load_component_from_text": ["components"],
    "@dsl.component(packages_to_install=)": ["components"],
    "pipeline outputs (NamedTuple, Collected)": ["nested", "collected-nested"],
    "nested pipelines (two levels, in a loop, in a condition)": ["nested", "loops"],
    "pipeline input artifacts": ["input-artifacts"],
    "Optional parameters without defaults": ["required-optionals", "components"],
    "ParallelFor over a literal, a parameter, an output; nested; parallelism; item.field": ["loops"],
    "a nested ParallelFor over the outer loop's own list": ["loops"],
    "an empty ParallelFor": ["loops"],
    "ParallelFor over a nested pipeline's List[Dataset] output and over its input List[Dataset]":
        ["loop-over-artifacts"],
    "@dsl.pipeline(pipeline_root=, display_name=, description=)": ["nested"],
    "task settings from pipeline parameters and task outputs": ["settings-from-params", "task-settings"],
}

if has(dsl, "notebook_component"):
    COVERED_DSL.update(notebook_component=["notebook"], run_notebook=["notebook"])
if has(dsl, "TaskConfig"):
    COVERED_DSL.update(TaskConfig=["task-config"], TaskConfigField=["task-config", "task-config-passthrough"],
                       TaskConfigPassthrough=["task-config", "task-config-passthrough"])
if has(dsl, "WorkspaceConfig"):
    COVERED_DSL.update(WorkspaceConfig=["workspace"], KubernetesWorkspaceConfig=["workspace"],
                       WORKSPACE_PATH_PLACEHOLDER=["workspace"])
if hasattr(dsl.PipelineTask, "set_debug_pause"):
    COVERED_TASK["set_debug_pause"] = ["debug-pause"]
if hasattr(dsl.PipelineTask, "register_pipeline_channels"):
    COVERED_TASK["register_pipeline_channels"] = ["registered-channels"]
for _function in ("add_node_affinity", "add_node_affinity_json"):
    if has(kubernetes, _function):  # required: refused; preferred: ignored
        COVERED_KUBERNETES[_function] += ["k8s-harmless"]


# ---------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def workplace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store and one pipeline root for every case (the pipelines' names differ)."""
    place = tmp_path_factory.mktemp("constructs")
    (place / "imported.txt").write_text("imported")
    return place


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_cli(workplace: Path, path: Path, run_name: str, *extra: str, in_process: bool = False) -> Ran:
    """`mlmd-cache run-pipeline` as a user runs it: a subprocess; or, for pipelines that are refused
    before anything runs, click's CliRunner (no interpreter to start: 2 s less each), where an
    exception that escaped the CLI is shown as the traceback a user would see."""
    args = ["run-pipeline", str(path), "--db", f"sqlite:///{workplace / 'mlmd.sqlite'}",
            "--pipeline-root", str(workplace / "root"), "--run-name", run_name, "--json", *extra]
    if in_process:
        result = CliRunner().invoke(main, args)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return Ran(result.exit_code, result.stdout, stderr)
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return Ran(done.returncode, done.stdout, done.stderr)


def runs_in_store(workplace: Path, run_name: str) -> bool:
    if not (workplace / "mlmd.sqlite").exists():
        return False
    return connect(f"sqlite:///{workplace / 'mlmd.sqlite'}").get_context_by_type_and_name(
        "system.PipelineRun", run_name) is not None


@pytest.mark.parametrize("name", list(CASES))
def test_a_construct_runs_or_is_refused_never_a_traceback(workplace, name):
    case = CASES[name]
    if case.kubernetes and kubernetes is None:
        pytest.skip("kfp-kubernetes is not installed (setup.cfg [test])")
    path = workplace / f"{name}.yaml"
    compiler.Compiler().compile(case.pipeline, str(path))
    fill = {"imported": str(workplace / "imported.txt"), "marker": str(workplace / f"{name}.marker")}
    extra = [item for key, value in case.params.items() for item in ("--param", f"{key}={value.format(**fill)}")]
    extra += [item for key, value in case.artifacts.items() for item in ("--artifact", f"{key}={value.format(**fill)}")]
    done = run_cli(workplace, path, f"{name}-1", *extra, in_process=case.exit_code == 2)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    expected = case.exit_code if isinstance(case.exit_code, tuple) else (case.exit_code,)
    assert done.returncode in expected, output
    if done.returncode == 2:
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and case.refused in lines[0], done.stderr
        assert not runs_in_store(workplace, f"{name}-1")
        return
    result = json.loads(done.stdout)
    tasks = result["tasks"]
    for task, state in case.states.items():
        assert tasks.get(task, {}).get("state") == state, (task, sorted((t, v["state"]) for t, v in tasks.items()))
    for prefix in case.absent:
        assert not [task for task in tasks if task.startswith(prefix)], sorted(tasks)
    for task, attempts in case.attempts.items():
        assert tasks[task]["attempts"] == attempts, tasks[task]
    assert runs_in_store(workplace, f"{name}-1")
    if done.returncode == 0:
        assert all(task["state"] in ("COMPLETE", "CACHED", "SKIPPED") for task in tasks.values()), tasks


def test_a_second_run_reuses_the_first(workplace):
    """The components pipeline again: every container task CACHED, but the one with caching off."""
    path = workplace / "again.yaml"
    compiler.Compiler().compile(components_pipeline, str(path))
    first, second = (run_cli(workplace, path, f"again-{i}", "--param", "maybe=m") for i in (1, 2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    states = {task: value["state"] for task, value in json.loads(second.stdout)["tasks"].items()}
    assert set(states.values()) == {"CACHED"}, states


def _cases(covered: Dict[str, List[str]]) -> List[str]:
    return [case for cases in covered.values() for case in cases]


def test_every_dsl_name_is_covered_or_is_no_construct():
    names = set(dsl.__all__)
    assert names <= set(COVERED_DSL) | set(NOT_CONSTRUCTS_DSL), sorted(names - set(COVERED_DSL) - set(NOT_CONSTRUCTS_DSL))
    assert not set(COVERED_DSL) & set(NOT_CONSTRUCTS_DSL)


def test_every_task_method_is_covered_or_is_no_construct():
    members = {name for name in dir(dsl.PipelineTask) if not name.startswith("_")}
    listed = set(COVERED_TASK) | set(NOT_CONSTRUCTS_TASK)
    assert members <= listed, sorted(members - listed)


def test_every_kfp_kubernetes_function_is_covered():
    if kubernetes is None:
        pytest.skip("kfp-kubernetes is not installed (setup.cfg [test])")
    assert set(kubernetes.__all__) <= set(COVERED_KUBERNETES), sorted(set(kubernetes.__all__) - set(COVERED_KUBERNETES))


def test_the_coverage_lists_name_real_cases():
    named = _cases(COVERED_DSL) + _cases(COVERED_TASK) + _cases(COVERED_KUBERNETES) + _cases(COVERED_OTHER)
    assert set(named) <= set(CASES), sorted(set(named) - set(CASES))
