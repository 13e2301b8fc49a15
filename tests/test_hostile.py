"""Hostile input to every command and to the names MLMD stores (issue 10: filters, names, bad input).

Every failing case must end as the project's rules say: exit code 1 or 2, one line on standard error
("Error: ..."), no traceback, and the store unchanged (SQLite: the same bytes, or no file; MySQL and
PostgreSQL: the same row counts). Most commands run in this process (click's runner: a subprocess
costs two seconds of imports), with file descriptor 2 and Python's log read as stderr, so that what
MLMD's C++ core and client print is seen too; serve and the read-only store run as subprocesses.
"""
# (no `from __future__ import annotations`: KFP reads the components' annotations as types)

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pytest
import yaml
from click.testing import CliRunner
from kfp import dsl
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from lineage import cli as lineage_cli
from lineage.load import load_task_history
from mlmd_cache import cli as cache_cli
from mlmd_cache import CacheKey, ExecutionCache, InvalidArgumentError, Outputs, Task, connect
from mlmd_cache.store import mlmd_compat, records
from mlmd_cache.store.limits import MAX_NAME_BYTES
from mlmd_cache.pipeline.spec import load_pipeline
from mlmd_cache.runner import run_pipeline
from tests.backends import Backends, row_counts
from tests.pipelines import compile_to, echo_value

REPO = Path(__file__).resolve().parent.parent
# serve opens (and creates) its store before it binds --host, so an address it cannot listen on leaves a new store
DIRECT = ("sqlite", "mysql", "postgresql")

# Task and run names that are legal everywhere except where the test says otherwise.
HOSTILE_NAMES = {
    "quote-or-true": "\\' OR true --",
    "quote": "a'b",
    "double-quote": 'a"b',
    "both-quotes": "x' OR 'a'='a\"",
    "backslash": "a\\b",
    "newline": "a\nb",
    "percent": "100%",
    "underscore": "a_b",
    "emoji": "\U0001F600 emoji",
    "ansi": "a\x1b[31mred\x1b[0m",
    "upper": "A",
    "lower": "a",
    "trailing-space": "a ",
    "accent": "\u00e9",
    "long": "x" * 10_000,
}


# -- helpers ------------------------------------------------------------------------------------------

MAINS = {"mlmd-cache": cache_cli.main, "mlmd-lineage": lineage_cli.main}


class _Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}:{record.name}:{record.getMessage()}\n")


def run(program: str, *args: Union[str, bytes], stdin: bytes = b"") -> Tuple[int, str, str]:
    """Run ``mlmd-cache`` or ``mlmd-lineage`` in this process (a subprocess costs two seconds of
    imports): (exit code, stdout, stderr). Standard error is read at the file descriptor, so what
    MLMD's C++ core prints is seen too; an exception that escapes the command counts as a traceback."""
    runner = CliRunner(env={"MLMD_DB": None})
    logged = _Logged()  # a command's Python log lines, which a subprocess prints on stderr (pytest takes them here)
    with tempfile.TemporaryFile() as native:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        logging.getLogger().addHandler(logged)
        try:
            # bytes as Python gives them in sys.argv: undecodable ones as surrogate escapes
            result = runner.invoke(MAINS[program], [os.fsdecode(a) for a in args], input=stdin)
        finally:
            logging.getLogger().removeHandler(logged)
            os.dup2(saved, 2)
            os.close(saved)
        native.seek(0)
        err = "".join(logged.lines) + native.read().decode(errors="replace") + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        err += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(*result.exc_info))
    return result.exit_code, result.stdout, err


def cli(program: str, *args: Union[str, bytes], stdin: bytes = b"", prefix: Sequence[str] = (),
        timeout: float = 120) -> Tuple[int, str, str]:
    """Run ``mlmd-cache`` or ``mlmd-lineage`` as a subprocess (serve; a command under ``prefix``)."""
    module = "mlmd_cache.cli" if program == "mlmd-cache" else "lineage.cli"
    command = [*prefix, sys.executable, "-c", f"from {module} import main; main()", *args]
    environment = {k: v for k, v in os.environ.items() if k != "MLMD_DB"}
    environment.update(PYTHONPATH=str(REPO))
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout, env=environment)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def assert_one_line_error(result: Tuple[int, str, str]) -> None:
    code, out, err = result
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in err + out, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("Error"), err


def sqlite_state(path: Path) -> Optional[bytes]:
    return path.read_bytes() if path.is_file() else None


@contextlib.contextmanager
def unchanged(url: str) -> Iterator[None]:
    """Assert that the store of ``url`` is the same after the block: bytes, or row counts."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        before, existed = sqlite_state(path), path.exists()
        yield
        assert path.exists() == existed and sqlite_state(path) == before, f"{path} changed"
    else:
        before = row_counts(url)
        yield
        assert row_counts(url) == before


@pytest.fixture(scope="module", params=DIRECT)
def direct_url(request: pytest.FixtureRequest, backends: Backends,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store on each backend opened directly by the client (not over gRPC), shared by the tests
    of this module: each test uses names of its own."""
    with backends.fresh_store(request.param, tmp_path_factory.mktemp(request.param)) as url:
        yield url


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def key(label: str) -> CacheKey:
    return CacheKey.build(image="python:3.11", command=["echo", label], output_parameters={})


@dsl.pipeline(name="hostile")
def one_task(x: str = "hi"):
    echo_value(x=x)


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(compile_to(tmp_path_factory.mktemp("ir") / "one.yaml", one_task))


def edited(pipeline_file: Path, directory: Path, edit: Callable[[dict], None], name: str = "edited.yaml") -> Path:
    """The one-task pipeline's IR as ``edit`` changes it in place (as a hand-edited IR would be)."""
    documents = list(yaml.safe_load_all(pipeline_file.read_text()))
    edit(documents[0])
    path = directory / name
    path.write_text(yaml.safe_dump_all(documents, allow_unicode=True))
    return path


def renamed(pipeline_file: Path, directory: Path, task: str = "echo-value", pipeline: str = "hostile") -> Path:
    """The one-task pipeline with its task and pipeline renamed."""
    def edit(spec: dict) -> None:
        tasks = spec["root"]["dag"]["tasks"]
        body = tasks.pop("echo-value")
        body["taskInfo"]["name"] = task
        tasks[task] = body
        spec["pipelineInfo"]["name"] = pipeline
    return edited(pipeline_file, directory, edit, unique("renamed") + ".yaml")


# -- filters: one shared escaping, exact results on the real MLMD core ---------------------------------

def test_filter_string_escapes_what_zetasql_needs():
    assert records.filter_string("a'b\"c\\d\ne\rf\tg\x01\x7f\u2028") == "'a\\'b\\\"c\\\\d\\ne\\rf\\tg\\x01\\x7f\\u2028'"
    assert records.filter_string("\U0001F600 100%") == "'\U0001F600 100%'"
    with pytest.raises(TypeError):
        records.filter_string(3)


def test_filter_string_round_trips_text(direct_url):
    """An ``=`` filter made with filter_string finds exactly the record holding non-ASCII text,
    emoji, % and _, on every backend. (Quotes and backslashes are not exact in an ``=`` filter on
    MLMD 1.17.1: see records.filter_matching, tested through load_task_history below.)"""
    if not mlmd_compat.has_filter_query():
        pytest.skip("MLMD 1.21 has no filter_query: mlmd-cache compares such values in Python there")
    store = connect(direct_url)
    type_name = unique("T")
    type_id = store.put_execution_type(mlmd.ExecutionType(name=type_name))
    for value in ["\u00e9t\u00e9", "\u65e5\u672c\u8a9e", "\U0001F600", "100%", "a_b", "plain"]:
        ids = {}
        for text in (value, "other", value + "x"):
            execution = mlmd.Execution(type_id=type_id)
            execution.custom_properties["task_name"].string_value = text
            [ids[text]] = store.put_executions([execution])
        found = store.get_executions(list_options=metadata_store.ListOptions(
            filter_query=f"type = {records.filter_string(type_name)} AND "
                         f"custom_properties.task_name.string_value = {records.filter_string(value)}"))
        assert [e.id for e in found] == [ids[value]], value


def test_task_history_finds_exactly_its_own_executions(direct_url):
    """``mlmd-lineage explain``'s query (load_task_history) for a task with a hostile name finds
    that task's earlier executions, and no other task's, among look-alike names (``\\' OR true --``
    among them). On PostgreSQL a name with a backslash is refused before anything is written."""
    cache = ExecutionCache(connect(direct_url))
    run_ = cache.pipeline_run(unique("pipe"), unique("run"))
    postgresql = direct_url.startswith("postgresql")
    names = [n for n in HOSTILE_NAMES.values() if not (postgresql and "\\" in n)]
    if postgresql:
        for name in set(HOSTILE_NAMES.values()) - set(names):
            with unchanged(direct_url), pytest.raises(InvalidArgumentError, match="backslash"):
                cache.execute(run_, Task(name, key(name), enable_cache=False), lambda started: Outputs())
    ids: Dict[str, List[int]] = {}
    for _ in range(2):
        for name in names:
            done = cache.execute(run_, Task(name, key(name), enable_cache=False), lambda started: Outputs())
            ids.setdefault(name, []).append(done.id)
    for name in names:
        graph = load_task_history(cache.store, ids[name][-1])
        assert sorted(int(node[2:]) for node in graph if node.startswith("e:")) == ids[name], name


def test_explain_and_show_on_hostile_task_names(pipeline_file, tmp_path):
    """The CLI end to end: a task named with quotes, a backslash, % and an emoji runs, and
    ``mlmd-lineage explain`` / ``show`` read it back."""
    name = "it's a \\ task \U0001F600 100% \\' OR true --"
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    path = renamed(pipeline_file, tmp_path, task=name)
    for run_name in ("r1", "r2"):
        code, out, err = run("mlmd-cache", "run-pipeline", str(path), "--db", db, "--run-name", run_name,
                             "--pipeline-root", str(tmp_path / "root"), "--json")
        assert code == 0, err
    execution_id = json.loads(out)["tasks"][name]["execution_id"]
    code, out, err = run("mlmd-lineage", "explain", str(execution_id), "--db", db, "--json")
    assert code == 0, err
    assert json.loads(out)["execution"]["task"] == name
    code, out, err = run("mlmd-lineage", "show", "execution", str(execution_id), "--db", db, "--json")
    assert code == 0, err


# -- names: checked before the first write, one limit everywhere ---------------------------------------

TOO_LONG = {
    "256-ascii": ("a" * 256, "256 characters"),
    "64-emoji": ("\U0001F600" * 64, "256 bytes"),
    "70-emoji": ("\U0001F600" * 70, "280 bytes"),
    "128-accents": ("\u00e9" * 128, "256 bytes"),
    "10000": ("x" * 10_000, "10000 characters"),
}
UNSTORABLE = {"nul": ("a\x00b", "NUL"), "lone-surrogate": ("a\ud800b", "surrogate")}


def test_names_mlmd_cannot_store_are_refused_before_writing(direct_url):
    cache = ExecutionCache(connect(direct_url))
    for which in ("pipeline", "run"):
        for label, (name, message) in {**TOO_LONG, **UNSTORABLE}.items():
            args = (name, unique("run")) if which == "pipeline" else (unique("pipe"), name)
            with unchanged(direct_url), pytest.raises(InvalidArgumentError, match=message) as raised:
                cache.pipeline_run(*args)
            assert f"{which} name" in str(raised.value), label
            if label in TOO_LONG:
                assert str(MAX_NAME_BYTES) in str(raised.value)


def test_names_at_the_limit_are_stored_exactly(direct_url):
    cache = ExecutionCache(connect(direct_url))
    for name in ["b" * 255, "\U0001F600" * 63, "\u00e9" * 127, "it's \"q\" \U0001F600 100%", "a\nb\x1b[0m"]:
        run_ = cache.pipeline_run(name, name)
        found = cache.store.get_context_by_type_and_name(records.RUN_CONTEXT_TYPE, name)
        assert found.id == run_.run_context.id and found.name == name
        assert [c.name for c in cache.store.get_parent_contexts_by_context(found.id)] == [name]


def test_postgresql_refuses_backslashes_before_mlmd_runs_them_as_sql(direct_url):
    """MLMD 1.17.1 quotes a PostgreSQL string holding a backslash as ``'E'...''``: a name
    ``, NULL, 0, 0); CREATE TABLE ... -- \\`` would run its SQL. Refused, nothing written."""
    if not direct_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    cache = ExecutionCache(connect(direct_url))
    for name in (", NULL, 0, 0); CREATE TABLE pwned (x int); -- \\", "a\\b"):
        with unchanged(direct_url), pytest.raises(InvalidArgumentError, match="backslash"):
            cache.pipeline_run("pipe", name)
    assert "pwned" not in row_counts(direct_url)


def test_run_pipeline_checks_names_before_writing(direct_url, pipeline_file, tmp_path):
    """The runner checks the IR's names (pipeline, tasks, artifact types) and the run name before
    its first write: a name over the limit leaves no Pipeline context (no row) behind."""
    cache = ExecutionCache(connect(direct_url))
    cases = [
        (renamed(pipeline_file, tmp_path, pipeline="p" * 300), "r", "pipeline name is 300 characters"),
        (pipeline_file, "\U0001F600" * 70, "run name is 70 characters (280 bytes in UTF-8)"),
        (pipeline_file, "r" * 300, "run name is 300 characters"),
    ]
    if direct_url.startswith("postgresql"):
        cases.append((renamed(pipeline_file, tmp_path, task="a\\b"), "r", "task name 'a\\\\b' holds a backslash"))
    for path, run_name, message in cases:
        with unchanged(direct_url), pytest.raises(InvalidArgumentError, match=re.escape(message)):
            run_pipeline(cache, load_pipeline(str(path)), {}, run_name=run_name, pipeline_root=tmp_path / "root")


def test_unstorable_lookups_find_nothing_without_asking_mlmd(direct_url, tmp_path):
    """``show run``, ``export --run`` and ``index --pipeline`` with a name no store can hold: not
    found (exit 2), and on PostgreSQL the name never reaches MLMD's SQL."""
    for name in ["x'); CREATE TABLE pwned (x int); -- \\", "a\x00b"]:
        for program, args in [("mlmd-lineage", ["show", "run", name]),
                              ("mlmd-lineage", ["export", "--run", name, "-o", str(tmp_path / "o.json")]),
                              ("mlmd-cache", ["index", "--pipeline", name])]:
            with unchanged(direct_url):
                result = run(program, *args, "--db", direct_url)
            assert_one_line_error(result)
            assert result[0] == 2
    if not direct_url.startswith("sqlite"):
        assert "pwned" not in row_counts(direct_url)


# -- every command, hostile input ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def store_template(pipeline_file, tmp_path_factory) -> Path:
    """A SQLite store holding one run (``r1``) of the one-task pipeline, made once."""
    directory = tmp_path_factory.mktemp("template")
    path = directory / "m.sqlite"
    code, _, err = run("mlmd-cache", "run-pipeline", str(pipeline_file), "--db", f"sqlite:///{path}",
                       "--run-name", "r1", "--pipeline-root", str(directory / "root"))
    assert code == 0, err
    return path


@pytest.fixture
def store(store_template, tmp_path) -> Tuple[str, Path]:
    """A copy of the template store for one test: (URL, file)."""
    path = tmp_path / "store" / "m.sqlite"
    path.parent.mkdir()
    shutil.copy(store_template, path)
    return f"sqlite:///{path}", path


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "invalid-utf8": b'{"containerSpec": {"image": "\xff\xfe"}}',
        "binary": bytes(range(256)) * 4,
        "yaml-list": b"- 1\n- 2\n",
        "yaml-number": b"42\n",
        "empty": b"",
        "json-string": b'"text"',
    }
    made = {}
    for name, content in files.items():
        made[name] = tmp_path / f"{name}.in"
        made[name].write_bytes(content)
    return made


BAD_FILES = ["invalid-utf8", "binary", "yaml-list", "yaml-number", "empty", "json-string"]


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", ["fingerprint", "lookup", "run-pipeline"])
def test_bad_files_are_one_line_errors(store, tmp_path, command, kind):
    db, path = store
    file = _files(tmp_path)[kind]
    args = {"fingerprint": ["fingerprint", str(file)],
            "lookup": ["lookup", str(file), "--pipeline", "hostile", "--db", db],
            "run-pipeline": ["run-pipeline", str(file), "--db", db, "--pipeline-root", str(tmp_path / "root")]}[command]
    with unchanged(db):
        assert_one_line_error(run("mlmd-cache", *args))


@pytest.mark.parametrize("what", ["directory", "missing"])
@pytest.mark.parametrize("command", ["fingerprint", "lookup", "run-pipeline"])
def test_input_file_that_is_a_directory_or_missing(store, tmp_path, command, what):
    db, _ = store
    file = str(tmp_path if what == "directory" else tmp_path / "missing.json")
    args = {"fingerprint": ["fingerprint", file], "lookup": ["lookup", file, "--pipeline", "p", "--db", db],
            "run-pipeline": ["run-pipeline", file, "--db", db]}[command]
    with unchanged(db):
        assert_one_line_error(run("mlmd-cache", *args))


def _task(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]["echo-value"]


def _two_cycle(spec: dict) -> None:
    tasks = spec["root"]["dag"]["tasks"]
    tasks["second"] = json.loads(json.dumps(tasks["echo-value"]))
    tasks["second"]["taskInfo"]["name"] = "second"
    tasks["second"]["dependentTasks"] = ["echo-value"]
    tasks["echo-value"]["dependentTasks"] = ["second"]


def _image(value: object) -> Callable[[dict], None]:
    def edit(spec: dict) -> None:
        for executor in spec["deploymentSpec"]["executors"].values():
            executor["container"]["image"] = value
    return edit


# Hand-edited IR the compiler never writes: refused at load, before the store is touched.
BAD_IR: Dict[str, Tuple[Callable[[dict], None], str]] = {
    "self-cycle": (lambda spec: _task(spec).update(dependentTasks=["echo-value"]), "cycle"),
    "two-cycle": (_two_cycle, "cycle"),
    "dependent-on-no-task": (lambda spec: _task(spec).update(dependentTasks=["ghost"]), "ghost"),
    "unknown-producer": (lambda spec: _task(spec)["inputs"]["parameters"].update(
        x={"taskOutputParameter": {"producerTask": "ghost", "outputParameterKey": "Output"}}), "ghost"),
    "image-number": (_image(42), "image"),
    "image-list": (_image(["a"]), "image"),
    "unknown-component": (lambda spec: _task(spec)["componentRef"].update(name="comp-ghost"), "comp-ghost"),
    "tasks-a-list": (lambda spec: spec["root"]["dag"].update(tasks=[1, 2]), ""),
    "deep-nesting": (lambda spec: spec["pipelineInfo"].update(name=json.loads("[" * 200 + "]" * 200)), ""),
}


@pytest.mark.parametrize("label", list(BAD_IR))
def test_bad_ir_is_refused_before_writing(store, pipeline_file, tmp_path, label):
    db, _ = store
    edit, message = BAD_IR[label]
    path = edited(pipeline_file, tmp_path, edit)
    with unchanged(db):
        result = run("mlmd-cache", "run-pipeline", str(path), "--db", db, "--pipeline-root", str(tmp_path / "root"))
    assert_one_line_error(result)
    assert result[0] == 2 and message in result[2]


NUMBER_KEYS = {
    "nan": '{"containerSpec": {"image": "i"}, "inputParameterValues": {"p": NaN}}',
    "infinity": '{"containerSpec": {"image": "i"}, "inputParameterValues": {"p": Infinity}}',
    "1e400": '{"containerSpec": {"image": "i"}, "inputParameterValues": {"p": 1e400}}',
    "10^400": '{"containerSpec": {"image": "i"}, "inputParameterValues": {"p": 1' + "0" * 400 + '}}',
    "deep": '{"containerSpec": {"image": "i"}, "inputParameterValues": {"p": ' + "[" * 300 + "]" * 300 + "}}",
}


@pytest.mark.parametrize("label", list(NUMBER_KEYS))
@pytest.mark.parametrize("command", ["fingerprint", "lookup"])
def test_keys_with_numbers_json_cannot_hold(store, command, label):
    db, _ = store
    args = ["fingerprint", "-"] if command == "fingerprint" else ["lookup", "-", "--pipeline", "p", "--db", db]
    with unchanged(db):
        assert_one_line_error(run("mlmd-cache", *args, stdin=NUMBER_KEYS[label].encode()))


@pytest.mark.parametrize("value", ["[NaN]", "[1e400]", "[" + "1" * 400 + "]", "[" * 300 + "]" * 300],
                         ids=["nan", "1e400", "400-digits", "deep"])
def test_run_pipeline_parameters_json_cannot_hold(tmp_path, value):
    @dsl.component(base_image="python:3.11")
    def takes_list(xs: list) -> str:
        return str(xs)

    @dsl.pipeline(name="lists")
    def lists(xs: list = [1]):
        takes_list(xs=xs)

    path = compile_to(tmp_path / "lists.yaml", lists)
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    with unchanged(db):
        assert_one_line_error(run("mlmd-cache", "run-pipeline", path, "--db", db, "--param", f"xs={value}",
                                  "--pipeline-root", str(tmp_path / "root")))


# run names: too long or not text is refused (exit 2, nothing written); legal hostile ones work.
BAD_RUN_NAMES = {
    "300-chars": ("r" * 300, "run name is 300 characters; MLMD stores names of at most 255"),
    "70-emoji": ("\U0001F600" * 70, "280 bytes in UTF-8"),
    "10000": ("r" * 10_000, "10000 characters"),
    "invalid-utf8": (b"run-\xff", "not Unicode text"),
}


@pytest.mark.parametrize("label", list(BAD_RUN_NAMES))
def test_run_pipeline_refuses_run_names_mlmd_cannot_store(store, pipeline_file, tmp_path, label):
    db, _ = store
    name, message = BAD_RUN_NAMES[label]
    with unchanged(db):
        result = run("mlmd-cache", "run-pipeline", str(pipeline_file), "--db", db, "--run-name", name,
                     "--pipeline-root", str(tmp_path / "root"))
    assert_one_line_error(result)
    assert result[0] == 2 and message in result[2]


def test_legal_hostile_run_names_round_trip_through_lineage(store, pipeline_file, tmp_path):
    db, _ = store
    for label in ["quote-or-true", "quote", "both-quotes", "percent", "emoji", "accent", "trailing-space",
                  "backslash", "ansi", "newline"]:
        name = HOSTILE_NAMES[label]
        code, out, err = run("mlmd-cache", "run-pipeline", str(pipeline_file), "--db", db, "--run-name", name,
                             "--pipeline-root", str(tmp_path / "root"), "--json")
        assert code == 0, (label, err)
        assert json.loads(out)["run"] == name
        code, out, err = run("mlmd-lineage", "runs", "--db", db, "--json")
        assert code == 0 and name in [r["run"] for r in json.loads(out)["runs"]], label
        code, out, err = run("mlmd-lineage", "show", "run", name, "--db", db, "--json")
        assert code == 0, (label, err)
        code, _, err = run("mlmd-lineage", "export", "--run", name, "-o", str(tmp_path / "run.json"), "--db", db)
        assert code == 0, (label, err)
        assert json.loads((tmp_path / "run.json").read_text())


@pytest.mark.parametrize("name", ["../../x", "/tmp/absolute-run", "a\nb", "x" * 250],
                         ids=["dotdot", "absolute", "newline", "long-path-part"])
def test_run_names_stay_under_the_pipeline_root(store, pipeline_file, tmp_path, name):
    db, _ = store
    root = tmp_path / "a" / "b" / "root"
    shutil.rmtree("/tmp/absolute-run", ignore_errors=True)
    try:
        code, out, err = run("mlmd-cache", "run-pipeline", str(pipeline_file), "--db", db, "--run-name", name,
                             "--pipeline-root", str(root), "--json", "--disable-cache")
        assert code == 0, err
        assert not os.path.exists("/tmp/absolute-run")
    finally:
        shutil.rmtree("/tmp/absolute-run", ignore_errors=True)
    logs = [p for p in (tmp_path / "a").rglob("stdout.log")]
    assert logs and all(root in p.parents for p in logs)


@pytest.mark.parametrize("task", ["../../../../evil-task", "x" * 10_000], ids=["dotdot", "10000"])
def test_task_names_stay_under_the_pipeline_root(pipeline_file, tmp_path, task):
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    root = tmp_path / "a" / "b" / "c" / "d" / "root"
    code, out, err = run("mlmd-cache", "run-pipeline", str(renamed(pipeline_file, tmp_path, task=task)), "--db", db,
                         "--pipeline-root", str(root), "--json")
    assert code == 0, err
    assert json.loads(out)["tasks"][task]["state"] == "COMPLETE"
    logs = [p for p in tmp_path.rglob("stdout.log")]
    assert logs and all(root in p.parents for p in logs)


# Commands that take a name or an ID, with hostile values: not found or not valid, exit 2.
LOOKUPS = {
    "show-run": ["mlmd-lineage", "show", "run", "{name}"],
    "export-run": ["mlmd-lineage", "export", "--run", "{name}", "-o", "{tmp}/out.json"],
    "index-pipeline": ["mlmd-cache", "index", "--pipeline", "{name}"],
    "show-execution": ["mlmd-lineage", "show", "execution", "{name}"],
    "show-artifact": ["mlmd-lineage", "show", "artifact", "{name}"],
    "explain": ["mlmd-lineage", "explain", "{name}"],
    "upstream": ["mlmd-lineage", "upstream", "{name}"],
    "downstream": ["mlmd-lineage", "downstream", "{name}"],
    "export-artifact": ["mlmd-lineage", "export", "--artifact", "{name}", "-o", "{tmp}/out.json"],
}


@pytest.mark.parametrize("label", ["quote-or-true", "both-quotes", "backslash", "newline", "ansi", "emoji", "long"])
@pytest.mark.parametrize("command", list(LOOKUPS))
def test_hostile_names_and_ids_are_not_found(store, tmp_path, command, label):
    db, _ = store
    name = HOSTILE_NAMES[label]
    args = [a.replace("{name}", name).replace("{tmp}", str(tmp_path)) for a in LOOKUPS[command]]
    with unchanged(db):
        result = run(args[0], *args[1:], "--db", db)
    assert_one_line_error(result)
    assert result[0] == 2
    assert "\x1b" not in result[2]  # a terminal escape is shown escaped, never sent to the terminal


@pytest.mark.parametrize("ident", ["-1", "0", "9" * 30, "1.5", "x:1", "e:", "#"])  # e:1, a:1, #1 are IDs (tests/test_ids.py)
@pytest.mark.parametrize("command", ["show-execution", "explain", "upstream", "downstream"])
def test_odd_ids(store, tmp_path, command, ident):
    db, _ = store
    args = [a.replace("{name}", ident) for a in LOOKUPS[command]]
    with unchanged(db):
        assert_one_line_error(run(args[0], *args[1:], "--db", db))


ODD_OPTIONS = {
    "runs-limit-0": ["mlmd-lineage", "runs", "-n", "0"],
    "runs-limit-text": ["mlmd-lineage", "runs", "-n", "x'"],
    "upstream-depth-101": ["mlmd-lineage", "upstream", "1", "--depth", "101"],
    "export-to-missing-dir": ["mlmd-lineage", "export", "-o", "{tmp}/no-such-dir/x.json"],
    "export-to-a-directory": ["mlmd-lineage", "export", "-o", "{tmp}"],
    "show-unknown-kind": ["mlmd-lineage", "show", "context", "1"],
    "index-ansi-pipeline": ["mlmd-cache", "index", "--pipeline", "\x1b[2J"],
    "lookup-no-pipeline": ["mlmd-cache", "lookup", "-"],
}


@pytest.mark.parametrize("label", list(ODD_OPTIONS))
def test_odd_option_values(store, tmp_path, label):
    db, _ = store
    args = [a.replace("{tmp}", str(tmp_path)) for a in ODD_OPTIONS[label]]
    with unchanged(db):
        result = run(args[0], *args[1:], "--db", db, stdin=KEY)
    assert_one_line_error(result)
    assert "\x1b" not in result[2]


def test_lookup_and_runs_with_hostile_pipeline_names_succeed(store):
    db, _ = store
    for name in HOSTILE_NAMES.values():
        code, out, err = run("mlmd-cache", "lookup", "-", "--pipeline", name, "--db", db, "--json",
                             stdin=b'{"containerSpec": {"image": "i"}}')
        assert code == 0, err
        assert json.loads(out)["hit"] is False


# -- stores that are not usable MLMD stores ---------------------------------------------------------------

READ_ONLY_COMMANDS = {
    "lookup": ["mlmd-cache", "lookup", "-", "--pipeline", "p"],
    "runs": ["mlmd-lineage", "runs"],
    "show": ["mlmd-lineage", "show", "run", "r1"],
    "explain": ["mlmd-lineage", "explain", "1"],
    "upstream": ["mlmd-lineage", "upstream", "1"],
    "downstream": ["mlmd-lineage", "downstream", "1"],
    "export": ["mlmd-lineage", "export", "-o", "{tmp}/out.json"],
    "index-dry-run": ["mlmd-cache", "index", "--dry-run"],
    "plan": ["mlmd-cache", "plan", "{pipeline}"],
    "stats": ["mlmd-cache", "stats"],
}
WRITING_COMMANDS = {
    "run-pipeline": ["mlmd-cache", "run-pipeline", "{pipeline}", "--pipeline-root", "{tmp}/root"],
    "index": ["mlmd-cache", "index"],
    "serve": ["mlmd-cache", "serve", "--port", "0"],
}
KEY = b'{"containerSpec": {"image": "i"}}'


def _store_case(case: str, tmp_path: Path) -> tuple[str, Path]:
    if case == "missing-directory":
        path = tmp_path / "no-such-dir" / "m.sqlite"
    elif case == "directory":
        path = tmp_path / "a-dir"
        path.mkdir()
    elif case == "missing-file":
        path = tmp_path / "m.sqlite"
    else:  # a SQLite file of another program
        path = tmp_path / "app.db"
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute("INSERT INTO users (name) VALUES ('alice')")
    return f"sqlite:///{path}", path


def _command(template: list[str], tmp_path: Path, pipeline_file: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp_path)).replace("{pipeline}", str(pipeline_file)) for a in template]


@pytest.mark.parametrize("case", ["missing-directory", "missing-file", "directory", "not-mlmd"])
@pytest.mark.parametrize("command", list(READ_ONLY_COMMANDS))
def test_read_only_commands_never_create_or_migrate(tmp_path, pipeline_file, command, case):
    db, path = _store_case(case, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with unchanged(db):
        args = _command(READ_ONLY_COMMANDS[command], tmp_path, pipeline_file)
        result = run(args[0], *args[1:], "--db", db, stdin=KEY)
    assert_one_line_error(result)
    assert str(path) in result[2]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case", ["not-mlmd", "directory"])
@pytest.mark.parametrize("command", list(WRITING_COMMANDS))
def test_writing_commands_refuse_what_is_not_an_mlmd_store(tmp_path, pipeline_file, command, case):
    db, path = _store_case(case, tmp_path)
    args = _command(WRITING_COMMANDS[command], tmp_path, pipeline_file)
    with unchanged(db):
        try:
            result = (cli if command == "serve" else run)(args[0], *args[1:], "--db", db, **(
                {"timeout": 60} if command == "serve" else {}))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} started on {case} instead of refusing it")
    assert_one_line_error(result)


def _read_only(how: str, directory: Path, file: Path) -> Tuple[List[str], Callable[[], None]]:
    """A command prefix and an undo that make ``file`` (in ``directory``) read-only to the command,
    even for root (the tests run as root in CI): an immutable file (``chattr +i``: writes fail with
    EPERM), or the directory read-only in a mount namespace of the command's own (EROFS)."""
    if how == "immutable":
        if subprocess.run(["chattr", "+i", str(file)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported here")
        return [], lambda: subprocess.run(["chattr", "-i", str(file)], check=True)
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{directory}' '{directory}'"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount in a mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(directory)], lambda: None


@pytest.mark.parametrize("how", ["immutable", "read-only-mount"])
@pytest.mark.parametrize("command", ["run-pipeline", "index"])
def test_read_only_store_is_a_one_line_error(store, pipeline_file, tmp_path, command, how):
    db, path = store
    prefix, undo = _read_only(how, path.parent, path)
    try:
        args = _command(WRITING_COMMANDS[command], tmp_path, pipeline_file)
        with unchanged(db):
            result = cli(args[0], *args[1:], "--db", db, "--run-name", "r2", prefix=prefix) if command == "run-pipeline" \
                else cli(args[0], *args[1:], "--db", db, prefix=prefix)
    finally:
        undo()
    if command == "index" and result[0] == 0:
        return  # the runner indexed as it ran: nothing to write, and nothing was written
    assert_one_line_error(result)


# -- serve: start-up arguments --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--port", "-1"], ["--port", "x"], ["--workers", "0"], ["--grpc_channel_arguments", "no-equals-sign"],
    ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
    ["--host", "'; rm -rf / #"],
    ["--mysql_config_host", "h"], ["--db", "mysql://u:p@127.0.0.1:1/db'x"], ["--db", "ftp://x"],
], ids=["port-negative", "port-text", "workers-0", "channel-args", "tls-missing", "host-shell", "mysql-half",
        "db-quote", "db-scheme"])
def test_serve_refuses_bad_start_up_arguments(tmp_path, args):
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    full = args if "--db" in args or "--mysql_config_host" in args else ["--db", db, *args]
    with unchanged(db):
        try:
            result = cli("mlmd-cache", "serve", *full, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve started with {args}")
    assert_one_line_error(result)
    assert "\x1b" not in result[2]


def test_postgresql_importer_uri_with_a_backslash_never_reaches_mlmd(direct_url, tmp_path):
    """An importer's URI from a parameter is known only when the task runs: on PostgreSQL a
    backslash in it is a one-line error there (the run fails), not SQL that MLMD runs."""
    if not direct_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")

    @dsl.pipeline(name="imports")
    def imports(uri: str = "/data/x"):
        dsl.importer(artifact_uri=uri, artifact_class=dsl.Dataset)

    path = compile_to(tmp_path / "imports.yaml", imports)
    db = direct_url
    result = run("mlmd-cache", "run-pipeline", path, "--db", db, "--param", "uri=/x'); DROP TABLE x; -- \\",
                 "--pipeline-root", str(tmp_path / "root"))
    assert result[0] in (1, 2) and "Traceback" not in result[2], result
    assert "backslash" in result[1] + result[2]
