"""The three-task chain A -> B -> C, run twice with KFP v2 caching over MLMD.

A makes a dataset, B trains a model on it with a learning rate, C evaluates the model. The second
run finds every task in the cache and reuses the first run's artifacts (same MLMD IDs); run it with
another ``--lr`` and only B and C execute again.

    python examples/chain.py            # on $MLMD_DB, else the embedded default SQLite store
    python examples/chain.py --lr 0.2   # B and C miss, A still hits
"""
from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, TaskExecution, connect, default_store_path

IMAGE = "python:3.11"


def make_dataset(started: TaskExecution, root: Path) -> Outputs:
    rows = [random.Random(i).gauss(3.0, 1.0) for i in range(1000)]
    path = root / f"A-{started.id}" / "dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return Outputs(artifacts={"dataset": str(path)})


def train(started: TaskExecution, root: Path, dataset: str, lr: float) -> Outputs:
    rows = json.loads(Path(dataset).read_text())
    weight = 0.0
    for value in rows:  # one pass of gradient descent on the squared error of a constant model
        weight -= lr * (weight - value) / 10
    path = root / f"B-{started.id}" / "model.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"weight": weight}))
    loss = sum((weight - value) ** 2 for value in rows) / len(rows)
    return Outputs(artifacts={"model": str(path)}, parameters={"loss": loss})


def evaluate(started: TaskExecution, root: Path, model: str) -> Outputs:
    weight = json.loads(Path(model).read_text())["weight"]
    path = root / f"C-{started.id}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mean_estimate": weight}))
    return Outputs(artifacts={"metrics": str(path)})


def run_chain(cache: ExecutionCache, run_name: str, lr: float, root: Path) -> dict[str, TaskExecution]:
    run = cache.pipeline_run("chain-demo", run_name)
    a = cache.execute(run, Task("A", CacheKey.build(
        image=IMAGE, command=["python", "-m", "make_dataset"], output_artifacts={"dataset": "system.Dataset"},
    )), lambda started: make_dataset(started, root))
    [dataset] = a.output_artifacts["dataset"]
    b = cache.execute(run, Task("B", CacheKey.build(
        image=IMAGE, command=["python", "-m", "train"], input_artifacts={"dataset": dataset.id},
        input_parameters={"lr": lr}, output_artifacts={"model": "system.Model"},
        output_parameters={"loss": "NUMBER_DOUBLE"},
    )), lambda started: train(started, root, dataset.uri, lr))
    [model] = b.output_artifacts["model"]
    c = cache.execute(run, Task("C", CacheKey.build(
        image=IMAGE, command=["python", "-m", "evaluate"], input_artifacts={"model": model.id},
        output_artifacts={"metrics": "system.Metrics"},
    )), lambda started: evaluate(started, root, model.uri))
    return {"A": a, "B": b, "C": c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store URL (default: $MLMD_DB, else the embedded SQLite store)")
    parser.add_argument("--lr", type=float, default=0.1, help="B's learning rate (default 0.1)")
    parser.add_argument("--runs", type=int, default=2, help="how many runs (default 2)")
    parser.add_argument("--outputs", type=Path, default=default_store_path().parent / "chain-demo-outputs",
                        help="where the tasks write their files (default: chain-demo-outputs beside the "
                             "embedded store)")
    options = parser.parse_args()
    cache = ExecutionCache(connect(options.db))
    root = options.outputs.resolve()
    print(f"outputs under {root}")
    for _ in range(options.runs):
        run_name = f"chain-{uuid.uuid4().hex[:8]}"
        results = run_chain(cache, run_name, options.lr, root)
        print(f"run {run_name} (lr={options.lr}):")
        for task, result in results.items():
            ids = ", ".join(f"{name}=#{ids[0]}" for name, ids in result.output_artifact_ids.items())
            reused = f" from execution {result.cached_execution_id}" if result.cached_execution_id else ""
            verdict = "hit " if result.state == "CACHED" else "miss"
            print(f"  {task}: {verdict} {result.state:<8} execution {result.id}{reused}  outputs {ids}")


if __name__ == "__main__":
    main()
