"""Test pipelines written with the plain KFP DSL that every KFP SDK from 2.13 to 2.17.3 compiles.

``scripts/compile_sdk_pipelines.py`` compiles each pipeline of :data:`PIPELINES` with each SDK version
into ``tests/data/sdk/kfp-<version>/<name>.yaml``; ``tests/test_sdk_versions.py`` loads, plans and
runs them, and checks that every SDK's IR gives the same results. Why these four: between them they
use what the compiler writes differently from one SDK version to the next (the lightweight
components' preamble and executor, control flow, container components, ``packages_to_install``).

Rules that keep the results comparable across SDK versions: no ``kfp_kubernetes``, every
``base_image`` is ``python:3.11`` (docker-mode tests map that image), no sleeps, no clocks, no
randomness: every output is a function of the inputs alone.
"""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

IMAGE = "python:3.11"


# == chain: parameter and artifact passing, metrics ================================================

@dsl.component(base_image=IMAGE)
def make_data(rows: int, data: Output[Dataset]) -> str:
    with open(data.path, "w") as f:
        f.writelines(f"{x},{2 * x + 1}\n" for x in range(rows))
    data.metadata["rows"] = rows
    return f"{rows} rows"


@dsl.component(base_image=IMAGE)
def train(data: Input[Dataset], lr: float, model: Output[Model]) -> float:
    with open(data.path) as f:
        points = [tuple(float(v) for v in line.split(",")) for line in f]
    slope = sum(y for _, y in points) / max(1.0, sum(x for x, _ in points))
    with open(model.path, "w") as f:
        f.write(f"slope={slope:.6f} lr={lr}\n")
    return round(lr * slope, 6)


@dsl.component(base_image=IMAGE)
def evaluate(model: Input[Model], loss: float, metrics: Output[Metrics]) -> str:
    with open(model.path) as f:
        text = f.read().strip()
    metrics.log_metric("loss", loss)
    metrics.log_metric("chars", len(text))
    return f"evaluated {text}"


@dsl.pipeline(name="sdk-chain")
def chain(rows: int = 4, lr: float = 0.5) -> float:
    data = make_data(rows=rows)
    model = train(data=data.outputs["data"], lr=lr)
    evaluate(model=model.outputs["model"], loss=model.outputs["Output"])
    return model.outputs["Output"]


# == control flow: If/Elif/Else, ParallelFor + Collected, ExitHandler, a nested pipeline ===========

@dsl.component(base_image=IMAGE)
def classify(n: int) -> str:
    return "small" if n < 3 else "medium" if n < 10 else "large"


@dsl.component(base_image=IMAGE)
def say(message: str) -> str:
    print(message)
    return message


@dsl.component(base_image=IMAGE)
def square(x: int) -> int:
    return x * x


@dsl.component(base_image=IMAGE)
def total(values: List[int]) -> int:
    return sum(values)


@dsl.component(base_image=IMAGE)
def report_status(status: dsl.PipelineTaskFinalStatus) -> str:
    return f"{status.state}"


@dsl.pipeline(name="sdk-inner")
def inner(x: int) -> int:
    return square(x=x).output


@dsl.pipeline(name="sdk-control-flow")
def control_flow(n: int = 4, items: List[int] = [1, 2, 3]) -> int:
    final = report_status()
    with dsl.ExitHandler(final, name="guarded"):
        kind = classify(n=n)
        with dsl.If(kind.output == "small"):
            say(message="small")
        with dsl.Elif(kind.output == "medium"):
            say(message="medium")
        with dsl.Else():
            say(message="large")
        with dsl.ParallelFor(items) as item:
            squared = square(x=item)
        summed = total(values=dsl.Collected(squared.output))
        say(message="done").after(summed)
    nested = inner(x=n)  # outside the ExitHandler: a pipeline output comes from the top level only
    return nested.output


# == a container component: sh -c / echo writing its outputs =======================================

@dsl.container_component
def shout(message: str, data: Output[Dataset], length: dsl.OutputPath(str)):
    return dsl.ContainerSpec(
        image=IMAGE,
        command=["sh", "-c"],
        args=['mkdir -p "$(dirname "$1")" "$(dirname "$2")" && echo "$0!" > "$1" && printf %s "${#0}" > "$2"',
              message, data.path, length],
    )


@dsl.pipeline(name="sdk-container")
def container(message: str = "hello") -> str:
    return shout(message=message).outputs["length"]


# == packages_to_install ===========================================================================

@dsl.component(base_image=IMAGE, packages_to_install=["six==1.16.0"])
def six_version(word: str) -> str:
    import six

    return f"{six.ensure_text(word)} with six {six.__version__}"


@dsl.pipeline(name="sdk-packages")
def packages(word: str = "hello") -> str:
    return six_version(word=word).output


# The pipelines to compile, by file name (tests/data/sdk/kfp-<version>/<name>.yaml).
PIPELINES = {"chain": chain, "control_flow": control_flow, "container": container, "packages": packages}
