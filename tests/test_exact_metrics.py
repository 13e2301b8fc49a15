"""Floats a task logs (``metrics.log_metric``, ``artifact.metadata``) read back exactly: MLMD 1.17.1 on
SQLite keeps a double custom property to six decimal places, so mlmd-cache records the exact value
beside KFP's double (``mlmd_cache_exact_metadata``, docs/reference/records.md) and reads it back in
the run summary, ``mlmd-lineage show`` and the exports. On every backend, with the real MLMD."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kfp import compiler, dsl
from kfp.dsl import Input, Metrics, Model, Output
from ml_metadata.proto import metadata_store_pb2 as mlmd

from lineage.cli import main as lineage_main
from mlmd_cache import connect
from mlmd_cache.cli import main
from mlmd_cache.store import records
from tests.backends import BACKENDS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

TINY = 1.2345678901e-7
MSE = 0.08572984938173277
BIG = 12345678.123456789


@dsl.component(base_image="python:3.11")
def evaluate(metrics: Output[Metrics], model: Output[Model]):
    metrics.log_metric("tiny", 1.2345678901e-7)
    metrics.log_metric("mse", 0.08572984938173277)
    metrics.log_metric("epochs", 3)
    model.metadata["big"] = 12345678.123456789
    model.metadata["note"] = "text"
    with open(model.path, "w") as f:
        f.write("model")


@dsl.component(base_image="python:3.11")
def report(metrics: Input[Metrics]) -> str:
    return repr(metrics.metadata["tiny"]) + " " + repr(metrics.metadata["mse"])


@dsl.pipeline(name="exact-metrics")
def exact_pipeline() -> str:
    return report(metrics=evaluate().outputs["metrics"]).output


def _invoke(command, *args: str) -> str:
    result = CliRunner().invoke(command, list(args))
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_logged_floats_read_back_exactly(backend, backends, tmp_path):
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(exact_pipeline, str(path))
    with backends.fresh_store(backend, tmp_path / "store") as db:
        summary = json.loads(_invoke(main, "run-pipeline", str(path), "--db", db, "--run-name", "r1", "--json",
                                     "--pipeline-root", str(tmp_path / "root")))
        [metrics] = summary["metrics"]
        assert metrics["values"] == {"tiny": TINY, "mse": MSE, "epochs": 3}
        assert summary["outputs"]["parameters"] == {"Output": f"{TINY!r} {MSE!r}"}  # what a downstream task reads
        text = _invoke(main, "run-pipeline", str(path), "--db", db, "--run-name", "r2",
                       "--pipeline-root", str(tmp_path / "root"))
        assert f"mse = {MSE!r}" in text and f"tiny = {TINY!r}" in text  # the re-run's summary: CACHED, same artifact

        store = connect(db)
        [model] = [a for a in store.get_artifacts() if a.custom_properties["display_name"].string_value == "model"]
        artifact = store.get_artifacts_by_id([metrics["artifact_id"]])[0]
        # KFP's record as KFP writes it: a double custom property per float, read by KFP's tools.
        assert artifact.custom_properties["mse"].WhichOneof("value") == "double_value"
        assert artifact.custom_properties["tiny"].WhichOneof("value") == "double_value"
        assert model.custom_properties["big"].WhichOneof("value") == "double_value"
        assert records.read_struct(artifact.custom_properties[records.EXACT_METADATA]) == {
            "tiny": repr(TINY), "mse": repr(MSE)}  # not epochs: 3.0 is kept as it is

        shown = json.loads(_invoke(lineage_main, "--db", db, "show", f"a:{artifact.id}", "--json"))
        assert {k: shown["properties"][k] for k in ("tiny", "mse", "epochs")} == {"tiny": TINY, "mse": MSE, "epochs": 3}
        shown_model = json.loads(_invoke(lineage_main, "--db", db, "show", f"a:{model.id}", "--json"))
        assert shown_model["properties"]["big"] == BIG and shown_model["properties"]["note"] == "text"
        text = _invoke(lineage_main, "--db", db, "show", f"a:{artifact.id}")
        assert "metadata mse:" in text and repr(MSE) in text and repr(TINY) in text

        exported = json.loads(_invoke(lineage_main, "--db", db, "export", "--run", "r1", "--format", "json", "-o", "-"))
        [node] = [node for node in exported["nodes"] if node.get("id") == f"a:{artifact.id}"]
        assert {k: node["properties"][k] for k in ("tiny", "mse")} == {"tiny": TINY, "mse": MSE}
        _invoke(lineage_main, "--db", db, "export", "--run", "r1", "-o", str(tmp_path / "run.html"))
        page = (tmp_path / "run.html").read_text()  # the side panel's data
        assert json.dumps(MSE) in page and json.dumps(TINY) in page and "0.08573," not in page


EXTREMES = {"tiny": TINY, "mse": MSE, "big": BIG, "huge": 1e300, "minus": -1e300, "small": -2.5e-12,
            "long": 123456789012345678.0, "int": 7, "text": "t"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_exact_record_gives_back_every_float_the_store_does_not(backend, backends, tmp_path, capsys):
    """MLMD 1.17.1 keeps a double to six decimal places on every backend (and within +-1e65 on MySQL,
    to 15 significant digits on SQLite): what it gives back is printed (-s), what mlmd-cache reads
    is each value as it was written."""
    with backends.fresh_store(backend, tmp_path / "store") as db:
        store = connect(db)
        type_id = store.put_artifact_type(mlmd.ArtifactType(name="system.Metrics"))
        artifact = mlmd.Artifact(type_id=type_id, uri="x")
        for key, value in records.metadata_properties("metrics", EXTREMES).items():
            artifact.custom_properties[key].CopyFrom(value)
        [artifact_id] = store.put_artifacts([artifact])
        back = store.get_artifacts_by_id([artifact_id])[0]
        with capsys.disabled():
            print(backend, {k: v.double_value for k, v in sorted(back.custom_properties.items())
                            if v.WhichOneof("value") == "double_value"})
        assert records.read_property(back, "tiny") == 0.0  # the loss itself, on the MLMD this is run with
        read = records.task_metadata(back)
        assert read == EXTREMES and type(read["int"]) is int

        # A double written over KFP's since (not by mlmd-cache) reads as written: the exact record no
        # longer stands for it. KFP's own records (no exact record) read as before.
        back.custom_properties["mse"].double_value = 0.5
        store.put_artifacts([back])
        assert records.task_metadata(store.get_artifacts_by_id([artifact_id])[0])["mse"] == 0.5
        kfps = mlmd.Artifact(type_id=type_id, uri="y")
        kfps.custom_properties["mse"].double_value = MSE
        [kfp_id] = store.put_artifacts([kfps])
        assert records.task_metadata(store.get_artifacts_by_id([kfp_id])[0]) == {"mse": records.read_property(
            store.get_artifacts_by_id([kfp_id])[0], "mse")}
