"""Parameter values KFP and MLMD cannot hold (NaN, Infinity, 1e400, 1e-400, inexact integers, lone
surrogates, deep nesting, invalid UTF-8): every way in (`run-pipeline --param`, pipeline constants,
`fingerprint` and `lookup` key files, the library) refuses them with one line, exit code 2, and writes
nothing. And -0 keeps its sign all the way into MLMD.

Values as KFP reads them: a --param number in the syntax of JSON and Go (no spaces, underscores or
other digits than 0-9), a bool true or false, a duration in ASCII, and --db '' refused, not read
as the default store."""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import copy
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml
from click.testing import CliRunner
from kfp import compiler, dsl

from mlmd_cache import CacheKey, CacheKeyError, ExecutionCache, InvalidArgumentError, connect
from mlmd_cache.store import records
from mlmd_cache.key import json_values
from mlmd_cache.cli import main
from mlmd_cache.pipeline.spec import PipelineSpecError, load_pipeline
from mlmd_cache.runner import run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp's default base image notice


@dsl.container_component
def show(l: List[int], s: Dict[str, int], i: int, f: float, t: str, b: bool = False):
    return dsl.ContainerSpec(image="alpine:3.19", command=["echo"], args=[t])


@dsl.pipeline(name="values")
def values_pipeline(l: List[int] = [1], s: Dict[str, int] = {"a": 1}, i: int = 1, f: float = 1.0, t: str = "x",
                    b: bool = False):
    show(l=l, s=s, i=i, f=f, t=t, b=b)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# (--param NAME=VALUE, what the one error line says)
BAD_PARAMS = [
    ("l=[NaN]", "parameter 'l', at [0]: NaN is not a valid parameter value (JSON has no NaN; KFP refuses it)"),
    ("l=[Infinity]", "parameter 'l', at [0]: Infinity is not a valid parameter value"),
    ("s={\"a\": -Infinity}", "parameter 's', at a: -Infinity is not a valid parameter value"),
    ("l=[1e400]", "parameter 'l', at [0]: 1e400 is beyond the range of a float64"),
    (f"l=[{10 ** 400}]", "parameter 'l', at [0]: 100000000000...0000 (401 characters) is beyond the range"),
    (f"l=[{'9' * 5000}]", "is beyond the range of a float64"),
    (f"i={10 ** 400}", "parameter 'i': 100000000000...0000 (401 characters) is beyond the range"),
    (f"i={2 ** 53 + 1}", "parameter 'i': 9007199254740993 is an integer a float64 cannot hold exactly"),
    (f"l=[{2 ** 53 + 1}]", "parameter 'l', at [0]: 9007199254740993 is an integer a float64 cannot hold exactly"),
    ("f=nan", "parameter 'f': 'nan' is not a number (ASCII digits, a sign, a fraction and an exponent, as JSON "
              "writes one) (declared NUMBER_DOUBLE)"),
    ("f=Infinity", "parameter 'f': 'Infinity' is not a number"),
    ("f=1e400", "parameter 'f': 1e400 is beyond the range of a float64"),
    ("f=-1e400", "parameter 'f': -1e400 is beyond the range of a float64"),
    # what Python's int() and float() read, and KFP does not: JSON/Go syntax, ASCII digits only
    ("i= 5 ", "parameter 'i': ' 5 ' is not an integer (ASCII digits and a sign, as JSON writes one) "
              "(declared NUMBER_INTEGER)"),
    ("i=1_000", "parameter 'i': '1_000' is not an integer"),
    ("i=\u0661\u0662\u0663", "is not an integer"),  # Arabic-Indic 123
    ("i=\uff15", "is not an integer"),  # a fullwidth 5
    ("i=5.0", "parameter 'i': '5.0' is not an integer"),
    ("i=0x10", "parameter 'i': '0x10' is not an integer"),
    ("i=", "parameter 'i': '' is not an integer"),
    ("f=1_0.5", "parameter 'f': '1_0.5' is not a number"),
    ("f=\t1.5", "is not a number"),
    ("f=\u0661.\u0665", "is not a number"),
    ("f=0x1p3", "parameter 'f': '0x1p3' is not a number"),
    # a float64 underflow is refused, not read as 0 (whose fingerprint it would then have)
    ("f=1e-400", "parameter 'f': 1e-400 is too small for a float64, in which KFP keeps every number (it would "
                 "be read as 0)"),
    ("f=-2e-324", "parameter 'f': -2e-324 is too small for a float64"),
    ("l=[1e-400]", "parameter 'l', at [0]: 1e-400 is too small for a float64"),
    # bools as KFP's SDK reads them: true or false, nothing else
    ("b=yes", "parameter 'b': 'yes' is not a boolean (true or false) (declared BOOLEAN)"),
    ("b=1", "parameter 'b': '1' is not a boolean"),
    ("b=0", "parameter 'b': '0' is not a boolean"),
    ("b= true", "parameter 'b': ' true' is not a boolean"),
    ("b=\uff54rue", "is not a boolean"),  # a fullwidth t
    ('l=["\\ud800"]', "parameter 'l', at [0]: the string holds \\ud800, a lone surrogate"),
    ('s={"\\udc00": 1}', "parameter 's': an object key holds \\udc00, a lone surrogate"),
    ("t=caf\udce9", "parameter 't': the string holds \\udce9, a lone surrogate"),  # Latin-1 bytes in argv
    (f"l={nested(json_values.MAX_DEPTH + 1)}", f"parameter 'l': lists and objects nest deeper than "
                                                f"{json_values.MAX_DEPTH} levels"),
    (f"l={nested(300)}", "nest deeper than"),
    (f"l={nested(3000)}", "nest deeper than"),  # beyond Python's recursion limit
    ("l=[1,", "parameter 'l': '[1,' is not a JSON list (declared LIST)"),
]


@pytest.fixture(scope="module")
def pipeline_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipeline") / "values.yaml"
    compiler.Compiler().compile(values_pipeline, str(path))
    return path


@pytest.fixture
def store(tmp_path, pipeline_yaml) -> Path:
    """A SQLite store that already holds one good run (so a bad run could have changed it)."""
    path = tmp_path / "store.sqlite"
    code, out, err = cli("run-pipeline", str(pipeline_yaml), "--db", f"sqlite:///{path}",
                         "--pipeline-root", str(tmp_path / "root"), "--run-name", "good")
    assert code == 0, err
    return path


def cli(*args: str, input: bytes = None):
    result = CliRunner().invoke(main, list(args), input=input)
    # An exception that escaped the command is a traceback for a user: only SystemExit may end it.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("Error: ") and "Traceback" not in err
    assert expected in err, err


@pytest.mark.parametrize("param, expected", BAD_PARAMS, ids=[p[:20] for p, _ in BAD_PARAMS])
def test_run_pipeline_refuses_a_bad_parameter_and_writes_nothing(tmp_path, pipeline_yaml, store, param, expected):
    before = store.read_bytes()
    code, out, err = cli("run-pipeline", str(pipeline_yaml), "--db", f"sqlite:///{store}",
                         "--pipeline-root", str(tmp_path / "root"), "--run-name", "bad", "--param", param)
    assert_one_line_error(code, err, expected)
    assert out == ""
    assert store.read_bytes() == before
    assert not (tmp_path / "root" / "bad").exists()


def test_a_new_store_is_not_created_for_a_bad_parameter(tmp_path, pipeline_yaml):
    path = tmp_path / "new.sqlite"
    code, _, err = cli("run-pipeline", str(pipeline_yaml), "--db", f"sqlite:///{path}", "--param", "l=[NaN]")
    assert_one_line_error(code, err, "NaN")
    assert not path.exists()


def test_a_real_process_with_undecodable_argv_and_stdin(tmp_path, pipeline_yaml, store):
    """The bytes a shell passes (not str): argv in Latin-1, a key file that is not UTF-8."""
    before = store.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.run([sys.executable, "-m", "mlmd_cache", "run-pipeline", str(pipeline_yaml), "--db",
                              f"sqlite:///{store}", "--param", b"t=caf\xe9", "--param", b"l=[NaN]"],
                             capture_output=True, env=env, timeout=120)
    assert process.returncode == 2 and len(process.stderr.splitlines()) == 1, process.stderr
    assert b"lone surrogate" in process.stderr or b"NaN" in process.stderr
    process = subprocess.run([sys.executable, "-m", "mlmd_cache", "fingerprint"], input=b'{"containerSpec": \xff}',
                             capture_output=True, env=env, timeout=120)
    assert process.returncode == 2, process.stderr
    assert process.stderr == b"Error: cache key: invalid JSON: not UTF-8 text (byte 0xff at offset 18)\n"
    assert store.read_bytes() == before


# (--param NAME=VALUE, the value the run records): what KFP reads these as
GOOD_PARAMS = [
    ("i=-12", -12), ("i=+7", 7), ("i=007", 7), ("f=.5", 0.5), ("f=1E3", 1000.0), ("f=5.", 5.0), ("f=2.5e-324", 5e-324),
    ("b=true", True), ("b=false", False), ("b=TRUE", True), ("b=False", False),
]


def test_values_as_kfp_reads_them(tmp_path, pipeline_yaml):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    pipeline = load_pipeline(str(pipeline_yaml))
    for param, expected in GOOD_PARAMS:
        name, _, text = param.partition("=")
        value = pipeline.parse_parameters({name: text})[name]
        assert value == expected and type(value) is type(expected), param
    code, _, err = cli("run-pipeline", str(pipeline_yaml), "--db", db, "--pipeline-root", str(tmp_path / "root"),
                       "--param", "i=+7", "--param", "b=TRUE", "--param", "f=.5")
    assert code == 0, err
    [task] = [e for e in connect(db).get_executions() if records.read_property(e, records.TASK_NAME) == "show"]
    inputs = records.read_property(task, records.INPUTS)
    assert (inputs["i"], inputs["b"], inputs["f"]) == (7, True, 0.5)


BAD_DURATIONS = [
    ("--max-cache-staleness", "\u0661d"),  # an Arabic-Indic 1
    ("--max-cache-staleness", "P\u0661D"),
    ("--task-staleness", "show=\uff11h"),  # a fullwidth 1
    ("--lease", "\u0663\u0660s"),
    ("--max-wait", "1\u0660m"),
    ("--lease", "\u200330s"),  # an em space, which str.strip() would take away
]


@pytest.mark.parametrize("option, value", BAD_DURATIONS, ids=[o for o, _ in BAD_DURATIONS])
def test_a_duration_is_ascii(tmp_path, pipeline_yaml, store, option, value):
    before = store.read_bytes()
    code, out, err = cli("run-pipeline", str(pipeline_yaml), "--db", f"sqlite:///{store}",
                         "--pipeline-root", str(tmp_path / "root"), "--run-name", "bad", option, value)
    assert_one_line_error(code, err, "not a duration")
    assert out == "" and store.read_bytes() == before
    code, _, err = cli("stats", "--db", f"sqlite:///{store}", "--since", value.rpartition("=")[2])
    assert_one_line_error(code, err, "--since")


@pytest.mark.parametrize("command", [["index"], ["stats"], ["invalidate", "--list"], ["recover"],
                                     ["run-pipeline", "PIPELINE"], ["plan", "PIPELINE"], ["serve", "--port", "0"]])
def test_an_empty_db_url_is_refused_not_read_as_the_default_store(tmp_path, pipeline_yaml, monkeypatch, command):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # where the default store would be
    monkeypatch.delenv("MLMD_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    default = tmp_path / "data" / "mlmd-cache" / "metadata.sqlite"
    connect(f"sqlite:///{default}")  # a default store that works, so a command that used it would succeed
    before = default.read_bytes()
    args = [str(pipeline_yaml) if arg == "PIPELINE" else arg for arg in command]
    for where in ("after", "before"):  # --db of the subcommand, and of the group
        code, out, err = cli(*(args + ["--db", ""] if where == "after" else ["--db", ""] + args))
        assert_one_line_error(code, err, "an empty store URL")
        assert out == "" and default.read_bytes() == before, where
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no pipeline root, no store made elsewhere


def test_mlmd_lineage_refuses_an_empty_db_url_too(tmp_path, monkeypatch):
    from lineage.cli import main as lineage_main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MLMD_DB", raising=False)
    connect(f"sqlite:///{tmp_path / 'data' / 'mlmd-cache' / 'metadata.sqlite'}")  # the default store works
    for args in (["runs", "--db", ""], ["--db", "", "runs"]):
        result = CliRunner().invoke(lineage_main, args)
        assert result.exit_code == 2 and result.stdout == "", result.output
        assert result.stderr.startswith("Error: an empty store URL") and len(result.stderr.splitlines()) == 1


# -- constants in the pipeline file ---------------------------------------------------------------

def _default(name, value):
    return lambda document: document["root"]["inputDefinitions"]["parameters"][name].__setitem__("defaultValue", value)


def _constant(name, value):
    return lambda document: document["root"]["dag"]["tasks"]["show"]["inputs"]["parameters"].__setitem__(
        name, {"runtimeValue": {"constant": value}})


BAD_FILES = [
    (_default("f", float("nan")), "the pipeline, parameter 'f': the default: NaN is not a valid parameter value"),
    (_default("l", [float("inf")]), "parameter 'l': the default, at [0]: Infinity is not a valid"),
    (_default("l", deep_list(40)), "parameter 'l': the default: lists and objects nest deeper than"),
    (_constant("i", 10 ** 400), "task 'show', input 'i': the constant: 100000000000...0000 (401 characters) is "
                                "beyond the range of a float64"),
    (_constant("i", 2 ** 53 + 1), "task 'show', input 'i': the constant: 9007199254740993 is an integer"),
    (_constant("s", {"a": float("-inf")}), "input 's': the constant, at a: -Infinity is not a valid"),
]


@pytest.mark.parametrize("change, expected", BAD_FILES)
def test_run_pipeline_refuses_a_bad_constant_in_the_file(tmp_path, pipeline_yaml, store, change, expected):
    document = yaml.safe_load(pipeline_yaml.read_text())
    change(document)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    before = store.read_bytes()
    code, _, err = cli("run-pipeline", str(path), "--db", f"sqlite:///{store}", "--run-name", "bad")
    assert_one_line_error(code, err, expected)
    assert err.startswith(f"Error: {path}: ")
    assert store.read_bytes() == before
    with pytest.raises(PipelineSpecError, match="not a valid|beyond|cannot hold|nest deeper"):
        load_pipeline(str(path))


def test_loop_items_in_the_file_are_checked(tmp_path):
    @dsl.pipeline(name="loop")
    def loop():
        with dsl.ParallelFor(items=[1, 2]) as item:
            show(l=[item], s={}, i=item, f=1.0, t="x")

    path = tmp_path / "loop.yaml"
    compiler.Compiler().compile(loop, str(path))
    text = path.read_text()
    assert "raw: '[1, 2]'" in text
    path.write_text(text.replace("raw: '[1, 2]'", "raw: '[1, NaN]'"))
    with pytest.raises(PipelineSpecError, match=r"task 'for-loop-\d+': the dsl.ParallelFor items, at \[1\]: NaN"):
        load_pipeline(str(path))


# -- cache keys: fingerprint and lookup -----------------------------------------------------------

BAD_KEY_VALUES = [
    ("NaN", "at inputParameterValues.p: NaN is not a valid parameter value"),
    ("Infinity", "Infinity is not a valid parameter value"),
    ("[-Infinity]", "at inputParameterValues.p[0]: -Infinity"),
    ("1e400", "1e400 is beyond the range of a float64"),
    ("1e-400", "1e-400 is too small for a float64"),  # else it would have 0's fingerprint
    ("[-0.1e-330]", "at inputParameterValues.p[0]: -0.1e-330 is too small for a float64"),
    (str(10 ** 400), "(401 characters) is beyond the range of a float64"),
    ('"\\ud800"', "the string holds \\ud800, a lone surrogate"),
    (nested(200), "lists and objects nest deeper than"),
    (nested(5000), "lists and objects nest deeper than"),
]


def key_text(value: str) -> bytes:
    return ('{"containerSpec":{"image":"i"},"inputParameterValues":{"p":' + value + "}}").encode()


@pytest.mark.parametrize("value, expected", BAD_KEY_VALUES, ids=[v[:12] for v, _ in BAD_KEY_VALUES])
@pytest.mark.parametrize("command", ["fingerprint", "lookup"])
@pytest.mark.parametrize("from_file", [False, True], ids=["stdin", "file"])
def test_fingerprint_and_lookup_refuse_a_bad_key(tmp_path, store, command, from_file, value, expected):
    before = store.read_bytes()
    args = [command] + (["--pipeline", "values", "--db", f"sqlite:///{store}"] if command == "lookup" else [])
    if from_file:
        path = tmp_path / "key.json"
        path.write_bytes(key_text(value))
        code, out, err = cli(*args, str(path))
    else:
        code, out, err = cli(*args, input=key_text(value))
    assert_one_line_error(code, err, expected)
    assert err.startswith("Error: cache key")
    assert out == ""
    assert store.read_bytes() == before


@pytest.mark.parametrize("command", ["fingerprint", "lookup"])
def test_a_key_file_that_is_not_utf8(tmp_path, store, command):
    args = [command] + (["--pipeline", "values", "--db", f"sqlite:///{store}"] if command == "lookup" else [])
    path = tmp_path / "key.bin"
    path.write_bytes(bytes(range(256)))
    code, _, err = cli(*args, str(path))
    assert_one_line_error(code, err, "cache key: invalid JSON: not UTF-8 text (byte 0x80 at offset 128)")


def test_negative_zero_fingerprint_on_the_command_line():
    code, out, _ = cli("fingerprint", "--show-bytes",
                       input=b'{"containerSpec":{"image":"0"},"inputParameterValues":{"0":-0}}')
    assert code == 0
    assert out.splitlines() == ["d8b0f9944fc09f85a8622798da291ad4141511cf3f051b576e180c0b99724d05",
                                '{"containerSpec":{"image":"0"},"inputParameterValues":{"0":-0}}']


# -- -0 through a run -----------------------------------------------------------------------------

def test_negative_zero_keeps_its_sign_into_mlmd(tmp_path, pipeline_yaml):
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    code, _, err = cli("run-pipeline", str(pipeline_yaml), "--db", db, "--pipeline-root", str(tmp_path / "root"),
                       "--param", "l=[-0, 0, 1152921504606847000]", "--param", "f=-0", "--param", "s={\"a\": -0}")
    assert code == 0, err
    cache = ExecutionCache(connect(db))
    [task] = [e for e in cache.store.get_executions() if records.read_property(e, records.TASK_NAME) == "show"]
    inputs = records.read_property(task, records.INPUTS)
    assert [math.copysign(1, x) for x in inputs["l"][:2]] == [-1, 1]
    assert inputs["l"][2] == 2 ** 60
    assert math.copysign(1, inputs["f"]) == -1 and math.copysign(1, inputs["s"]["a"]) == -1
    key = CacheKey.from_json(records.read_property(task, records.CACHE_KEY)["cacheKey"])
    assert b'"l":[-0,0,1152921504606847000]' in key.hashed_bytes()
    assert key.fingerprint() == records.read_property(task, records.CACHE_FINGERPRINT)


# -- the library ----------------------------------------------------------------------------------

@pytest.mark.parametrize("parameters, expected", [
    ({"l": [float("nan")]}, "parameter 'l', at [0]: NaN is not a valid parameter value"),
    ({"f": float("inf")}, "parameter 'f': Infinity is not a valid parameter value"),
    ({"i": 10 ** 400}, "parameter 'i': 100000000000...0000 (401 characters) is beyond the range"),
    ({"i": 2 ** 53 + 1}, "parameter 'i': 9007199254740993 is an integer a float64 cannot hold exactly"),
    ({"t": "\ud800"}, "parameter 't': the string holds \\ud800"),
    ({"s": {"a": {1, 2}}}, "parameter 's', at a: a value of type set is not a JSON value"),
    ({"s": {3: 1}}, "parameter 's': the object key 3 is not a string"),
    ({"l": deep_list(5000)}, "parameter 'l': lists and objects nest deeper than"),
])
def test_run_pipeline_library_refuses_bad_values_before_writing(tmp_path, pipeline_yaml, store, parameters, expected):
    before = store.read_bytes()
    cache = ExecutionCache(connect(f"sqlite:///{store}"))
    with pytest.raises(PipelineSpecError) as raised:
        run_pipeline(cache, load_pipeline(str(pipeline_yaml)), parameters, run_name="bad",
                     pipeline_root=tmp_path / "root")
    assert isinstance(raised.value, InvalidArgumentError)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert store.read_bytes() == before


def test_the_validator_itself():
    assert json_values.parse(b'{"a": [-0, -0.0, 0e-400, 2, 1.5]}') == {"a": [-0.0, -0.0, 0.0, 2, 1.5]}
    with pytest.raises(json_values.JSONValueError, match=r"^at a\[0\]: 1e-400 is too small for a float64"):
        json_values.parse('{"a": [1e-400]}')  # an underflow is not 0
    assert math.copysign(1, json_values.parse("-0")) == -1
    assert isinstance(json_values.parse("2"), int)
    json_values.check({"ok": [None, True, "é🎉", 2 ** 60, -(2 ** 53), 1e308]}, "value")
    with pytest.raises(InvalidArgumentError, match=r"^value, at a\[1\]\.b: NaN is not"):
        json_values.check({"a": [0, {"b": float("nan")}]}, "value")
    with pytest.raises(CacheKeyError, match=r"^key: invalid JSON: (Expecting value|Illegal trailing comma)"):
        json_values.loads("[1,]", "key", error=CacheKeyError)
    with pytest.raises(json_values.JSONValueError) as raised:
        json_values.parse("{")
    assert raised.value.syntax
    deep = copy.deepcopy([[[1]]])
    json_values.check(deep, "value", max_depth=3)
    with pytest.raises(InvalidArgumentError, match="deeper than 2 levels"):
        json_values.check(deep, "value", max_depth=2)
