"""Content digests (--digest) and content-keyed inputs (--key-by-content): the digests themselves, the
publish/lookup path through the public API (SQLite and PostgreSQL), and run-pipeline (SQLite)."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner
from kfp import compiler
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
from mlmd_cache.store import records
from mlmd_cache.cli import main
from mlmd_cache.cache.digests import (DIGEST, KEY_MODE, SIZE, TREE_HEADER, Digest, content_fingerprint, digest_path,
                                      input_digests)
from mlmd_cache.errors import DigestError
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline
from mlmd_cache.cache.sources import SourceRules, examine_sources

from .pipelines import example_pipelines

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice

IMAGE = "python:3.11"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the digests ------------------------------------------------------------------------------------

def test_a_file_digest_is_its_sha256_and_size(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"hello\n")
    assert digest_path(path) == Digest("sha256:" + sha256(b"hello\n"), 6, 1)


def test_an_empty_file_has_the_sha256_of_no_bytes(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert digest_path(tmp_path / "empty") == Digest("sha256:" + sha256(b""), 0, 1)


def test_a_large_file_is_streamed_in_blocks_and_hashes_as_a_whole(tmp_path):
    data = random.Random(11).randbytes(5 * (1 << 20) + 3)  # five full 1 MiB reads and a short one
    (tmp_path / "large").write_bytes(data)
    assert digest_path(tmp_path / "large") == Digest("sha256:" + sha256(data), len(data), 1)


def _tree(root: Path, order: list[str]) -> Path:
    files = {"b.txt": b"bee", "a/x.bin": b"\x00\x01", "a.txt": b"ay", "a/deep/y": b""}
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
    (root / "empty-dir").mkdir()
    os.symlink("b.txt", root / "link")
    return root


def test_a_directory_digest_is_the_documented_tree_encoding(tmp_path):
    root = _tree(tmp_path / "t", ["b.txt", "a/x.bin", "a.txt", "a/deep/y"])

    def file(path: str, data: bytes) -> bytes:
        return b"f\0" + path.encode() + b"\0" + str(len(data)).encode() + b"\0" + sha256(data).encode() + b"\0"

    # sorted by relative path as bytes: "a" < "a.txt" < "a/deep" ('.' is 0x2e, '/' 0x2f)
    encoding = (TREE_HEADER + b"d\0a\0" + file("a.txt", b"ay") + b"d\0a/deep\0" + file("a/deep/y", b"")
                + file("a/x.bin", b"\x00\x01") + file("b.txt", b"bee") + b"d\0empty-dir\0" + b"l\0link\0b.txt\0")
    assert digest_path(root) == Digest("sha256-tree:" + sha256(encoding), 7, 4)


def test_a_directory_digest_does_not_depend_on_creation_order_but_on_every_entry(tmp_path):
    first = digest_path(_tree(tmp_path / "one", ["b.txt", "a/x.bin", "a.txt", "a/deep/y"]))
    assert digest_path(_tree(tmp_path / "two", ["a/deep/y", "a.txt", "a/x.bin", "b.txt"])) == first
    (tmp_path / "two" / "a" / "deep" / "y").write_bytes(b"!")  # a nested byte
    assert digest_path(tmp_path / "two").text != first.text
    (tmp_path / "two" / "a" / "deep" / "y").write_bytes(b"")
    assert digest_path(tmp_path / "two") == first
    (tmp_path / "two" / "empty-dir").rmdir()  # an empty directory counts
    assert digest_path(tmp_path / "two").text != first.text
    (tmp_path / "two" / "empty-dir").mkdir()
    (tmp_path / "two" / "b.txt").rename(tmp_path / "two" / "c.txt")  # a name counts
    assert digest_path(tmp_path / "two").text != first.text


def test_symlinks_are_recorded_as_links_never_followed(tmp_path):
    root = tmp_path / "dir"
    root.mkdir()
    target = tmp_path / "outside.txt"
    target.write_bytes(b"one")
    os.symlink(target, root / "link")
    before = digest_path(root)
    target.write_bytes(b"two, and longer")  # what the link points to is not part of the directory
    assert digest_path(root) == before
    assert before.size == 0 and before.files == 0
    os.remove(root / "link")
    os.symlink(tmp_path / "elsewhere.txt", root / "link")  # where it points is
    assert digest_path(root).text != before.text
    # a link given as the artifact itself is digested as a link too
    os.symlink(target, tmp_path / "top")
    assert digest_path(tmp_path / "top") == Digest("sha256-link:" + sha256(os.fsencode(target)), 0)


def test_a_file_and_a_directory_never_share_a_digest(tmp_path):
    (tmp_path / "dir").mkdir()
    encoding = TREE_HEADER  # an empty directory's encoding, written into a file
    (tmp_path / "file").write_bytes(encoding)
    assert digest_path(tmp_path / "file").text.split(":")[1] == digest_path(tmp_path / "dir").text.split(":")[1]
    assert digest_path(tmp_path / "file").text != digest_path(tmp_path / "dir").text


def test_nothing_there_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        digest_path(tmp_path / "missing")


# -- publish and lookup, through the API ---------------------------------------------------------------

PIPELINE = "digests"


@pytest.fixture(params=["sqlite", "postgresql"])
def cache(request: pytest.FixtureRequest, backends, tmp_path: Path) -> Iterator[ExecutionCache]:
    with backends.fresh_store(request.param, tmp_path) as url:
        yield ExecutionCache(connect(url))


@pytest.fixture
def sqlite_cache(tmp_path: Path) -> ExecutionCache:
    return ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))


def producer_key(tag: str = "make") -> CacheKey:
    return CacheKey.build(image=IMAGE, command=["python", "-c", tag], output_artifacts={"data": "system.Dataset"})


def consumer_key(data_id: int) -> CacheKey:
    return CacheKey.build(image=IMAGE, command=["python", "-c", "use"], input_artifacts={"data": [data_id]},
                          output_artifacts={"model": "system.Model"})


def writing(path: Path, data: bytes, calls: list):
    def work(started):
        calls.append(started.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return Outputs(artifacts={next(iter(started.task.key.output_artifact_types)): str(path)})
    return work


def produce(cache, tmp_path, run, data=b"rows\n", *, name="data", enable_cache=True, calls=None):
    calls = [] if calls is None else calls
    task = Task("make", producer_key(), enable_cache=enable_cache)
    return cache.execute(run, task, writing(tmp_path / run.name / name, data, calls))


def test_publish_records_digest_and_size_only_with_digests_on(cache, tmp_path):
    plain = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "plain"), enable_cache=False)
    [artifact] = plain.output_artifacts["data"]
    assert DIGEST not in artifact.custom_properties  # default: KFP's records, nothing more
    digested = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "digested", digest=True))
    [stored] = cache.store.get_artifacts_by_id([digested.output_artifact_ids["data"][0]])
    assert records.read_property(stored, DIGEST) == "sha256:" + sha256(b"rows\n")
    assert records.read_property(stored, SIZE) == 5
    # --digest changes no key: the fingerprint is KFP's
    assert digested.fingerprint == producer_key().fingerprint()
    assert KEY_MODE not in cache.store.get_executions_by_id([digested.id])[0].custom_properties


def _replace_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_replaced_output_byte_is_a_miss_with_digests_and_a_hit_without(cache, tmp_path):
    source = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r1", digest=True))
    _replace_byte(Path(source.output_artifacts["data"][0].uri))
    calls = []
    assert produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r2"), calls=calls).state == "CACHED"  # as KFP
    again = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r3", digest=True), calls=calls)
    assert again.state == "COMPLETE" and len(calls) == 1
    newest, oldest = [why for _, why in examine_sources(cache.store, PIPELINE, producer_key().fingerprint(),
                                                        SourceRules(verify_digests=True))]
    assert newest is None  # r3's own source
    problem = oldest
    artifact_id = source.output_artifact_ids["data"][0]
    assert problem.startswith(f"output artifact {artifact_id}'s bytes changed since it was recorded (sha256:")
    assert problem.endswith(" now)") and "then, sha256:" in problem


def test_truncation_and_a_file_replaced_by_a_directory_are_misses(cache, tmp_path):
    source = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r1", digest=True))
    path = Path(source.output_artifacts["data"][0].uri)
    artifact_id = source.output_artifact_ids["data"][0]
    rules = SourceRules(verify_digests=True)

    def problem() -> str:
        [(_, why)] = examine_sources(cache.store, PIPELINE, producer_key().fingerprint(), rules)
        return why

    path.write_bytes(b"ro")
    assert problem() == f"output artifact {artifact_id}'s bytes changed since it was recorded (5 bytes then, 2 now)"
    path.unlink()
    path.mkdir()
    assert problem() == (f"output artifact {artifact_id}'s bytes changed since it was recorded "
                         "(a file then, a directory now)")
    path.rmdir()
    path.write_bytes(b"rows\n")  # the very bytes again: valid again
    assert problem() is None
    assert produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r2", digest=True)).state == "CACHED"


def test_a_directory_output_is_checked_entry_by_entry(sqlite_cache, tmp_path):
    cache = sqlite_cache
    folder = tmp_path / "model"

    def work(started):
        (folder / "weights").mkdir(parents=True)
        (folder / "weights" / "w.bin").write_bytes(b"\x01\x02\x03")
        (folder / "config.json").write_text("{}")
        return Outputs(artifacts={"data": str(folder)})

    task = Task("make", producer_key())
    source = cache.execute(cache.pipeline_run(PIPELINE, "r1", digest=True), task, work)
    [artifact] = source.output_artifacts["data"]
    assert records.read_property(artifact, DIGEST).startswith("sha256-tree:")
    assert records.read_property(artifact, SIZE) == 5
    assert cache.execute(cache.pipeline_run(PIPELINE, "r2", digest=True), task, work).state == "CACHED"
    _replace_byte(folder / "weights" / "w.bin")
    [(_, problem)] = examine_sources(cache.store, PIPELINE, task.fingerprint, SourceRules(verify_digests=True))
    assert problem.startswith(f"output artifact {artifact.id}'s bytes changed since it was recorded (sha256-tree:")


def test_an_output_that_cannot_be_digested_fails_the_task_and_writes_nothing(sqlite_cache, tmp_path):
    cache = sqlite_cache
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    run = cache.pipeline_run(PIPELINE, "r1", digest=True)
    with pytest.raises(DigestError, match=r"^task 'make', output 'data': .*fifo is neither a file, a directory"):
        cache.execute(run, Task("make", producer_key()), lambda started: Outputs(artifacts={"data": str(fifo)}))
    [execution] = cache.store.get_executions()
    assert execution.last_known_state == mlmd.Execution.FAILED
    assert cache.store.get_artifacts() == []


def test_remote_uris_are_neither_hashed_nor_checked(sqlite_cache, tmp_path, caplog):
    cache = sqlite_cache
    run = cache.pipeline_run(PIPELINE, "r1", key_by_content=True)
    remote = cache.execute(run, Task("make", producer_key()),
                           lambda started: Outputs(artifacts={"data": "gs://bucket/data"}))
    [artifact] = remote.output_artifacts["data"]
    assert DIGEST not in artifact.custom_properties
    with caplog.at_level(logging.WARNING, logger="mlmd_cache"):
        consumer = cache.keyed(run, Task("use", consumer_key(artifact.id)))
    assert consumer.input_digests == {"data": [f"id:{artifact.id}"]}
    assert f"input artifact {artifact.id} (gs://bucket/data) has no digest and is not local" in caplog.text
    assert cache.lookup(cache.pipeline_run(PIPELINE, "r2", key_by_content=True), Task("make", producer_key())) is not None


# -- content-keyed inputs, through the API ---------------------------------------------------------

def consume(cache, run, data_id, calls):
    def work(started):
        calls.append(started.id)
        path = Path(cache.store.get_artifacts_by_id([data_id])[0].uri).with_suffix(".model")
        path.write_bytes(b"model")
        return Outputs(artifacts={"model": str(path)})
    return cache.execute(run, Task("use", consumer_key(data_id)), work)


def test_identical_bytes_from_an_uncached_producer_keep_the_consumer_cached_by_content(cache, tmp_path):
    calls: list = []
    results = {}
    for name in ("r1", "r2"):
        run = cache.pipeline_run(PIPELINE, name, key_by_content=True)
        made = produce(cache, tmp_path, run, enable_cache=False)  # re-executes each run: a new artifact
        results[name] = consume(cache, run, made.output_artifact_ids["data"][0], calls)
    assert results["r1"].output_artifact_ids != {} and len(calls) == 1
    assert results["r2"].state == "CACHED" and results["r2"].cached_execution_id == results["r1"].id
    # the key names the input by digest, recorded with the mode on the execution
    [stored] = cache.store.get_executions_by_id([results["r1"].id])
    assert records.read_property(stored, KEY_MODE) == "content"
    assert records.read_property(stored, records.CACHE_KEY)["inputDigests"] == {"data": ["sha256:" + sha256(b"rows\n")]}
    assert results["r1"].fingerprint == content_fingerprint(consumer_key(1), {"data": ["sha256:" + sha256(b"rows\n")]})
    # by MLMD ID (KFP's key), the same two runs miss: the producer's artifact is a new one each time
    for name in ("k1", "k2"):
        run = cache.pipeline_run(PIPELINE, name)
        made = produce(cache, tmp_path, run, enable_cache=False)
        assert consume(cache, run, made.output_artifact_ids["data"][0], calls).state == "COMPLETE"
    # different bytes: a different key by content too
    run = cache.pipeline_run(PIPELINE, "r3", key_by_content=True)
    made = produce(cache, tmp_path, run, b"other rows\n", enable_cache=False)
    assert consume(cache, run, made.output_artifact_ids["data"][0], calls).state == "COMPLETE"


def test_an_input_whose_bytes_changed_under_the_same_id_misses_by_content(sqlite_cache, tmp_path):
    """As an importer's artifact (reimport=False keeps its ID): by ID it hits, by content it does not."""
    cache = sqlite_cache
    made = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r0"), enable_cache=False)  # no digest recorded
    data_id = made.output_artifact_ids["data"][0]
    calls: list = []
    assert consume(cache, cache.pipeline_run(PIPELINE, "c1", key_by_content=True), data_id, calls).state == "COMPLETE"
    assert consume(cache, cache.pipeline_run(PIPELINE, "c2", key_by_content=True), data_id, calls).state == "CACHED"
    Path(made.output_artifacts["data"][0].uri).write_bytes(b"new rows\n")
    assert consume(cache, cache.pipeline_run(PIPELINE, "c3", key_by_content=True), data_id, calls).state == "COMPLETE"
    assert consume(cache, cache.pipeline_run(PIPELINE, "i1"), data_id, calls).state == "COMPLETE"
    assert consume(cache, cache.pipeline_run(PIPELINE, "i2"), data_id, calls).state == "CACHED"


def test_the_two_key_modes_never_share_a_source(sqlite_cache, tmp_path):
    cache = sqlite_cache
    by_id = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "id-1"))
    # a task without input artifacts has KFP's key in both modes: the content fingerprint is salted
    by_content = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "content-1", key_by_content=True))
    assert by_content.state == "COMPLETE"
    assert by_content.fingerprint != by_id.fingerprint == producer_key().fingerprint()
    again = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "id-2", digest=True))
    assert again.state == "CACHED" and again.cached_execution_id == by_id.id
    again = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "content-2", key_by_content=True))
    assert again.state == "CACHED" and again.cached_execution_id == by_content.id
    # and should the two ever meet under one fingerprint, the rule says why not
    [(_, problem)] = examine_sources(cache.store, PIPELINE, by_content.fingerprint, SourceRules())
    assert problem == f"execution {by_content.id} keys input artifacts by content (--key-by-content), this lookup by MLMD ID"
    [(_, problem)] = examine_sources(cache.store, PIPELINE, by_id.fingerprint, SourceRules(key_mode="content"))
    assert problem == f"execution {by_id.id} keys input artifacts by MLMD ID, this lookup by content (--key-by-content)"


def test_custom_cache_keys_are_salted_by_mode_too(sqlite_cache, tmp_path):
    cache = sqlite_cache
    task = Task("make", producer_key(), cache_key="v1", component_name="make")
    first = cache.execute(cache.pipeline_run(PIPELINE, "id"), task, writing(tmp_path / "a", b"a", []))
    second = cache.execute(cache.pipeline_run(PIPELINE, "content", key_by_content=True), task,
                           writing(tmp_path / "b", b"b", []))
    assert second.state == "COMPLETE" and first.fingerprint != second.fingerprint


def test_input_digests_trust_only_what_the_run_verified(sqlite_cache, tmp_path):
    cache = sqlite_cache
    made = produce(cache, tmp_path, cache.pipeline_run(PIPELINE, "r0", digest=True))
    [artifact] = made.output_artifacts["data"]
    Path(artifact.uri).write_bytes(b"changed")  # the recorded digest is stale now
    assert input_digests(cache.store, {"data": [artifact.id]}) == {"data": ["sha256:" + sha256(b"changed")]}
    verified = {artifact.id: "sha256:known"}
    assert input_digests(cache.store, {"data": [artifact.id, artifact.id]}, verified) == \
        {"data": ["sha256:known", "sha256:known"]}


# -- run-pipeline ------------------------------------------------------------------------------------

rows_pipeline = example_pipelines().rows_pipeline  # make-rows -> fit -> score, as the docs run it


@pytest.fixture(scope="module")
def cutoff_yaml(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipelines") / "early-cutoff.yaml"
    compiler.Compiler().compile(rows_pipeline("early-cutoff", cache_rows=False), str(path))
    return str(path)


@pytest.fixture(scope="module")
def cached_yaml(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipelines") / "rows.yaml"
    compiler.Compiler().compile(rows_pipeline("rows", cache_rows=True), str(path))
    return str(path)


def states(report) -> dict[str, str]:
    return {name: task.state for name, task in report.tasks.items()}


def test_run_pipeline_key_by_content_is_an_early_cutoff(cutoff_yaml, tmp_path):
    cache = ExecutionCache(connect(f"sqlite:///{tmp_path / 'mlmd.sqlite'}"))
    pipeline = load_pipeline(cutoff_yaml)

    def run(name: str, **options):
        return run_pipeline(cache, pipeline, run_name=name, pipeline_root=tmp_path / "root", **options)

    first = run("c1", key_by_content=True)
    assert states(first) == {"make-rows": "COMPLETE", "fit": "COMPLETE", "score": "COMPLETE"}
    second = run("c2", key_by_content=True)
    assert states(second) == {"make-rows": "COMPLETE", "fit": "CACHED", "score": "CACHED"}
    assert second.tasks["fit"].cached_execution_id == first.tasks["fit"].execution_id
    # the task saw its input's metadata as KFP gives it: our digest records are not part of it
    assert json.loads(first.tasks["score"].output_parameters["Output"]) == {"rows": 3, "metadata": {}}
    # by MLMD ID (the default) the uncached producer's new artifact makes every consumer run again
    run("i1")
    assert states(run("i2")) == {"make-rows": "COMPLETE", "fit": "COMPLETE", "score": "COMPLETE"}
    # other bytes upstream: the consumers run by content too
    other = run_pipeline(cache, pipeline, {"n": 4}, run_name="c3", pipeline_root=tmp_path / "root", key_by_content=True)
    assert states(other) == dict.fromkeys(["make-rows", "fit", "score"], "COMPLETE")


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_run_pipeline_flags(cached_yaml, cutoff_yaml, tmp_path):
    db = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    root = ["--db", db, "--pipeline-root", str(tmp_path / "root")]

    def run(path: str, name: str, *flags: str) -> dict[str, str]:
        code, out, err = cli("run-pipeline", path, *root, "--run-name", name, "--json", *flags)
        assert code == 0, err
        return {task: report["state"] for task, report in json.loads(out)["tasks"].items()}

    assert run(cached_yaml, "d1", "--digest") == dict.fromkeys(["make-rows", "fit", "score"], "COMPLETE")
    store = connect(db)
    digested = {Path(a.uri).name: a for a in store.get_artifacts() if DIGEST in a.custom_properties}
    assert sorted(digested) == ["data", "model"]  # score's output is a parameter
    Path(digested["model"].uri).write_text("tampered")
    # with --digest, fit's source is refused and fit runs again (so does score, on the new model)
    assert run(cached_yaml, "d2", "--digest") == {"make-rows": "CACHED", "fit": "COMPLETE", "score": "COMPLETE"}
    [fit] = [e for e in store.get_executions() if records.read_property(e, records.TASK_NAME) == "fit"
             and records.read_property(e, records.MISS_REASON)]
    assert records.read_property(fit, records.MISS_REASON) == (
        f"output artifact {digested['model'].id}'s bytes changed since it was recorded (27 bytes then, 8 now)")
    Path(digested["data"].uri).write_text("tampered")
    # without it, as KFP: a changed output is reused
    assert run(cached_yaml, "d3") == dict.fromkeys(["make-rows", "fit", "score"], "CACHED")
    code, out, err = cli("run-pipeline", cutoff_yaml, *root, "--run-name", "k1", "--key-by-content")
    assert code == 0, err
    code, out, err = cli("run-pipeline", cutoff_yaml, *root, "--run-name", "k2", "--key-by-content")
    assert (code, err) == (0, "")
    assert "run k2 of pipeline early-cutoff: 1 executed, 2 cached" in out.splitlines()
    code, out, err = cli("run-pipeline", "--help")
    assert "--digest" in out and "--key-by-content" in out


@pytest.fixture
def mysql_cache(backends, tmp_path: Path) -> Iterator[ExecutionCache]:
    with backends.fresh_store("mysql", tmp_path) as url:
        yield ExecutionCache(connect(url))


def test_an_output_over_2_gib_is_recorded_and_checked_on_mysql(mysql_cache, tmp_path):
    """MLMD's MySQL schema holds 32-bit ints: a size of 2**31 bytes or more is kept as a double."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: no disk, the digest reads zeros
        f.truncate(2 ** 31 + 7)
    run = mysql_cache.pipeline_run(PIPELINE, "big", digest=True)
    done = mysql_cache.execute(run, Task("make", producer_key("big"), enable_cache=True),
                               lambda started: Outputs(artifacts={"data": str(big)}))
    [stored] = mysql_cache.store.get_artifacts_by_id(done.output_artifact_ids["data"])
    assert records.read_property(stored, SIZE) == 2 ** 31 + 7
    again = mysql_cache.pipeline_run(PIPELINE, "big-again", digest=True)
    with open(big, "r+b") as f:
        f.truncate(2 ** 31 + 6)  # truncated: told by the size, before any hashing
    found = mysql_cache.look_up(again, Task("make", producer_key("big")))
    assert found.hit is None and "2147483655 bytes then, 2147483654 now" in found.miss_reason
