"""The parsed-pipeline cache (mlmd_cache.pipeline.parsed_pipelines): a hit is what parsing the file gives (for
every pipeline the tests compile), a changed file or environment is parsed again, a torn, edited or
foreign entry is ignored and written anew, a bad file is told as before and never kept, and a
directory that cannot be written only costs the parse."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kfp import compiler

from mlmd_cache.pipeline import parsed_pipelines, spec as pipeline_spec
from mlmd_cache.pipeline.parsed_pipelines import map_orders
from mlmd_cache.pipeline.spec import CompiledPipeline, PipelineSpecError
from tests.startup_pipeline import startup_pipeline
from tests.test_startup import module_pipelines

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")  # kfp's, compiling

REPO = Path(__file__).resolve().parent.parent
NAME = "startup-cached"
DEFAULT = "p.spec.root.input_definitions.parameters['n'].default_value.number_value"


def default(pipeline: CompiledPipeline) -> float:
    return pipeline.spec.root.input_definitions.parameters["n"].default_value.number_value


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "parsed"
    monkeypatch.setenv("MLMD_CACHE_PIPELINE_DIR", str(directory))
    return directory


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(startup_pipeline, str(path))
    return path


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pb"))


def same(hit: CompiledPipeline, parsed: CompiledPipeline) -> None:
    assert hit == parsed  # the spec, the executors (as messages) and the timeouts
    assert list(hit.executors) == list(parsed.executors)
    assert map_orders(hit.spec) == map_orders(parsed.spec)
    assert hit.spec.SerializeToString(deterministic=True) == parsed.spec.SerializeToString(deterministic=True)


def test_a_hit_is_what_parsing_the_file_gives_for_every_test_pipeline(tmp_path: Path, cache_dir: Path) -> None:
    pipelines = module_pipelines()
    assert len(pipelines) > 40
    kept = 0
    for name, pipeline in pipelines:
        path = tmp_path / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        try:
            parsed = pipeline_spec.load_pipeline(str(path))
        except PipelineSpecError as error:  # refused alike, and never kept
            with pytest.raises(PipelineSpecError) as refused:
                parsed_pipelines.load_pipeline(str(path))
            assert str(refused.value) == str(error)
            continue
        first = parsed_pipelines.load_pipeline(str(path))  # parsed, then kept
        kept += 1
        assert len(entries(cache_dir)) == kept, name
        hit = parsed_pipelines.load_pipeline(str(path))
        same(first, parsed)
        same(hit, parsed)
    assert kept > 40
    assert [p.name for p in cache_dir.iterdir() if not p.name.endswith(".pb")] == []  # no temporary file left


def test_a_hit_reads_no_yaml_and_a_changed_file_is_parsed_again(pipeline_file: Path, cache_dir: Path) -> None:
    script = ("import json, sys\nfrom mlmd_cache.pipeline.parsed_pipelines import load_pipeline\n"
              "p = load_pipeline(sys.argv[1])\n"
              f"print(json.dumps([p.name, {DEFAULT}, 'yaml' in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLMD_CACHE_PIPELINE_DIR": str(cache_dir)}

    def load() -> list:
        done = subprocess.run([sys.executable, "-c", script, str(pipeline_file)], capture_output=True, text=True,
                              env=env, check=True)
        return json.loads(done.stdout)

    text = pipeline_file.read_text()
    assert "defaultValue: 3.0" in text
    assert load() == [NAME, 3.0, True]  # parsed: PyYAML imported
    assert load() == [NAME, 3.0, False]  # a hit: no PyYAML
    pipeline_file.write_text(text.replace("defaultValue: 3.0", "defaultValue: 4.0"))
    assert load() == [NAME, 4.0, True]  # another file: parsed, not the old entry
    assert load() == [NAME, 4.0, False]
    assert len(entries(cache_dir)) == 2


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "garbage", "other key", "other format"])
def test_a_damaged_or_foreign_entry_is_ignored_and_written_again(pipeline_file: Path, cache_dir: Path,
                                                                  damage: str) -> None:
    parsed = parsed_pipelines.load_pipeline(str(pipeline_file))
    [entry] = entries(cache_dir)
    data = entry.read_bytes()
    if damage == "truncated":
        broken = data[:len(data) // 2]
    elif damage == "flipped":  # one bit of the spec: protobuf might well decode it, the digest does not match
        broken = bytearray(data)
        broken[-40] ^= 0x01
        broken = bytes(broken)
    elif damage == "empty":
        broken = b""
    elif damage == "garbage":
        broken = os.urandom(len(data))
    elif damage == "other key":  # an intact entry of another file, under this file's name
        other = pipeline_file.with_name("other.yaml")
        other.write_text(pipeline_file.read_text().replace("defaultValue: 3.0", "defaultValue: 5.0"))
        parsed_pipelines.load_pipeline(str(other))
        [foreign] = [e for e in entries(cache_dir) if e != entry]
        broken = foreign.read_bytes()
    else:  # an entry of a later format, intact otherwise
        body = data[len(parsed_pipelines.FORMAT) + 32:]
        broken = b"mlmd-cache parsed pipeline 2\n" + data[len(parsed_pipelines.FORMAT):len(parsed_pipelines.FORMAT) + 32] + body
    entry.write_bytes(broken)
    assert parsed_pipelines._read(entry, entry.stem) is None
    again = parsed_pipelines.load_pipeline(str(pipeline_file))
    same(again, parsed)
    assert entry.read_bytes() == data  # written anew, whole
    same(parsed_pipelines._read(entry, entry.stem), parsed)


def test_the_key_changes_with_what_the_parse_depends_on(pipeline_file: Path, cache_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_pipelines.load_pipeline(str(pipeline_file))
    before = parsed_pipelines._environment()
    monkeypatch.setattr(parsed_pipelines, "__version__", "99.0")  # another mlmd-cache
    assert parsed_pipelines._environment() != before
    parsed_pipelines.load_pipeline(str(pipeline_file))
    assert len(entries(cache_dir)) == 2
    monkeypatch.undo()
    assert parsed_pipelines._environment() == before
    # an edited module that parses or checks pipelines (a checkout): its source is in the key
    source = Path(pipeline_spec.__file__).read_bytes()
    monkeypatch.setattr(pipeline_spec, "__file__", str(pipeline_file.with_name("pipeline_spec.py")))
    Path(pipeline_spec.__file__).write_bytes(source + b"\n# edited\n")
    assert parsed_pipelines._environment() not in (before, None)
    Path(pipeline_spec.__file__).unlink()  # a module whose source cannot be read: nothing is cached
    assert parsed_pipelines._environment() is None
    parsed_pipelines.load_pipeline(str(pipeline_file))
    assert len(entries(cache_dir)) == 2


def test_a_bad_file_is_told_as_before_and_never_kept(tmp_path: Path, pipeline_file: Path, cache_dir: Path) -> None:
    cases = {"missing.yaml": None, "not-yaml.yaml": b"a: [1,\n", "binary.yaml": b"\xff\xfe\x00",
             "v1.yaml": b"apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n",
             "unknown.yaml": pipeline_file.read_bytes().replace(b"pipelineInfo:", b"notAField: 1\npipelineInfo:"),
             "pipeline.py": pipeline_file.read_bytes()}  # a compiled pipeline's bytes, named as Python source
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(PipelineSpecError) as expected:
            pipeline_spec.load_pipeline(str(path))
        for _ in range(2):
            with pytest.raises(PipelineSpecError) as told:
                parsed_pipelines.load_pipeline(str(path))
            assert str(told.value) == str(expected.value), name
    assert entries(cache_dir) == [] if cache_dir.exists() else True


def test_a_directory_that_cannot_be_written_costs_only_the_parse(tmp_path: Path, pipeline_file: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("MLMD_CACHE_PIPELINE_DIR", str(blocked / "pipelines"))  # under a file: cannot be made
    parsed = pipeline_spec.load_pipeline(str(pipeline_file))
    same(parsed_pipelines.load_pipeline(str(pipeline_file)), parsed)
    assert blocked.read_text() == ""


def test_the_directory_keeps_the_newest_entries(tmp_path: Path, pipeline_file: Path, cache_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsed_pipelines, "MAX_ENTRIES", 3)
    text = pipeline_file.read_text()
    for number in range(5):
        path = tmp_path / f"p{number}.yaml"
        path.write_text(text.replace("defaultValue: 3.0", f"defaultValue: {number + 10}.0"))
        parsed_pipelines.load_pipeline(str(path))
        entry = max(entries(cache_dir), key=lambda e: e.stat().st_mtime_ns)
        os.utime(entry, ns=(number * 10**9, number * 10**9))  # written in this order, whatever the clock's grain
    assert len(entries(cache_dir)) == 3
    kept = [parsed_pipelines._read(entry, entry.stem) for entry in entries(cache_dir)]
    values = sorted(default(p) for p in kept)
    assert values == [12.0, 13.0, 14.0]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_directory_others_may_write_to_is_not_used(pipeline_file: Path, cache_dir: Path, mode: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_pipelines.load_pipeline(str(pipeline_file))  # an entry, while the directory was this user's alone
    [entry] = entries(cache_dir)
    cache_dir.chmod(mode)
    parses = []
    real = pipeline_spec.load_pipeline
    monkeypatch.setattr(pipeline_spec, "load_pipeline", lambda *args: parses.append(args) or real(*args))
    same(parsed_pipelines.load_pipeline(str(pipeline_file)), real(str(pipeline_file)))
    assert len(parses) == 1  # parsed: the entry there is not read
    cache_dir.chmod(0o700)
    parsed_pipelines.load_pipeline(str(pipeline_file))
    assert len(parses) == 1 and entries(cache_dir) == [entry]  # this user's alone again: a hit
