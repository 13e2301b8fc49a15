"""A four-step KFP v2 pipeline to run locally with ``mlmd-cache run-pipeline``.

make-data writes a dataset of ``n`` noisy points of a line; preprocess clips outliers beyond
``clip`` standard deviations; train fits the line by gradient descent with learning rate ``lr`` and
returns its training loss; evaluate scores the model on held-out points and logs the metric ``mse``.

    python examples/train_pipeline.py train_pipeline.yaml      # compile (the KFP SDK's compiler)
    mlmd-cache run-pipeline train_pipeline.yaml                # every task executes
    mlmd-cache run-pipeline train_pipeline.yaml                # every task is CACHED
    mlmd-cache run-pipeline train_pipeline.yaml --param lr=0.02  # make-data, preprocess CACHED; train, evaluate run
"""
import sys

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def make_data(n: int, seed: int, data: Output[Dataset]):
    import json
    import random

    rng = random.Random(seed)
    points = [(x, 2.0 * x + 1.0 + rng.gauss(0.0, 0.3)) for x in (rng.uniform(-1, 1) for _ in range(n))]
    with open(data.path, "w") as f:
        json.dump(points, f)
    data.metadata["rows"] = n


@dsl.component(base_image=IMAGE)
def preprocess(data: Input[Dataset], clip: float, clean: Output[Dataset]):
    import json
    import statistics

    with open(data.path) as f:
        points = json.load(f)
    residuals = [y - 2.0 * x for x, y in points]
    mean, spread = statistics.mean(residuals), statistics.pstdev(residuals)
    kept = [p for p, r in zip(points, residuals) if abs(r - mean) <= clip * spread]
    with open(clean.path, "w") as f:
        json.dump(kept, f)
    clean.metadata["rows"] = len(kept)


@dsl.component(base_image=IMAGE)
def train(data: Input[Dataset], lr: float, epochs: int, model: Output[Model]) -> float:
    import json

    with open(data.path) as f:
        points = json.load(f)
    slope = intercept = 0.0
    for _ in range(epochs):
        for x, y in points:
            error = slope * x + intercept - y
            slope -= lr * error * x
            intercept -= lr * error
    with open(model.path, "w") as f:
        json.dump({"slope": slope, "intercept": intercept}, f)
    return sum((slope * x + intercept - y) ** 2 for x, y in points) / len(points)


@dsl.component(base_image=IMAGE)
def evaluate(model: Input[Model], data: Input[Dataset], metrics: Output[Metrics]) -> float:
    import json

    with open(model.path) as f:
        fitted = json.load(f)
    with open(data.path) as f:
        points = json.load(f)[::5]  # every fifth point as a held-out sample
    mse = sum((fitted["slope"] * x + fitted["intercept"] - y) ** 2 for x, y in points) / len(points)
    metrics.log_metric("mse", mse)
    return mse


@dsl.pipeline(name="train-pipeline", description="data -> preprocess -> train -> evaluate")
def train_pipeline(n: int = 2000, seed: int = 7, clip: float = 3.0, lr: float = 0.05, epochs: int = 5) -> float:
    data = make_data(n=n, seed=seed)
    clean = preprocess(data=data.outputs["data"], clip=clip)
    fitted = train(data=clean.outputs["clean"], lr=lr, epochs=epochs)
    return evaluate(model=fitted.outputs["model"], data=clean.outputs["clean"]).outputs["Output"]


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "train_pipeline.yaml"
    compiler.Compiler().compile(train_pipeline, target)
    print(f"compiled {target}: now run  mlmd-cache run-pipeline {target}")
