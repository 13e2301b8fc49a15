"""The execution cache, through the public API, on the real MLMD core, on every store backend (tests/backends.py)."""
from __future__ import annotations

import os

import pytest
from google.protobuf import json_format
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import (
    CacheKey,
    ExecutionCache,
    ExecutionStateError,
    InvalidArgumentError,
    NotFoundError,
    OutputError,
    Outputs,
    SourceIndex,
    Task,
    custom_fingerprint,
)
from tests.conftest import PIPELINE
from tests.kfp_records import record_as_kfp


def _events(cache: ExecutionCache, execution_id: int) -> dict[tuple[str, str], list[int]]:
    """(INPUT|OUTPUT, path key) -> artifact IDs of an execution's events."""
    found: dict[tuple[str, str], list[int]] = {}
    for event in cache.store.get_events_by_execution_ids([execution_id]):
        kind = mlmd.Event.Type.Name(event.type)
        found.setdefault((kind, event.path.steps[0].key), []).append(event.artifact_id)
    return found


def _property(execution: mlmd.Execution, name: str):
    value = execution.custom_properties[name]
    return getattr(value, value.WhichOneof("value"))


def test_second_run_hits_everywhere_and_reuses_artifact_ids(cache, chain):
    first = chain.run("run-1")
    assert chain.executed == ["A", "B", "C"]
    second = chain.run("run-2")
    assert chain.executed == []
    for task in "ABC":
        assert first[task].state == "COMPLETE"
        assert second[task].state == "CACHED"
        assert second[task].cached_execution_id == first[task].id
        assert second[task].output_artifact_ids == first[task].output_artifact_ids
        assert second[task].fingerprint == first[task].fingerprint
    assert second["B"].output_parameters == {"loss": 0.05}


def test_cached_execution_is_recorded_as_kfp_records_it(cache, chain):
    first = chain.run("run-1")
    second = chain.run("run-2")
    [stored] = cache.store.get_executions_by_id([second["B"].id])
    [source] = cache.store.get_executions_by_id([first["B"].id])
    assert stored.last_known_state == mlmd.Execution.CACHED
    assert cache.store.get_execution_types_by_id([stored.type_id])[0].name == "system.ContainerExecution"
    assert _property(stored, "cached_execution_id") == str(source.id)
    assert _property(stored, "cache_fingerprint") == _property(source, "cache_fingerprint")
    assert _property(stored, "task_name") == "B"
    assert _property(stored, "display_name") == "B"
    assert _property(stored, "image") == "python:3.11"
    assert stored.custom_properties["outputs"] == source.custom_properties["outputs"]
    assert stored.custom_properties["inputs"] == source.custom_properties["inputs"]
    assert _events(cache, stored.id) == _events(cache, source.id) == {
        ("INPUT", "dataset"): first["A"].output_artifact_ids["dataset"],
        ("OUTPUT", "model"): first["B"].output_artifact_ids["model"],
    }
    contexts = {(cache.store.get_context_types_by_id([c.type_id])[0].name, c.name)
                for c in cache.store.get_contexts_by_execution(stored.id)}
    assert contexts == {("system.Pipeline", PIPELINE), ("system.PipelineRun", "run-2")}
    # A hit makes no artifact of its own.
    assert len(cache.store.get_artifacts()) == 3


def test_published_execution_and_artifacts_are_recorded_as_kfp_records_them(cache, chain):
    first = chain.run("run-1")
    [stored] = cache.store.get_executions_by_id([first["B"].id])
    assert stored.last_known_state == mlmd.Execution.COMPLETE
    assert "cached_execution_id" not in stored.custom_properties
    assert len(_property(stored, "cache_fingerprint")) == 64
    [model] = cache.store.get_artifacts_by_id(first["B"].output_artifact_ids["model"])
    assert cache.store.get_artifact_types_by_id([model.type_id])[0].name == "system.Model"
    assert model.state == mlmd.Artifact.LIVE
    assert os.path.exists(model.uri)
    assert _property(model, "display_name") == "model"
    run_context = cache.store.get_context_by_type_and_name("system.PipelineRun", "run-1")
    assert {a.id for a in cache.store.get_artifacts_by_context(run_context.id)} >= {model.id}
    assert [p.name for p in cache.store.get_parent_contexts_by_context(run_context.id)] == [PIPELINE]


def test_caching_off_for_producer_makes_every_downstream_task_miss(cache, chain):
    first = chain.run("run-1")
    second = chain.run("run-2", cache_a=False)
    assert chain.executed == ["A", "B", "C"]
    assert second["A"].state == "COMPLETE"
    assert second["A"].output_artifact_ids["dataset"] != first["A"].output_artifact_ids["dataset"]
    assert [second[t].state for t in "BC"] == ["COMPLETE", "COMPLETE"]
    assert second["A"].fingerprint is None  # as in KFP, no fingerprint when caching is off
    # An execution that ran with caching off is never a cache source.
    third = chain.run("run-3")
    assert third["A"].cached_execution_id == first["A"].id


def test_changed_parameter_reruns_that_task_and_downstream_only(cache, chain):
    first = chain.run("run-1", lr=0.1)
    second = chain.run("run-2", lr=0.2)
    assert chain.executed == ["B", "C"]
    assert second["A"].state == "CACHED" and second["A"].cached_execution_id == first["A"].id
    assert second["B"].output_artifact_ids != first["B"].output_artifact_ids
    assert second["B"].output_parameters == {"loss": 0.1}
    third = chain.run("run-3", lr=0.1)
    assert chain.executed == []
    assert third["B"].cached_execution_id == first["B"].id


def test_run_level_switch_overrides_every_task(cache, chain):
    chain.run("run-1")
    chain.run("run-2", enable_caching=False)
    assert chain.executed == ["A", "B", "C"]
    # enable_caching=True on the run overrides a task's own set_caching_options(False).
    chain.run("run-3", enable_caching=True, cache_a=False)
    assert chain.executed == []


def test_deleted_output_file_is_a_miss(cache, chain):
    first = chain.run("run-1")
    [dataset] = cache.store.get_artifacts_by_id(first["A"].output_artifact_ids["dataset"])
    os.remove(dataset.uri)
    second = chain.run("run-2")
    assert chain.executed == ["A", "B", "C"]
    assert second["A"].output_artifact_ids != first["A"].output_artifact_ids


@pytest.mark.parametrize("state", [mlmd.Artifact.DELETED, mlmd.Artifact.MARKED_FOR_DELETION,
                                   mlmd.Artifact.ABANDONED, mlmd.Artifact.PENDING])
def test_unusable_artifact_state_is_a_miss(cache, chain, state):
    first = chain.run("run-1")
    [model] = cache.store.get_artifacts_by_id(first["B"].output_artifact_ids["model"])
    model.state = state
    cache.store.put_artifacts([model])
    chain.run("run-2")
    assert chain.executed == ["B", "C"]


def test_invalid_newest_source_falls_back_to_an_older_valid_one(cache, chain):
    first = chain.run("run-1")
    second = chain.run("run-2", cache_a=False)  # A runs again, but is no source (caching off)
    third = chain.run("run-3", enable_caching=False)
    assert third["A"].fingerprint is None
    # Make two more sources of A: run-4 re-executes A after its source's file is gone.
    [dataset] = cache.store.get_artifacts_by_id(first["A"].output_artifact_ids["dataset"])
    os.rename(dataset.uri, dataset.uri + ".moved")
    fourth = chain.run("run-4")
    assert fourth["A"].state == "COMPLETE"
    os.rename(dataset.uri + ".moved", dataset.uri)
    [newest] = cache.store.get_artifacts_by_id(fourth["A"].output_artifact_ids["dataset"])
    os.remove(newest.uri)
    fifth = chain.run("run-5")
    assert fifth["A"].cached_execution_id == first["A"].id
    assert second["A"].id != fifth["A"].cached_execution_id


def test_newest_valid_source_wins(cache, chain):
    chain.run("run-1")
    [dataset] = cache.store.get_artifacts_by_id(chain.run("run-1b")["A"].output_artifact_ids["dataset"])
    os.remove(dataset.uri)
    newer = chain.run("run-2")  # re-executes A: a second, newer source
    latest = chain.run("run-3")
    assert latest["A"].cached_execution_id == newer["A"].id


def test_many_invalid_sources_are_all_skipped(cache, tmp_path):
    """More invalid sources than one round of lookup reads: the oldest valid one is still found."""
    run = cache.pipeline_run("p", "r")
    task = Task("t", CacheKey.build(image="i", output_artifacts={"out": "system.Artifact"}))
    paths = []
    for index in range(11):
        path = tmp_path / f"out-{index}"
        path.write_text("x")
        paths.append(path)
        started = cache.start(run, task)
        cache.publish(started, Outputs(artifacts={"out": str(path)}))
        if index == 0:
            oldest = started.id
    for path in paths[1:]:
        path.unlink()
    hit = cache.lookup(run, task)
    assert hit is not None and hit.source_execution_id == oldest
    paths[0].unlink()
    assert cache.lookup(run, task) is None


def test_failed_run_is_never_a_source(cache, chain):
    with pytest.raises(RuntimeError, match="task B failed"):
        chain.run("run-1", fail_task="B")
    [failed] = [e for e in cache.store.get_executions() if e.custom_properties["task_name"].string_value == "B"]
    assert failed.last_known_state == mlmd.Execution.FAILED
    second = chain.run("run-2")
    assert chain.executed == ["B", "C"]  # A was a good source; the failed B is none
    assert second["A"].state == "CACHED"
    assert second["B"].state == "COMPLETE"


def test_other_pipeline_does_not_share_the_cache(cache, chain):
    first = chain.run("run-1")
    other = cache.pipeline_run("another-pipeline", "run-x")
    task = Task("A", CacheKey.build(image="python:3.11", command=["python", "-c", "make_data()"],
                                    output_artifacts={"dataset": "system.Dataset"}))
    assert task.fingerprint == first["A"].fingerprint
    assert cache.lookup(other, task) is None


def test_custom_cache_key_hits_across_changed_inputs(cache, tmp_path):
    run = cache.pipeline_run("p", "r1")

    def task(command):
        return Task("t", CacheKey.build(image="i", command=[command], output_parameters={"n": "NUMBER_INTEGER"}),
                    cache_key="v1", component_name="comp-t")

    first = cache.execute(run, task("one"), lambda s: Outputs(parameters={"n": 1}))
    second = cache.execute(cache.pipeline_run("p", "r2"), task("two"), lambda s: Outputs(parameters={"n": 2}))
    assert second.state == "CACHED" and second.cached_execution_id == first.id
    assert second.output_parameters == {"n": 1}
    assert first.fingerprint == custom_fingerprint("comp-t", "v1")
    [stored] = cache.store.get_executions_by_id([first.id])
    kept = json_format.MessageToDict(stored.custom_properties["mlmd_cache_key"].struct_value)
    assert kept["customCacheKey"] == "v1" and kept["componentName"] == "comp-t"
    assert kept["cacheKey"]["containerSpec"]["cmdArgs"] == ["one"]


def test_full_key_is_kept_with_every_execution(cache, chain):
    first = chain.run("run-1", lr=0.3)
    [stored] = cache.store.get_executions_by_id([first["B"].id])
    kept = json_format.MessageToDict(stored.custom_properties["mlmd_cache_key"].struct_value)
    assert CacheKey.from_json(kept["cacheKey"]).fingerprint() == first["B"].fingerprint


def test_publish_rejects_outputs_that_do_not_match_the_spec(cache, tmp_path):
    run = cache.pipeline_run("p", "r")
    task = Task("t", CacheKey.build(image="i", output_artifacts={"model": "system.Model"},
                                    output_parameters={"acc": "NUMBER_DOUBLE"}))
    started = cache.start(run, task)
    with pytest.raises(OutputError, match="output artifacts"):
        cache.publish(started, Outputs(artifacts={"other": "/x"}, parameters={"acc": 1.0}))
    with pytest.raises(OutputError, match="output parameters"):
        cache.publish(started, Outputs(artifacts={"model": "/x"}, parameters={}))
    # Nothing was written: the execution is still RUNNING and no artifact exists.
    assert cache.store.get_executions_by_id([started.id])[0].last_known_state == mlmd.Execution.RUNNING
    assert cache.store.get_artifacts() == []
    done = cache.publish(started, Outputs(artifacts={"model": "/x"}, parameters={"acc": 1.0}))
    assert done.state == "COMPLETE"
    with pytest.raises(ExecutionStateError, match="COMPLETE, not RUNNING"):
        cache.publish(started, Outputs(artifacts={"model": "/x"}, parameters={"acc": 1.0}))
    with pytest.raises(ExecutionStateError):
        cache.fail(started)


def test_execute_marks_failed_and_reraises(cache):
    run = cache.pipeline_run("p", "r")
    task = Task("t", CacheKey.build(image="i"))

    def boom(started):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.execute(run, task, boom)
    [execution] = cache.store.get_executions()
    assert execution.last_known_state == mlmd.Execution.FAILED
    assert cache.lookup(run, task) is None


def test_remote_uris_are_not_checked_on_disk(cache):
    run = cache.pipeline_run("p", "r")
    task = Task("t", CacheKey.build(image="i", output_artifacts={"m": "system.Model"}))
    cache.execute(run, task, lambda s: Outputs(artifacts={"m": "gs://bucket/model"}))
    assert cache.execute(run, task, lambda s: None).state == "CACHED"


def test_pipeline_run_is_reused_by_name(cache):
    first = cache.pipeline_run("p", "r")
    again = cache.pipeline_run("p", "r")
    assert first.run_context.id == again.run_context.id
    assert first.pipeline_context.id == again.pipeline_context.id


def test_a_run_belongs_to_one_pipeline_and_can_be_required_new(cache):
    cache.pipeline_run("p", "r")
    contexts = cache.store.get_contexts()
    with pytest.raises(InvalidArgumentError, match="pipeline run 'r' belongs to pipeline 'p', not 'q'"):
        cache.pipeline_run("q", "r")
    with pytest.raises(InvalidArgumentError, match="a pipeline run named 'r' is already in the store"):
        cache.pipeline_run("p", "r", exist_ok=False)
    assert cache.store.get_contexts() == contexts  # no pipeline context 'q' left behind
    assert cache.pipeline_run("p", "r2", exist_ok=False).run_context.name == "r2"


def test_missing_input_artifact_is_an_error_and_writes_nothing(cache):
    run = cache.pipeline_run("p", "r")
    task = Task("t", CacheKey.build(image="i", input_artifacts={"data": [999]}))
    with pytest.raises(NotFoundError, match="input 'data': no MLMD artifact with ID 999"):
        cache.execute(run, task, lambda started: None)
    assert cache.store.get_executions() == []


@pytest.mark.parametrize("pipeline, run", [("", "r"), ("p", "")])
def test_a_run_needs_names(cache, pipeline, run):
    with pytest.raises(InvalidArgumentError, match="pipeline name and a run name"):
        cache.pipeline_run(pipeline, run)


def test_executions_kfp_recorded_become_cache_sources_once_indexed(cache, tmp_path):
    task = Task("train", CacheKey.build(image="python:3.11", output_artifacts={"model": "system.Model"},
                                        output_parameters={"loss": "NUMBER_DOUBLE"}),
                cache_key="v1", component_name="comp-train")
    model = tmp_path / "model"
    model.write_text("weights")
    source = record_as_kfp(cache, "kfp-1", "train", mlmd.Execution.COMPLETE, task.fingerprint,
                          new_output_uri=model.as_uri(), parameters={"loss": 0.5})
    [model_id] = [e.artifact_id for e in cache.store.get_events_by_execution_ids([source])]
    record_as_kfp(cache, "kfp-1", "no-cache", mlmd.Execution.COMPLETE)  # caching off: no fingerprint
    record_as_kfp(cache, "kfp-1", "broken", mlmd.Execution.FAILED, custom_fingerprint("comp-broken", "v1"))
    record_as_kfp(cache, "kfp-2", "train", mlmd.Execution.CACHED, task.fingerprint, outputs=[model_id],
                 cached_from=source, parameters={"loss": 0.5})
    assert cache.find_source("kfp-pipeline", task.fingerprint) is None

    contexts = cache.store.get_contexts()
    assert cache.index_sources("kfp-pipeline", dry_run=True) == SourceIndex("kfp-pipeline", 1, 1, 1, True)
    assert cache.store.get_contexts() == contexts and cache.find_source("kfp-pipeline", task.fingerprint) is None

    indexed = cache.index_sources("kfp-pipeline")
    assert (indexed.sources, indexed.keys, indexed.added, indexed.already_indexed) == (1, 1, 1, 0)
    hit = cache.find_source("kfp-pipeline", task.fingerprint)
    assert hit.source_execution_id == source and hit.output_parameters == {"loss": 0.5}
    assert cache.find_source("kfp-pipeline", custom_fingerprint("comp-broken", "v1")) is None
    assert cache.index_sources("kfp-pipeline").added == 0  # indexing again adds nothing

    reused = cache.execute(cache.pipeline_run("kfp-pipeline", "ours-1"), task, lambda started: pytest.fail("ran"))
    assert (reused.state, reused.cached_execution_id) == ("CACHED", source)
    assert reused.output_artifact_ids == {"model": [model_id]}
    assert cache.pipeline_names() == ["kfp-pipeline"]
    with pytest.raises(NotFoundError, match="no pipeline named 'other' in the store"):
        cache.index_sources("other")
