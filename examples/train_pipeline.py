"""A KFP v2 pipeline to run locally with ``mlmd-cache run-pipeline``: compile it, run it, run it again.

make-data writes a dataset of ``n`` rows, train fits a "model" on it with learning rate ``lr`` and
returns its loss, evaluate writes metrics, and a container component (``echo``, run on the host;
its image is recorded, not pulled) announces the end.

    python examples/train_pipeline.py train_pipeline.yaml      # compile (the KFP SDK's compiler)
    mlmd-cache run-pipeline train_pipeline.yaml                # every task executes
    mlmd-cache run-pipeline train_pipeline.yaml                # every task is CACHED
    mlmd-cache run-pipeline train_pipeline.yaml --param lr=0.2 # make-data CACHED; train, evaluate run
"""
import sys

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def make_data(n: int, data: Output[Dataset]):
    import json
    import random

    rows = [random.Random(i).gauss(3.0, 1.0) for i in range(n)]
    with open(data.path, "w") as f:
        json.dump(rows, f)
    data.metadata["rows"] = n


@dsl.component(base_image=IMAGE)
def train(data: Input[Dataset], lr: float, model: Output[Model]) -> float:
    import json

    with open(data.path) as f:
        rows = json.load(f)
    mean = 0.0
    for row in rows:  # "gradient descent" on the mean
        mean += lr * (row - mean)
    with open(model.path, "w") as f:
        json.dump({"mean": mean}, f)
    return sum((row - mean) ** 2 for row in rows) / len(rows)


@dsl.component(base_image=IMAGE)
def evaluate(model: Input[Model], loss: float, metrics: Output[Metrics]):
    metrics.log_metric("loss", loss)


@dsl.container_component
def announce(message: str):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[message])


@dsl.pipeline(name="train-pipeline")
def train_pipeline(n: int = 1000, lr: float = 0.1):
    data = make_data(n=n)
    model = train(data=data.outputs["data"], lr=lr)
    done = evaluate(model=model.outputs["model"], loss=model.outputs["Output"])
    announce(message="trained").after(done)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "train_pipeline.yaml"
    compiler.Compiler().compile(train_pipeline, target)
    print(f"compiled {target}: now run  mlmd-cache run-pipeline {target}")
