"""The pipelines the docs' examples run, besides the demo's (train_pipeline.py), compiled into
``examples/*.yaml`` by the KFP SDK:

    python examples/pipelines.py examples/      # writes waits.yaml, rows.yaml, early_cutoff.yaml,
                                                # labelled.yaml and pvc_pipeline.yaml into examples/

- ``waits``: its first task says it started (the file ``started``), then waits for the file ``go``:
  a run to stop with Ctrl-C (run-pipeline's page, "Options and output");
- ``rows`` and ``early-cutoff``: make-rows → fit → score, for ``--digest`` and ``--key-by-content``
  (Beyond KFP's cache, content digests); early-cutoff's make-rows has caching off and writes the same
  rows every run;
- ``labelled``: a labels file brought in by ``dsl.importer`` (``reimport=False``, so every run hands
  its consumers the same artifact ID) → train → evaluate, and make-vocab beside them (invalidation);
- ``pvc``: a task that mounts a PersistentVolumeClaim, which run-pipeline refuses (it needs
  kfp-kubernetes, in the test extra).
"""
import sys
from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE)
def wait_for_go_with_a_name_far_too_long_for_a_narrow_terminal(go: str, started: str) -> str:
    import os
    import time

    open(started, "w").close()
    deadline = time.time() + 600
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
    return "ready"


def _waits_score():  # a task named score, as rows' is: a component is named after its function
    @dsl.component(base_image=IMAGE)
    def score(x: str, metrics: Output[Metrics]) -> float:
        metrics.log_metric("accuracy", 0.75)
        return 0.5
    return score


@dsl.pipeline(name="waits")
def waits(go: str, started: str) -> float:
    ready = wait_for_go_with_a_name_far_too_long_for_a_narrow_terminal(go=go, started=started)
    return _waits_score()(x=ready.output).outputs["Output"]


@dsl.component(base_image=IMAGE)
def make_rows(n: int, data: Output[Dataset]):
    with open(data.path, "w") as f:
        f.write("row\n" * n)


@dsl.component(base_image=IMAGE)
def fit(data: Input[Dataset], model: Output[Model]):
    import json

    with open(data.path) as f:
        rows = f.read().count("\n")
    with open(model.path, "w") as f:
        f.write(json.dumps({"rows": rows, "metadata": dict(data.metadata)}))


@dsl.component(base_image=IMAGE)
def score(model: Input[Model]) -> str:
    with open(model.path) as f:
        return f.read()


def rows_pipeline(name: str, cache_rows: bool):
    @dsl.pipeline(name=name)
    def pipeline(n: int = 3):
        rows = make_rows(n=n)
        rows.set_caching_options(cache_rows)  # off: re-executes every run, writing the same bytes
        model = fit(data=rows.outputs["data"])
        score(model=model.outputs["model"])
    return pipeline


@dsl.component(base_image=IMAGE)
def make_vocab(vocab: Output[Dataset]):
    with open(vocab.path, "w") as f:
        f.write("cat\ndog\n")


@dsl.component(base_image=IMAGE)
def train(data: Input[Dataset], model: Output[Model]):
    with open(data.path) as f:
        labels = [line.strip().split(",")[1] for line in f.readlines()[1:] if line.strip()]
    with open(model.path, "w") as f:
        f.write(f"{labels.count('cat')} cats, {labels.count('dog')} dogs\n")


@dsl.component(base_image=IMAGE)
def evaluate(model: Input[Model]) -> str:
    with open(model.path) as f:
        return f.read().strip()


@dsl.pipeline(name="labelled")
def labelled(labels: str):
    data = dsl.importer(artifact_uri=labels, artifact_class=Dataset, reimport=False)
    make_vocab()
    model = train(data=data.output)
    evaluate(model=model.outputs["model"])


def pvc_pipeline():
    from kfp import kubernetes

    @dsl.component(base_image=IMAGE)
    def train(model: Output[Model]):
        with open(model.path, "w") as f:
            f.write("\n".join(open(path).read() for path in ("/data/part-0", "/data/part-1")))

    @dsl.pipeline(name="pvc")
    def pvc():
        task = train()
        kubernetes.mount_pvc(task, pvc_name="training-data", mount_path="/data")
    return pvc


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for name, pipeline in [("waits", waits), ("rows", rows_pipeline("rows", cache_rows=True)),
                           ("early_cutoff", rows_pipeline("early-cutoff", cache_rows=False)),
                           ("labelled", labelled), ("pvc_pipeline", pvc_pipeline())]:
        compiler.Compiler().compile(pipeline, str(out / f"{name}.yaml"))
        print(f"compiled {out / name}.yaml")
