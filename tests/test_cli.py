"""The ``mlmd-cache`` command line, run as a user runs it (click's runner and the installed script)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from ml_metadata.proto import metadata_store_pb2 as mlmd

from mlmd_cache import CacheKey, ExecutionCache, Outputs, Task, connect
from mlmd_cache.cli import main
from tests.kfp_records import PIPELINE as KFP_PIPELINE
from tests.kfp_records import record_as_kfp
from tests.test_key import GOLDEN, GOLDEN_CUSTOM


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("document, expected", GOLDEN)
def test_fingerprint_of_a_file(runner, tmp_path, document, expected):
    path = tmp_path / "key.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(main, ["fingerprint", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == expected + "\n"


def test_fingerprint_from_stdin_with_bytes(runner):
    document, expected = GOLDEN[0]
    result = runner.invoke(main, ["fingerprint", "-", "--show-bytes"], input=json.dumps(document, indent=2))
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        expected,
        '{"containerSpec":{"cmdArgs":["sh","ec","run"],"image":"python:3.11"},'
        '"inputArtifactNames":{"dataset":{"artifactNames":["10"]}},"outputParametersSpec":{"output_parameter":"DOUBLE"}}',
    ]


@pytest.mark.parametrize("component, key, expected", GOLDEN_CUSTOM)
def test_fingerprint_of_a_custom_key(runner, component, key, expected):
    result = runner.invoke(main, ["fingerprint", "--custom-key", key, "--component", component])
    assert result.exit_code == 0
    assert result.output == expected + "\n"


def test_custom_key_bytes_are_shown_escaped(runner):
    result = runner.invoke(main, ["fingerprint", "--custom-key", "k", "--component", "c", "--show-bytes"])
    assert result.output.splitlines()[1] == '"c\\u0000k"'


@pytest.mark.parametrize("text, message", [
    ("{", "invalid JSON"),
    ('{"inputArtifactNames": 1, "bogus": true}', "Error: not a KFP cache key"),
    ('{"bogus": true}', 'no field named "bogus"'),
    ("", "invalid JSON"),
])
def test_fingerprint_rejects_bad_input_with_exit_2(runner, text, message):
    result = runner.invoke(main, ["fingerprint"], input=text)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_fingerprint_of_a_missing_file_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["fingerprint", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "No such file or directory" in result.output


def test_fingerprint_file_and_custom_key_are_exclusive(runner, tmp_path):
    path = tmp_path / "key.json"
    path.write_text("{}")
    result = runner.invoke(main, ["fingerprint", str(path), "--custom-key", "k"])
    assert result.exit_code == 2
    assert "not both" in result.output


def _published(store_url: str, tmp_path) -> tuple[CacheKey, int, str]:
    cache = ExecutionCache(connect(store_url))
    key = CacheKey.build(image="python:3.11", command=["train"], output_artifacts={"model": "system.Model"},
                         output_parameters={"acc": "NUMBER_DOUBLE"})
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    done = cache.execute(cache.pipeline_run("training", "run-1"), Task("train", key),
                         lambda started: Outputs(artifacts={"model": str(model)}, parameters={"acc": 0.9}))
    return key, done.id, str(model)


def test_lookup_reports_a_hit_and_what_it_reuses(runner, store_url, tmp_path):
    key, source_id, model = _published(store_url, tmp_path)
    key_file = tmp_path / "key.json"
    key_file.write_text(key.to_json())
    result = runner.invoke(main, ["lookup", str(key_file), "--pipeline", "training", "--db", store_url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"fingerprint {key.fingerprint()}",
        f"hit: execution {source_id} (task train)",
        f"  output model: artifact #1 {model}",
        "  parameter acc = 0.9",
    ]
    as_json = runner.invoke(main, ["lookup", str(key_file), "--pipeline", "training", "--db", store_url, "--json"])
    assert json.loads(as_json.output) == {
        "fingerprint": key.fingerprint(), "hit": True, "source_execution_id": source_id, "source_task": "train",
        "output_artifacts": {"model": [{"id": 1, "uri": model}]}, "output_parameters": {"acc": 0.9},
    }


def test_lookup_reads_the_store_from_mlmd_db(runner, store_url, tmp_path, monkeypatch):
    key, _, _ = _published(store_url, tmp_path)
    monkeypatch.setenv("MLMD_DB", store_url)
    result = runner.invoke(main, ["lookup", "--pipeline", "other", "--json"], input=key.to_json())
    assert json.loads(result.output)["hit"] is False
    result = runner.invoke(main, ["lookup", "--pipeline", "training"], input=key.to_json())
    assert "hit: execution" in result.output


def test_lookup_misses_when_the_output_is_gone(runner, store_url, tmp_path):
    key, _, model = _published(store_url, tmp_path)
    (tmp_path / "model.bin").unlink()
    result = runner.invoke(main, ["lookup", "--pipeline", "training", "--db", store_url], input=key.to_json())
    assert result.exit_code == 0
    assert result.output.splitlines()[1] == "miss: no valid cache source in pipeline 'training'"


def test_lookup_on_the_default_store(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("MLMD_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = tmp_path / "data" / "mlmd-cache" / "metadata.sqlite"
    key = '{"containerSpec": {"image": "i"}}'
    result = runner.invoke(main, ["lookup", "--pipeline", "p"], input=key)
    assert result.exit_code == 1 and f"no MLMD store at sqlite:///{default}" in result.output
    assert not (tmp_path / "data").exists()  # a read-only command creates nothing
    runner.invoke(main, ["index"])  # a writing command creates the default store
    result = runner.invoke(main, ["lookup", "--pipeline", "p"], input=key)
    assert result.exit_code == 0 and "miss" in result.output, result.output


@pytest.mark.parametrize("url, code, message", [
    ("nonsense", 2, "not a store URL"),
    ("ftp://host/db", 2, "unsupported store URL scheme 'ftp'"),
    ("mysql://root:s3cret@127.0.0.1:1/db", 1, "cannot"),
])
def test_bad_store_urls_are_one_line_errors(runner, url, code, message):
    result = runner.invoke(main, ["lookup", "--pipeline", "p", "--db", url], input='{}')
    assert result.exit_code == code
    assert message in result.output
    assert "s3cret" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_installed_console_script():
    script = shutil.which("mlmd-cache")
    if script is None:
        pytest.skip("the mlmd-cache console script is not installed (pip install -e .)")
    done = subprocess.run([script, "fingerprint", "--custom-key", "custom-key", "--component", "my-component"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == GOLDEN_CUSTOM[2][2]


def test_index_makes_kfp_recorded_executions_cache_sources(runner, store_url, tmp_path):
    cache = ExecutionCache(connect(store_url))
    model = tmp_path / "model"
    model.write_text("weights")
    fingerprint = CacheKey.build(image="python:3.11", output_artifacts={"model": "system.Model"}).fingerprint()
    source = record_as_kfp(cache, "kfp-1", "train", mlmd.Execution.COMPLETE, fingerprint, new_output_uri=model.as_uri())
    record_as_kfp(cache, "kfp-2", "train", mlmd.Execution.COMPLETE, "0" * 64, new_output_uri=model.as_uri())
    key_file = tmp_path / "key.json"
    key_file.write_text(CacheKey.build(image="python:3.11", output_artifacts={"model": "system.Model"}).to_json())
    lookup = ["lookup", str(key_file), "--pipeline", KFP_PIPELINE, "--db", store_url, "--json"]
    assert json.loads(runner.invoke(main, lookup).output)["hit"] is False

    result = runner.invoke(main, ["index", "--db", store_url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output == f"pipeline {KFP_PIPELINE}: 2 cache sources of 2 keys: would add 2, 0 already indexed\n"
    assert json.loads(runner.invoke(main, lookup).output)["hit"] is False
    result = runner.invoke(main, ["index", "--db", store_url, "--pipeline", KFP_PIPELINE, "--json"])
    assert json.loads(result.output) == {"dry_run": False, "pipelines": [
        {"pipeline": KFP_PIPELINE, "sources": 2, "keys": 2, "added": 2, "already_indexed": 0}]}
    assert json.loads(runner.invoke(main, lookup).output)["source_execution_id"] == source
    result = runner.invoke(main, ["index", "--db", store_url])
    assert result.output == f"pipeline {KFP_PIPELINE}: 2 cache sources of 2 keys: added 0, 2 already indexed\n"

    result = runner.invoke(main, ["index", "--db", store_url, "--pipeline", "nope"])
    assert result.exit_code == 2 and result.output == "Error: no pipeline named 'nope' in the store\n"


def test_lookup_exit_code_tells_hit_or_miss(runner, store_url, tmp_path):
    key, source_id, _ = _published(store_url, tmp_path)
    lookup = ["lookup", "--db", store_url, "--exit-code"]
    result = runner.invoke(main, [*lookup, "--pipeline", "training"], input=key.to_json())
    assert result.exit_code == 0 and f"hit: execution {source_id} (task train)" in result.output
    result = runner.invoke(main, [*lookup, "--pipeline", "other"], input=key.to_json())
    assert result.exit_code == 1
    assert result.output.splitlines()[1] == "miss: no valid cache source in pipeline 'other'"
    result = runner.invoke(main, [*lookup, "--pipeline", "other", "--json"], input=key.to_json())
    assert result.exit_code == 1 and json.loads(result.output)["hit"] is False
    result = runner.invoke(main, ["lookup", "--db", store_url, "--pipeline", "other"], input=key.to_json())
    assert result.exit_code == 0  # a miss without --exit-code is an answer, not a failure
    result = runner.invoke(main, [*lookup, "--pipeline", "training"], input="{")
    assert result.exit_code == 2  # a mistake stays a mistake


def test_db_and_timeout_go_before_or_after_the_subcommand(tmp_path, monkeypatch):
    from lineage.cli import main as lineage_main

    store = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    cache = ExecutionCache(connect(store))
    cache.execute(cache.pipeline_run("training", "run-1"), Task("train", CacheKey.build(image="i")),
                  lambda started: Outputs())
    missing = f"sqlite:///{tmp_path / 'missing.sqlite'}"
    timeouts = []

    def connect_spy(*args, **kwargs):
        timeouts.append(kwargs["call_timeout"])
        return connect(*args, **kwargs)

    monkeypatch.setattr("mlmd_cache.connection.connect", connect_spy)  # the CLI imports it when it opens a store

    def answer(command, args, env=None):
        result = CliRunner(env={"MLMD_DB": None, "MLMD_TIMEOUT": None, **(env or {})}).invoke(command, args)
        return result.exit_code, result.stdout, result.stderr

    after = answer(main, ["stats", "--json", "--db", store])
    assert after[0] == 0 and json.loads(after[1])["executed"] == 1, after
    assert answer(main, ["--db", store, "stats", "--json"]) == after
    assert answer(main, ["--db", missing, "stats", "--json", "--db", store]) == after  # the subcommand's wins
    assert answer(main, ["--db", store, "stats", "--json"], env={"MLMD_DB": missing}) == after
    code, _, err = answer(main, ["--db", store, "stats", "--db", missing])
    assert code == 1 and "missing.sqlite" in err
    runs = answer(lineage_main, ["runs", "--json", "--db", store])
    assert runs[0] == 0 and [r["run"] for r in json.loads(runs[1])["runs"]] == ["run-1"]
    assert answer(lineage_main, ["--db", store, "runs", "--json"]) == runs
    assert answer(lineage_main, ["--db", missing, "runs", "--json", "--db", store]) == runs

    timeouts.clear()
    answer(main, ["--timeout", "7", "stats", "--db", store])
    answer(main, ["--timeout", "7", "stats", "--db", store, "--timeout", "9"])
    answer(lineage_main, ["--timeout", "7", "runs", "--db", store])
    answer(lineage_main, ["runs", "--db", store], env={"MLMD_TIMEOUT": "5"})
    answer(lineage_main, ["runs", "--db", store, "--timeout", "9"], env={"MLMD_TIMEOUT": "5"})
    answer(lineage_main, ["runs", "--db", store])
    assert timeouts == [7, 9, 7, 5, 9, 30]
    code, _, err = answer(main, ["--timeout", "0", "stats", "--db", store])
    assert code == 2 and len(err.splitlines()) == 1 and "--timeout" in err

    for command in (main, lineage_main):
        code, out, _ = answer(command, ["--help"])
        assert code == 0 and "--db URL" in out and "--timeout SECONDS" in out and "$MLMD_DB" in out


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("url", ["grpc://127.0.0.1:1", "grpcs://127.0.0.1:1"])
def test_serve_names_the_stores_it_serves(runner, url, processes):
    from mlmd_cache.connection import DATABASE_URLS

    result = runner.invoke(main, ["serve", "--db", url, "--port", "0", "--processes", processes])
    assert result.exit_code == 2
    scheme = url.partition(":")[0]
    assert result.output == f"Error: serve needs a database, not {scheme}:// (another MLMD server): give {DATABASE_URLS}\n"
    help_text = " ".join(runner.invoke(main, ["serve", "--help"]).output.split())
    assert f"--db URL The database to serve: {DATABASE_URLS}." in help_text
    assert "grpc://" not in help_text and "grpcs://" not in help_text


def test_serve_refuses_db_before_the_subcommand_with_mysql_flags(runner, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlmd.sqlite'}"
    result = runner.invoke(main, ["--db", store, "serve", "--mysql_config_host", "h", "--mysql_config_database", "d"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: give either --db or the --mysql_config_* flags, not both")
    assert not (tmp_path / "mlmd.sqlite").exists()
